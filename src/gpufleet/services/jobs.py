"""Jobs: work that can take longer than a request (a large plan, a verify, a report, a simulation).

A job is a row of the ``jobs`` table before it is anything else, so it outlives the process that
runs it: ``queued`` -> ``running`` -> ``succeeded`` | ``failed``; a job that a restart cut short reads
``interrupted`` (:meth:`JobStore.recover`), never ``running`` forever. Jobs run in a process pool
owned by the server process (``spawn``: a clean interpreter, no inherited connections), so a CPU-bound
solve or hash does not hold the server's event loop or its GIL; each job opens its own engine and
writes its progress (a fraction 0..1 and a message) to its row, which any server process can read.
A pool process that dies (killed, out of memory) fails its jobs with a message, and the next job
gets a fresh pool.

Kinds are registered with :func:`kind` by the layer that may import what they need: ``verify``,
``plan``, ``sweep`` and ``simulate`` here; the board report in :mod:`gpufleet.reports.board_job`, since
``reports`` sits above ``services`` (the API imports it to offer the kind). A pool process is handed
the kind's function itself, pickled by module and name, so it imports that module, wherever it is.
"""

from __future__ import annotations

import json
import multiprocessing
import secrets
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update

from gpufleet.domain import access
from gpufleet.domain.access import Forbidden
from gpufleet.domain.chain import format_instant
from gpufleet.domain.state import FleetState
from gpufleet.errors import GpufleetError, InputError, NotInitialized
from gpufleet.ledger import db
from gpufleet.ledger.schema import jobs
from gpufleet.ledger.store import Ledger
from gpufleet.services.fleet import FleetService

STATES = ("queued", "running", "succeeded", "failed", "interrupted")
FINAL = ("succeeded", "failed", "interrupted")
JSON = "application/json"
Progress = Callable[[float, str], None]
MAX_MESSAGE = 500  # characters of a job's message


@dataclass(frozen=True)
class Settings:
    """What a job may need of the server's settings (picklable: it travels to the pool)."""

    traces_dir: Path | None = None  # the folder simulations read traces, node lists and quotas from, by name
    policy: Path | None = None  # the governance policy file; None: the built-in policy


@dataclass(frozen=True)
class JobContext:
    """What a kind's function gets besides its parameters."""

    service: FleetService
    principal: str  # who submitted the job: its result holds only what this principal may read
    progress: Progress
    settings: Settings


@dataclass(frozen=True)
class Kind:
    run: Callable[[JobContext, dict], Any]  # -> the result: JSON-able, or text of ``media_type``
    media_type: str = JSON


KINDS: dict[str, Kind] = {}


def kind(name: str, media_type: str = JSON):
    """Register a module-level function as the job kind ``name``."""
    def register(fn):
        KINDS[name] = Kind(fn, media_type)
        return fn

    return register


def media_type(job_kind: str) -> str:
    found = KINDS.get(job_kind)
    return found.media_type if found else JSON


def _now() -> str:
    return format_instant(datetime.now(UTC))


