"""Ledger benchmark: append, verify and ``status --as-of`` on a large synthetic ledger.

Run from the repository root, in the project's virtual environment::

    python bench/ledger.py                  # 1,000,000 events (several minutes)
    python bench/ledger.py --quick          # ~50,000 events, a smoke run
    python bench/ledger.py --events 200000 --db-dir /tmp/bench   # keep the database

Set ``GPUFLEET_BENCH_PG_URL`` (an empty PostgreSQL database) to also time batched
appends on PostgreSQL. The synthetic ledger is seeded (``--seed``) and valid under
every invariant: each batch goes through ``Ledger.append``, which checks them all.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections import Counter, deque
from datetime import date, timedelta
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from gpufleet.domain import events as ev
from gpufleet.domain.types import ClaimMetric, Workload
from gpufleet.ledger import db, snapshots, store
from gpufleet.ledger.store import Draft, Ledger
from gpufleet.services.fleet import FleetService

START = date(2016, 1, 4)
ENTITIES = {"holdco": None, "cloud": "holdco", "lab": "holdco", "robotics": "holdco", "xsearch": None}
SITES = {f"dc-{i}": owner for i, owner in enumerate(["cloud", "cloud", "lab", "holdco", "robotics", "xsearch"])}
SLOTS, MW = 4_000_000, 8_000.0  # per site: 4M H100 x 700 W x PUE 1.3 = 3,640 MW
WEIGHTS = {"po": 3, "ship": 8, "deliver": 8, "install": 22, "lend": 1.2, "close": 1.0, "reclaim": 0.2,
           "fail": 9, "repair": 6, "retire": 8, "demand": 1.5, "claim": 0.05}


class SyntheticFleet:
    """Yields valid drafts; keeps just enough counters to never break an invariant."""

    def __init__(self, seed: int):
        self.r = random.Random(seed)
        self.day, self.left_today, self.n = START, 0, 0
        self.on_order: deque = deque()  # (lot, owner), oldest first
        self.in_transit: deque = deque()
        self.warehouse: Counter = Counter()  # owner -> GPUs
        self.failed: Counter = Counter()
        self.serving_self: Counter = Counter()  # (site, owner) -> installed GPUs serving the owner
        self.site_gpus: Counter = Counter()
        self.loans: list[list] = []  # [loan, lender, site, gpus_out, start, notice_days]
        self.actions = list(WEIGHTS)
        self.cum = [sum(list(WEIGHTS.values())[: i + 1]) for i in range(len(WEIGHTS))]

    def setup(self) -> list[ev.Payload]:
        out: list[ev.Payload] = [ev.EntityRegistered(entity=e, name=e.title(), parent=p) for e, p in ENTITIES.items()]
        out.append(ev.GpuModelRegistered(model="h100", name="NVIDIA H100 SXM", watts=700, memory_gb=80))
        out += [ev.SiteRegistered(site=s, name=s.upper(), owner=o, pue=1.3, capacity=[
            ev.CapacityStep(step=f"{s}-1", online_date=START, slots=SLOTS, mw=MW)]) for s, o in SITES.items()]
        return out

    def drafts(self, count: int, setup: bool = True):
        """``count`` drafts (the setup first), effective dates advancing a day every 50-350 events."""
        setup = self.setup() if setup else []
        for p in setup[:count]:
            yield Draft(p, self.day, "bench")
        for _ in range(count - len(setup)):
            if self.left_today <= 0:
                self.day += timedelta(days=1)
                self.left_today = self.r.randint(50, 350)
            self.left_today -= 1
            action = self.r.choices(self.actions, cum_weights=self.cum)[0]
            payload = getattr(self, action)() or self.install() or self.deliver() or self.po()
            yield Draft(payload, self.day, "bench")

    def _id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n:08d}"

    def _owner(self, counter: Counter):
        keys = [k for k, v in counter.items() if v > 0]
        return self.r.choice(keys) if keys else None

    def po(self):
        po, buyer = self._id("po"), self.r.choice(list(ENTITIES))
        lots = [ev.LotSpec(lot=f"{po}-l{i}", gpus=self.r.choice([128, 256, 512, 1024, 2048]),
                           planned_date=self.day + timedelta(days=self.r.randint(20, 200)))
                for i in range(self.r.randint(1, 4))]
        self.on_order.extend((x.lot, buyer, x.gpus) for x in lots)
        return ev.PurchaseOrderPlaced(po=po, buyer=buyer, vendor="nvidia", model="h100",
                                      unit_price_usd=self.r.choice([25_000, 28_000, 30_000, 32_500]), lots=lots)

    def ship(self):
        if self.on_order:
            lot = self.on_order.popleft()
            self.in_transit.append(lot)
            return ev.LotShipped(lot=lot[0])

    def deliver(self):
        queue = self.in_transit or self.on_order  # delivery implies shipping
        if queue:
            lot, owner, gpus = queue.popleft()
            self.warehouse[owner] += gpus
            return ev.LotDelivered(lot=lot)

    def install(self):
        owner = self._owner(self.warehouse)
        site = self.r.choice(list(SITES))
        gpus = min(self.warehouse[owner] if owner else 0, self.r.randint(64, 1024), SLOTS - self.site_gpus[site])
        if gpus > 0:
            self.warehouse[owner] -= gpus
            self.serving_self[(site, owner)] += gpus
            self.site_gpus[site] += gpus
            return ev.GpusInstalled(owner=owner, model="h100", site=site, gpus=gpus)

    def lend(self):
        where = self._owner(self.serving_self)
        if where and len(self.loans) < 40:
            site, lender = where
            gpus = max(1, self.serving_self[where] // self.r.randint(3, 20))
            borrower = self.r.choice([e for e in ENTITIES if e != lender])
            loan, notice = self._id("loan"), self.r.choice([0, 7, 30])
            self.serving_self[where] -= gpus
            self.loans.append([loan, lender, site, gpus, self.day, notice])
            return ev.LoanOpened(loan=loan, lender=lender, borrower=borrower, model="h100", site=site, gpus=gpus,
                                 end_date=self.day + timedelta(days=self.r.randint(30, 365)),
                                 fee_usd_per_gpu_hour=self.r.choice([0.0, 1.5, 2.2]), reclaim_notice_days=notice)

    def close(self):
        if self.loans:
            loan, lender, site, gpus, _, _ = self.loans.pop(self.r.randrange(len(self.loans)))
            self.serving_self[(site, lender)] += gpus
            return ev.LoanClosed(loan=loan)

    def reclaim(self):
        ready = [x for x in self.loans if x[3] > 1 and x[4] + timedelta(days=x[5]) <= self.day]
        if ready:
            x = self.r.choice(ready)
            gpus = self.r.randint(1, x[3] - 1)
            x[3] -= gpus
            self.serving_self[(x[2], x[1])] += gpus
            return ev.LoanReclaimed(loan=x[0], gpus=gpus, notice_given_on=self.day - timedelta(days=x[5]))

    def fail(self):
        where = self._owner(self.serving_self)
        if where:
            gpus = self.r.randint(1, min(16, self.serving_self[where]))
            self.serving_self[where] -= gpus
            self.site_gpus[where[0]] -= gpus
            self.failed[where[1]] += gpus
            return ev.GpusFailed(owner=where[1], model="h100", gpus=gpus, site=where[0])

    def repair(self):
        owner = self._owner(self.failed)
        if owner:
            gpus = self.r.randint(1, self.failed[owner])
            self.failed[owner] -= gpus
            self.warehouse[owner] += gpus
            return ev.GpusRepaired(owner=owner, model="h100", gpus=gpus)

    def retire(self):
        owner = self._owner(self.failed)
        if owner and self.r.random() < 0.4:
            gpus = self.r.randint(1, self.failed[owner])
            self.failed[owner] -= gpus
            return ev.GpusRetired(owner=owner, model="h100", gpus=gpus, from_failed=True)
        where = self._owner(self.serving_self)
        if where:  # end of life: a slice of an installed fleet goes at once
            gpus = max(1, self.serving_self[where] // self.r.randint(10, 40))
            self.serving_self[where] -= gpus
            self.site_gpus[where[0]] -= gpus
            return ev.GpusRetired(owner=where[1], model="h100", gpus=gpus, site=where[0])

    def demand(self):
        start = self.day + timedelta(days=self.r.randint(0, 90))
        return ev.DemandRecorded(demand=self._id("dem"), entity=self.r.choice(list(ENTITIES)), start=start,
                                 end=start + timedelta(days=self.r.randint(30, 720)), gpus=self.r.randint(64, 20_000),
                                 value_usd_per_gpu_hour=self.r.choice([1.0, 2.0, 3.5]),
                                 workload=self.r.choice(list(Workload)), tier=self.r.randint(0, 3))

    def claim(self):
        metric = self.r.choice(list(ClaimMetric))
        deadline = self.day + timedelta(days=self.r.randint(30, 540))
        return ev.ClaimRecorded(claim=self._id("claim"), claimant=self.r.choice(list(ENTITIES)), metric=metric,
                                model="h100", target=float(self.r.randint(1, 500) * 1000), deadline=deadline,
                                period_start=self.day if metric is ClaimMetric.GPU_SPEND_USD else None)


def append(engine, drafts, total: int, chunk: int, progress: Progress, label: str, cold: bool = False) -> float:
    """Append ``total`` drafts, ``chunk`` per transaction; return the seconds spent appending (not generating).
    ``cold``: forget the head state this process cached before each one, as a new `gpufleet record` would."""
    task, spent, batch = progress.add_task(label, total=total), 0.0, []
    for i, draft in enumerate(drafts, 1):
        batch.append(draft)
        if len(batch) == chunk or i == total:
            if cold:
                getattr(store, "_HEAD_STATES", {}).clear()
            t = time.perf_counter()
            with engine.begin() as conn:
                Ledger(conn).append(batch)
            spent += time.perf_counter() - t
            progress.advance(task, len(batch))
            batch = []
    return spent


def timed(fn, runs: int = 3) -> tuple[float, int]:
    """Median seconds of ``runs`` calls (one call only if the first takes over 20 s), and the calls made."""
    times: list[float] = []
    while len(times) < runs and not (times and times[0] > 20):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), len(times)


def fresh_engine(path: Path, synchronous: str = "FULL"):
    engine = db.make_engine(str(path), synchronous=synchronous)
    db.upgrade(engine)
    return engine


def durability_cost(workdir: Path, seed: int, count: int, chunk: int, progress: Progress,
                    rounds: int = 3) -> dict[str, float]:
    """Appends/s under SQLite's synchronous=NORMAL (the old setting) and FULL (the default), ``chunk``
    events per transaction, each on a fresh ledger; the modes alternate, median of ``rounds``."""
    rates: dict[str, list[float]] = {"NORMAL": [], "FULL": []}
    for i in range(rounds):
        for mode in rates:
            path = workdir / f"sync-{mode}-{chunk}-{i}.db"
            engine = fresh_engine(path, mode)
            spent = append(engine, SyntheticFleet(seed).drafts(count), count, chunk, progress,
                           f"synchronous={mode}, {chunk:,}/tx, round {i + 1}")
            engine.dispose()
            for f in workdir.glob(f"{path.name}*"):
                f.unlink()
            rates[mode].append(count / spent)
    return {mode: statistics.median(r) for mode, r in rates.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="a ~50k-event smoke run")
    ap.add_argument("--db-dir", type=Path, default=None, help="where the SQLite files go (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=20240423)
    ap.add_argument("--chunk", type=int, default=10_000)
    ap.add_argument("--pg-events", type=int, default=100_000)
    args = ap.parse_args()
    n, single, warm, cold, pg_n = args.events, 2_000, 100, 5, min(args.pg_events, args.events)
    sync_each, sync_batched = 2_000, 100_000  # events per durability run, 1 tx per event and batched
    if args.quick:
        n, single, warm, cold, pg_n = 50_000, 200, 100, 5, min(pg_n, 20_000)
        sync_each, sync_batched = 500, 20_000
    console, wall = Console(width=max(130, Console().width)), time.perf_counter()
    workdir = args.db_dir or Path(tempfile.mkdtemp(prefix="gpufleet-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    console.print(f"Python {platform.python_version()} ({platform.python_implementation()}), SQLite "
                  f"{sqlite3.sqlite_version}, {os.cpu_count()} CPUs, {platform.platform()}; db dir {workdir}")
    rows: list[tuple[str, str, str, str]] = []

    def row(measure: str, result: str, goal: str = "", ok: bool | None = None) -> None:
        rows.append((measure, result, goal, "" if ok is None else ("[green]yes" if ok else "[red]NO")))

    with Progress(console=console, transient=True) as progress:
        engine = fresh_engine(workdir / "per-event.db")
        each_s = append(engine, SyntheticFleet(args.seed).drafts(single), single, 1, progress, "per-event appends")
        engine.dispose()
        engine, gen, t0 = fresh_engine(workdir / "big.db"), SyntheticFleet(args.seed), time.perf_counter()
        batched_s = append(engine, gen.drafts(n), n, args.chunk, progress, f"building {n:,} events")
        build_s = time.perf_counter() - t0
        warm_s = append(engine, gen.drafts(warm, setup=False), warm, 1, progress, "per-event, big ledger")
        cold_s = append(engine, gen.drafts(cold, setup=False), cold, 1, progress, "cold per-event", cold=True)
        sync_rates = {1: durability_cost(workdir, args.seed, sync_each, 1, progress),
                      args.chunk: durability_cost(workdir, args.seed, sync_batched, args.chunk, progress)}
    rate, each_rate = n / batched_s, single / each_s
    row(f"append, batched ({args.chunk:,}/tx), SQLite, {n:,} events", f"{rate:,.0f} ev/s", "≥ 20,000 ev/s",
        rate >= 20_000)
    row("  generating the drafts (outside the timing)", f"{build_s - batched_s:.1f} s")
    row(f"append, 1 tx per event, SQLite, first {single:,} events (fresh ledger)", f"{each_rate:,.0f} ev/s")
    row("  ratio batched / per-event", f"{rate / each_rate:,.0f}×")
    row(f"append, 1 tx per event, on top of the {n:,}-event ledger ({warm} events)",
        f"{1000 * warm_s / warm:,.1f} ms/ev")
    row(f"  the same, cold: no head state cached in the process, as `gpufleet record` ({cold} events)",
        f"{1000 * cold_s / cold:,.0f} ms/ev")
    for chunk, rates in sync_rates.items():
        count = sync_each if chunk == 1 else sync_batched
        label = "1 tx per event" if chunk == 1 else f"batched ({chunk:,}/tx)"
        row(f"durability: {label}, fresh ledger, {count:,} events, synchronous=NORMAL (the old setting)",
            f"{rates['NORMAL']:,.0f} ev/s")
        row(f"  synchronous=FULL (the default: a commit survives power loss), median of 3 alternating",
            f"{rates['FULL']:,.0f} ev/s")
        row("  ratio FULL / NORMAL", f"{rates['FULL'] / rates['NORMAL']:.2f}×")
    with engine.connect() as conn:
        for workers in sorted({1, os.cpu_count() or 1}):  # parallel: as `gpufleet ledger verify` does
            t = time.perf_counter()
            report = Ledger(conn).verify(workers=workers)
            vrate = report.events_checked / (time.perf_counter() - t)
            assert report.ok, report.reason
            row(f"verify, {report.events_checked:,} events, {workers} process(es)", f"{vrate:,.0f} ev/s",
                "≥ 200,000 ev/s", vrate >= 200_000)
        snaps, snap_bytes = conn.exec_driver_sql("SELECT count(*), max(length(state)) FROM snapshots").one()
        t = time.perf_counter()
        checked, bad = snapshots.check_all(conn)
        assert bad is None, bad
        row(f"  of which checking the {checked} snapshots (chain hash, digest)", f"{time.perf_counter() - t:,.2f} s")
    service, last = FleetService(engine), gen.day
    for name, on in [("latest", last), ("middle", START + (last - START) / 2), ("early", START + (last - START) / 20)]:
        s, runs = timed(lambda on=on: service.status(as_of=on))
        row(f"status --as-of {on} ({name}), median of {runs}", f"{1000 * s:,.0f} ms", "< 1 s", s < 1)
    with engine.connect() as conn:
        state_s, _ = timed(lambda: Ledger(conn).state(as_of=last))
        replay_s, _ = timed(lambda: Ledger(conn).state(use_snapshots=False), runs=1)
    row("  of which Ledger.state(as_of=latest) (snapshot + fold)", f"{1000 * state_s:,.0f} ms")
    row("full replay, no snapshots (state(use_snapshots=False))", f"{replay_s:,.1f} s")
    row("  ratio full replay / state from snapshot", f"{replay_s / state_s:,.0f}×")
    size = sum(f.stat().st_size for f in workdir.glob("big.db*"))
    row("SQLite file; snapshots (count, largest)",
        f"{size / 2**20:,.0f} MiB; {snaps}, {(snap_bytes or 0) / 2**20:,.1f} MiB")
    engine.dispose()
    if os.environ.get("GPUFLEET_BENCH_PG_URL"):
        row(*bench_pg(os.environ["GPUFLEET_BENCH_PG_URL"], args, pg_n, console))
    table = Table(title="gpufleet ledger benchmark")
    for col in ("measure", "result", "goal", "met"):
        table.add_column(col, justify="right" if col != "measure" else "left")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    if args.db_dir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    console.print(f"total wall time {time.perf_counter() - wall:,.1f} s")


def bench_pg(url: str, args, count: int, console: Console):
    engine = db.make_engine(url)
    db.upgrade(engine)
    with engine.connect() as conn:
        if Ledger(conn).head().seq:
            return "append, batched, PostgreSQL", "skipped: the database is not empty", "≥ 20,000 ev/s"
    with Progress(console=console, transient=True) as progress:
        spent = append(engine, SyntheticFleet(args.seed).drafts(count), count, args.chunk, progress,
                       f"PostgreSQL: {count:,} events")
    engine.dispose()
    rate = count / spent
    return (f"append, batched ({args.chunk:,}/tx), PostgreSQL, {count:,} events", f"{rate:,.0f} ev/s",
            "≥ 20,000 ev/s", rate >= 20_000)


if __name__ == "__main__":
    main()
