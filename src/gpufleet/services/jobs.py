"""Jobs: work that can take longer than a request (a large plan, a verify, a report, a simulation).

A job is a row of the ``jobs`` table before it is anything else, so it outlives the process that
runs it: ``queued`` -> ``running`` -> ``succeeded`` | ``failed``; a job that a restart cut short reads
``interrupted`` (:meth:`JobStore.recover`), never ``running`` forever. Jobs run in a process pool
owned by the server process (``spawn``: a clean interpreter, no inherited connections), so a CPU-bound
solve or hash does not hold the server's event loop or its GIL; each job opens its own engine and
writes its progress (a fraction and a message) to its row, which any server process can read.
"""

from __future__ import annotations

import json
import multiprocessing
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update

from gpufleet.domain.chain import format_instant
from gpufleet.errors import GpufleetError, InputError
from gpufleet.ledger import db
from gpufleet.ledger.schema import jobs
from gpufleet.services.fleet import FleetService

STATES = ("queued", "running", "succeeded", "failed", "interrupted")
FINAL = ("succeeded", "failed", "interrupted")
Progress = Callable[[float, str], None]
# kind -> function(service, params, progress) -> a JSON-able result
KINDS: dict[str, Callable[[FleetService, dict, Progress], Any]] = {}


def kind(name: str):
    def register(fn):
        KINDS[name] = fn
        return fn

    return register


def _now() -> str:
    return format_instant(datetime.now(UTC))


class JobStore:
    """The ``jobs`` table: every state change is one short transaction."""

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
        with self.service.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.job_id == job_id)).first()
        return None if row is None else _public(row)

    def list(self, principal: str | None = None, limit: int = 100) -> list[dict]:
        query = select(jobs).order_by(jobs.c.created_at.desc()).limit(limit)
        if principal is not None:
            query = query.where(jobs.c.principal == principal)
        with self.service.engine.connect() as conn:
            return [_public(r, with_result=False) for r in conn.execute(query)]

    def update(self, job_id: str, **values) -> None:
        with self.service.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.job_id == job_id, jobs.c.state.not_in(FINAL))
                         .values(updated_at=_now(), **values))

    def recover(self) -> int:
        """Mark every job left queued or running by a stopped server ``interrupted``; how many."""
        with self.service.engine.begin() as conn:
            return conn.execute(update(jobs).where(jobs.c.state.in_(("queued", "running"))).values(
                state="interrupted", message="the server stopped before the job finished; submit it again",
                updated_at=_now())).rowcount


def _public(row, with_result: bool = True) -> dict:
    out = {"job_id": row.job_id, "kind": row.kind, "principal": row.principal, "state": row.state,
           "progress": row.progress, "message": row.message, "created_at": row.created_at,
           "updated_at": row.updated_at, "params": json.loads(row.params)}
    if with_result:
        out["result"] = None if row.result is None else json.loads(row.result)
        out["problem"] = None if row.problem is None else json.loads(row.problem)
    return out


class JobRunner:
    """Submits jobs to a process pool; the pool is created on first use and shut down with the server."""

    def __init__(self, service: FleetService, workers: int):
        self.store = JobStore(service)
        self.url = service.engine.url.render_as_string(hide_password=False)
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def submit(self, job_kind: str, principal: str, params: dict) -> str:
        job_id = self.store.create(job_kind, principal, params)
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        try:
            self._pool.submit(run_job, self.url, job_id, job_kind, params)
        except RuntimeError as exc:  # the pool is shutting down or broken
            self.store.update(job_id, state="interrupted", message=f"not started: {exc}")
        return job_id

    def recover(self) -> int:
        return self.store.recover()

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def run_job(url: str, job_id: str, job_kind: str, params: dict) -> None:
    """In a pool process: run one job, recording its progress, result or problem on its row."""
    service = FleetService(db.make_engine(url))
    store = JobStore(service)
    last = [0.0]

    def progress(fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5 or fraction >= 1.0:  # at most two writes a second
            last[0] = now
            store.update(job_id, progress=max(0.0, min(1.0, fraction)), message=message[:500])

    try:
        store.update(job_id, state="running", message="running")
        result = KINDS[job_kind](service, params, progress)
        store.update(job_id, state="succeeded", progress=1.0, message="done", result=json.dumps(result, default=str))
    except GpufleetError as exc:
        problem = {"title": type(exc).__name__, "detail": str(exc), "field": exc.field}
        store.update(job_id, state="failed", message=str(exc)[:500], problem=json.dumps(problem))
    except Exception as exc:  # a job never dies silently: its row says it failed
        problem = {"title": "InternalError", "detail": f"{type(exc).__name__}: {exc}"}
        store.update(job_id, state="failed", message="internal error", problem=json.dumps(problem))
    finally:
        service.engine.dispose()


# -- the kinds ----------------------------------------------------------------------------------


@kind("verify")
def _verify(service: FleetService, params: dict, progress: Progress) -> dict:
    from gpufleet.services.fleet import parse_anchor

    anchors = [parse_anchor(text) for text in params.get("expect", [])]
    progress(0.0, "hashing the chain")
    report = asdict(service.verify(anchors, workers=1))
    if report["ok"] and params.get("replay"):
        progress(0.5, "replaying every event")
        replayed = service.replay()
        report |= {"ok": replayed.ok, "replay_problems": replayed.problems}
    return report


@kind("plan")
def _plan(service: FleetService, params: dict, progress: Progress) -> dict | list:
    from gpufleet.domain.governance import GovernancePolicy
    from gpufleet.planner.problem import PlanOptions
    from gpufleet.planner.solver import SolveOptions
    from gpufleet.services import planning
    from gpufleet.services.fleet import parse_date

    start = parse_date(params.get("as_of"), "as_of")
    progress(0.0, "reading the ledger")
    state = service.state(start)
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
    progress(0.1, "solving")
    if params.get("compare"):
        return planning.compare(state, start, options, solver)
    return planning.plan(state, start, options, params.get("policy", "owner-first"), solver)