class JobStore:
    """The ``jobs`` table: every state change is one short transaction; a final state is never left."""

    def __init__(self, service: FleetService):
        self.service = service

    def create(self, job_kind: str, principal: str, params: dict) -> str:
        if job_kind not in KINDS:
            raise InputError(f"unknown job kind '{job_kind}' (known: {', '.join(sorted(KINDS))})", field="kind")
        job_id = secrets.token_hex(12)
        now = _now()
        with self.service.engine.begin() as conn:
            conn.execute(insert(jobs).values(job_id=job_id, kind=job_kind, principal=principal, state="queued",
                                             progress=0.0, message="queued", params=json.dumps(params),
                                             created_at=now, updated_at=now))
        return job_id

    def get(self, job_id: str) -> dict | None:
        """The job as the API shows it; a result that is not JSON (the report's HTML) is only at its URL."""
        with self.service.reader.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.job_id == job_id)).first()
        return None if row is None else _public(row)

    def result(self, job_id: str) -> tuple[dict, Any] | None:
        """(the job without its result, its result as stored: JSON-decoded), or None."""
        with self.service.reader.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.job_id == job_id)).first()
        if row is None:
            return None
        return _public(row, with_result=False), None if row.result is None else json.loads(row.result)

    def latest(self, job_kind: str, state: str = "succeeded") -> dict | None:
        """The newest job of ``job_kind`` in ``state`` (the last to change), any principal's, with its result."""
        query = select(jobs).where(jobs.c.kind == job_kind, jobs.c.state == state).order_by(
            jobs.c.updated_at.desc(), jobs.c.job_id).limit(1)
        with self.service.reader.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _public(row)

    def list(self, principal: str | None = None, limit: int = 100) -> list[dict]:
        query = select(jobs).order_by(jobs.c.created_at.desc()).limit(limit)
        if principal is not None:
            query = query.where(jobs.c.principal == principal)
        with self.service.reader.connect() as conn:
            return [_public(r, with_result=False) for r in conn.execute(query)]

    def update(self, job_id: str, **values) -> bool:
        """Change a job that is not final yet; whether it was."""
        with self.service.engine.begin() as conn:
            return conn.execute(update(jobs).where(jobs.c.job_id == job_id, jobs.c.state.not_in(FINAL))
                                .values(updated_at=_now(), **values)).rowcount > 0

    def fail(self, job_id: str, title: str, detail: str, field: str | None = None) -> bool:
        problem = {"title": title, "detail": detail} | ({"field": field} if field else {})
        return self.update(job_id, state="failed", message=detail[:MAX_MESSAGE], problem=json.dumps(problem))

    def recover(self) -> int:
        """Mark every job left queued or running by a stopped server ``interrupted``; how many."""
        with self.service.engine.begin() as conn:
            return conn.execute(update(jobs).where(jobs.c.state.in_(("queued", "running"))).values(
                state="interrupted", message="the server stopped before the job finished; submit it again",
                updated_at=_now())).rowcount


def _public(row, with_result: bool = True) -> dict:
    out = {"job_id": row.job_id, "kind": row.kind, "principal": row.principal, "state": row.state,
           "progress": row.progress, "message": row.message, "created_at": row.created_at,
           "updated_at": row.updated_at, "params": json.loads(row.params),
           "media_type": media_type(row.kind),
           "result_url": f"/v1/jobs/{row.job_id}/result" if row.state == "succeeded" else None}
    if with_result:
        inline = out["media_type"] == JSON and row.result is not None
        out["result"] = json.loads(row.result) if inline else None
        out["problem"] = None if row.problem is None else json.loads(row.problem)
    return out


class JobRunner:
    """Submits jobs to a process pool, created on first use, recreated after a worker died, and shut
    down with the server (its unfinished jobs then read ``interrupted``)."""

    def __init__(self, service: FleetService, workers: int, settings: Settings = Settings()):
        self.store = JobStore(service)
        self.url = service.engine.url.render_as_string(hide_password=False)
        self.workers, self.settings = workers, settings
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._active: set[str] = set()  # jobs submitted by this runner and not done
        self._closing = False

    def submit(self, job_kind: str, principal: str, params: dict) -> str:
        job_id = self.store.create(job_kind, principal, params)
        for attempt in range(2):
            with self._lock:
                if self._closing:
                    break
                if self._pool is None:
                    self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                     initializer=_leave_stopping_to_the_server)
                pool = self._pool
                try:
                    future = pool.submit(run_job, self.url, job_id, KINDS[job_kind].run, params, principal,
                                         self.settings)
                except BrokenProcessPool:  # a worker died since the last job: start a fresh pool
                    self._discard(pool)
                    continue
                except RuntimeError:  # the pool is shutting down
                    break
                self._active.add(job_id)
            future.add_done_callback(lambda done, job_id=job_id, pool=pool: self._finished(job_id, pool, done))
            return job_id
        self.store.update(job_id, state="interrupted", message="not started: the server is stopping")
        return job_id

    def _finished(self, job_id: str, pool: ProcessPoolExecutor, future: Future) -> None:
        """In the pool's thread: a job whose process died (or that never started) is final all the same."""
        with self._lock:
            self._active.discard(job_id)
            closing = self._closing
        if closing:
            return  # shutdown() has marked it
        if future.cancelled():
            self.store.update(job_id, state="interrupted", message="cancelled before it started")
            return
        error = future.exception()
        if error is None:
            return
        if isinstance(error, BrokenProcessPool):
            with self._lock:
                self._discard(pool)
            self.store.fail(job_id, "WorkerDied", "the process running the job stopped unexpectedly (killed, or "
                            "out of memory); submit it again")
        else:  # run_job catches everything: this is a failure to hand the job over (pickling)
            self.store.fail(job_id, "InternalError", f"the job could not be run: {type(error).__name__}: {error}")

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        """Forget a broken pool (the caller holds the lock); the next submit starts a new one."""
        if self._pool is pool:
            self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def recover(self) -> int:
        return self.store.recover()

    def shutdown(self) -> None:
        """Stop now: unfinished jobs of this runner read ``interrupted``; their processes are ended."""
        with self._lock:
            self._closing = True
            pool, self._pool = self._pool, None
            active = sorted(self._active)
        for job_id in active:
            self.store.update(job_id, state="interrupted", message="the server stopped before the job finished; "
                                                                   "submit it again")
        if pool is not None:
            processes = list((pool._processes or {}).values())  # no public way to stop running work before 3.14
            pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.kill()  # they ignore SIGTERM and SIGINT


def _leave_stopping_to_the_server() -> None:
    """In each pool process: ignore Ctrl-C and SIGTERM, which a terminal or systemd also sends to the
    server's children; the server, stopping, marks their jobs ``interrupted`` first, then kills them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def run_job(url: str, job_id: str, run: Callable[[JobContext, dict], Any], params: dict, principal: str,
            settings: Settings) -> None:
    """In a pool process: run one job, recording its progress, result or problem on its row."""
    service = FleetService(db.make_engine(url))
    store = JobStore(service)
    last = [0.0]

    def progress(fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5 or fraction >= 1.0:  # at most two writes a second
            last[0] = now
            store.update(job_id, progress=max(0.0, min(1.0, fraction)), message=message[:MAX_MESSAGE])

    try:
        if not store.update(job_id, state="running", message="running"):
            return  # interrupted before it started
        result = run(JobContext(service, principal, progress, settings), params)
        store.update(job_id, state="succeeded", progress=1.0, message="done", result=json.dumps(result, default=str))
    except GpufleetError as exc:
        store.fail(job_id, type(exc).__name__, str(exc), exc.field)
    except Exception as exc:  # a job never dies silently: its row says it failed
        store.fail(job_id, "InternalError", f"{type(exc).__name__}: {exc}")
    finally:
        service.engine.dispose()


# -- what a job may read -------------------------------------------------------------------------


class NotConfigured(NotInitialized):
    """The server lacks a setting that this request needs (say, ``traces_dir``)."""


class MissingFile(InputError):
    """A file named by a request is not in the folder the server reads such files from."""


def shared_file(folder: str | Path | None, name: str, field: str) -> Path:
    """The file ``name`` in the server's ``traces_dir``: a plain name, never a path out of it."""
    if folder is None:
        raise NotConfigured("this server reads no trace files: its traces_dir setting (GPUFLEET_TRACES_DIR) is "
                            "unset; ask its operator to set it", field=field)
    if not name or "/" in name or "\\" in name or name in (".", "..") or ".." in name or "\0" in name:
        raise InputError(f"'{name[:100]}' is not a file name: give the name of a file in the server's traces "
                         "folder, without a path", field=field)
    path = Path(folder) / name
    if not path.is_file():
        raise MissingFile(f"no file '{name}' in the server's traces folder", field=field)
    return path


def require_loans_readable(state: FleetState, principal: str) -> None:
    """The ledger's loans feed a simulation or export only for a principal who may read every party."""
    readable = access.readable_entities(state, principal)
    if readable is None:
        return
    hidden = sorted({e for loan in state.loans.values() for e in (loan.lender, loan.borrower)} - readable)
    if hidden:
        raise Forbidden(f"'{principal}' may not read the loans of {', '.join(hidden)}; run it without loans",
                        field="loans")


def visible_plan(plan: dict, readable: set[str] | None, site_owner: dict[str, str]) -> dict:
    """``plan`` with only what a principal reading the entities ``readable`` (None: all) may see: the
    loans and reclaims its entities are party to, the rows of entities it reads, and no fleet totals."""
    if readable is None:
        return plan

    def rows(items: list[dict], *keys: str) -> list[dict]:
        return [r for r in items if any(r.get(k) in readable for k in keys)]

    def mine(table: dict) -> dict:
        return {e: v for e, v in table.items() if e in readable}

    kpis = {name: mine(table) for name, table in plan["kpis"].items()}
    prices = plan["shadow_prices"]
    return plan | {
        "objective": None, "kpis": kpis,
        "loans": rows(plan["loans"], "lender", "borrower"), "reclaims": rows(plan["reclaims"], "lender", "borrower"),
        "installs": rows(plan["installs"], "owner"), "moves": rows(plan["moves"], "owner"),
        "supply": rows(plan["supply"], "owner"), "failures": rows(plan["failures"], "owner"),
        "shadow_prices": prices | {
            "site_slots": [r for r in prices["site_slots"] if site_owner.get(r["site"]) in readable],
            "owner_gpus": rows(prices["owner_gpus"], "owner")},
        "visible_entities": sorted(readable),
    }


# -- the kinds ----------------------------------------------------------------------------------


@kind("verify")
def _verify(ctx: JobContext, params: dict) -> dict:
    from gpufleet.services.fleet import parse_anchor

    anchors = [parse_anchor(text) for text in params.get("expect", [])]
    ctx.progress(0.0, "hashing the chain")

    share = 0.5 if params.get("replay") else 0.95  # of the progress bar: the replay takes the other half

    def walked(done: int, total: int) -> None:
        ctx.progress(share * done / max(total, 1), f"{done:,} of {total:,} events hashed")

    with ctx.service.reader.connect() as conn:
        report = asdict(Ledger(conn).verify(anchors, workers=1, progress=walked))
    if report["ok"] and params.get("replay"):
        ctx.progress(0.5, "replaying every event")
        replayed = ctx.service.replay()
        report |= {"ok": replayed.ok, "replay_problems": replayed.problems}
    return report


@kind("plan")
def _plan(ctx: JobContext, params: dict) -> dict | list:
    """The plan (or one per policy, ``compare``) with what the submitter may read of it."""
    from gpufleet.domain.governance import GovernancePolicy
    from gpufleet.planner.problem import PlanOptions
    from gpufleet.planner.solver import SolveOptions
    from gpufleet.services import planning
    from gpufleet.services.fleet import parse_date

    start = parse_date(params.get("as_of"), "as_of")
    ctx.progress(0.0, "reading the ledger")
    state = ctx.service.state(start)
    on = start or state.as_of or datetime.now(UTC).date()
    fee = params.get("fee_usd_per_gpu_hour")
    fee = GovernancePolicy().market_price(on).usd_per_gpu_hour if fee is None else fee
    options = PlanOptions(horizon_weeks=params.get("horizon_weeks", 52),
                          install_lead_weeks=params.get("lead_weeks", 2),
                          move_cost_usd=params.get("move_cost_usd", 2000.0),
                          reclaim_cost_usd=params.get("reclaim_cost_usd", 500.0), loan_fee_usd_per_gpu_hour=fee,
                          failure_rate_per_gpu_week=params.get("failure_rate_per_gpu_week", 0.0),
                          integral=params.get("integral", False))
    solver = SolveOptions(time_limit_s=params.get("time_limit_s", 600.0))
    ctx.progress(0.1, "solving")
    with ctx.service.reading_head() as fold:  # who may read what: as the ledger says now
        readable = access.readable_entities(fold.state, ctx.principal)
        owners = {name: site.owner for name, site in fold.state.sites.items()}
    if params.get("compare"):
        return [visible_plan(p, readable, owners) for p in planning.compare(state, start, options, solver)]
    return visible_plan(planning.plan(state, start, options, params.get("policy", "owner-first"), solver), readable,
                        owners)


@kind("sweep")
def _sweep(ctx: JobContext, params: dict) -> dict:
    """A supply sweep (``gpufleet sweep supply``) from the as-of date as known at ``known_at``, serially in the
    job's process, its progress per batch; the entities and claims the submitter may read of its summary."""
    from gpufleet.planner.problem import PlanOptions
    from gpufleet.services.fleet import parse_date
    from gpufleet.services.sweeps import runner, supply

    ctx.progress(0.0, "reading the ledger")
    day = parse_date(params.get("as_of"), "as_of")
    state = ctx.service.state(day, params.get("known_at"))
    start = day or state.as_of or datetime.now(UTC).date()
    ctx.progress(0.02, "building the plan's model")
    sweep = supply.supply_sweep(state, start, samples=params.get("samples", 200), seed=params.get("seed", 0),
                                policy=params.get("policy", "owner-first"),
                                options=PlanOptions(horizon_weeks=params.get("horizon_weeks", 52)))
    ran = runner.run(sweep, workers=1, progress=lambda done, total: ctx.progress(
        0.05 + 0.95 * done / total, f"{done:,} of {total:,} samples"))
    body = supply.summary(sweep.inputs, ran.rows)
    body |= {"known_at": params.get("known_at"), "seed": sweep.seed, "inputs_hash": sweep.inputs_hash,
             "wall_s": round(ran.wall_s, 3), "claims": supply.claim_views(state, start, body["claims"])}
    with ctx.service.reading_head() as fold:  # who may read what: as the ledger says now
        readable = access.readable_entities(fold.state, ctx.principal)
    return visible_sweep(body, readable)


def visible_sweep(body: dict, readable: set[str] | None) -> dict:
    """A sweep's summary with only the entities ``readable`` (None: all) and their claims."""
    if readable is None:
        return body
    return body | {"entities": [e for e in body["entities"] if e["entity"] in readable],
                   "claims": [c for c in body["claims"] if c.get("claimant") in readable],
                   "visible_entities": sorted(readable)}


@kind("simulate")
def _simulate(ctx: JobContext, params: dict) -> dict:
    """A trace of the server's traces folder replayed under one policy or all; progress by replay."""
    from gpufleet.scheduler import POLICIES, PolicyOptions
    from gpufleet.services import scheduling

    folder = ctx.settings.traces_dir
    ctx.progress(0.0, "reading the trace")
    workload = scheduling.read_workload(
        shared_file(folder, params["trace"], "trace"), params.get("trace_format", "philly"),
        skip_bad_rows=params.get("skip_bad_rows", False),
        checkpoint_s=params.get("checkpoint_s", scheduling.DEFAULT_CHECKPOINT_S) or None,
        restart_s=params.get("restart_s", scheduling.DEFAULT_RESTART_S))
    loans = None
    if params.get("loans"):
        loans = ctx.service.state()  # this job's own fold of the head: the replay keeps it
        require_loans_readable(loans, ctx.principal)
    setup = scheduling.prepare(workload, cluster_spec=cluster_spec(folder, params), loans=loans,
                               quotas=shared_file(folder, params["quotas"], "quotas") if params.get("quotas") else None,
                               skip_bad_rows=params.get("skip_bad_rows", False))
    names = list(POLICIES) if params.get("compare") else [params.get("policy", "borrow")]
    options = PolicyOptions(backfill=params.get("backfill", False), max_preemptions=params.get("max_preemptions"))
    results = scheduling.run(setup, names, options=options, reclaim_grace_s=params.get("reclaim_grace_s", 30.0),
                             progress=replay_progress(ctx.progress, len(setup.workload.jobs), 1 + len(names)))
    return scheduling.summary(setup, results)


def cluster_spec(folder: str | Path | None, params: dict) -> str | None:
    """The cluster as ``NODESxGPUS[:MODEL],...`` (``cluster``), or a node list of the traces folder
    (``cluster_file``); None: sized from the trace."""
    if params.get("cluster_file"):
        return str(shared_file(folder, params["cluster_file"], "cluster_file"))
    return params.get("cluster")


def replay_progress(progress: Progress, jobs: int, replays: int) -> Callable[[str], Callable[[int], None]]:
    """The simulation's per-replay step callbacks as one fraction: 5 % reading, then each replay an
    equal share, advanced by its steps (about two per job)."""
    begun = [-1]

    def replay(policy: str) -> Callable[[int], None]:
        begun[0] += 1
        index = begun[0]
        label = "each tenant alone on its quota" if policy == "alone" else f"policy {policy}"
        progress(0.05 + 0.95 * index / replays, f"replay {index + 1} of {replays}: {label}")

        def step(steps: int) -> None:
            done = index + min(1.0, steps / max(1, 2 * jobs))
            progress(0.05 + 0.95 * done / replays, f"replay {index + 1} of {replays}: {label}, {steps:,} events")

        return step

    return replay
