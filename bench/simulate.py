"""Scheduler benchmark: replay the Philly trace under each policy, and check ``static`` against SimPy.

Run from the repository root, in the project's virtual environment::

    python bench/simulate.py                          # all 82,247 Philly jobs, static, borrow, fair (minutes)
    python bench/simulate.py --quick                  # the first 10,000 jobs, a smoke run
    python bench/simulate.py --policies static,borrow --trace path/to/philly.csv

Workload: the Philly trace (``../shared/traces/philly/philly.csv`` by default), every job given a
checkpoint interval of 3600 s and a restart cost of 60 s (``--checkpoint-s``, ``--restart-s``):
Philly records neither, and without a checkpoint interval a preempted job would lose all its
work, which no one runs long training jobs with; hourly checkpoints are common practice, and a
minute to reload a checkpoint and rebuild the job is a typical restart. Only ``borrow`` and
``fair`` preempt, so ``static`` is unaffected by both.

Cluster and quotas: :func:`gpufleet.scheduler.sizing.size_from_workload` (the documented default
rule: each tenant's offered load / 0.8, at least its largest job, rounded up to 8-GPU nodes; the
cluster holds exactly the sum). Each policy replays the whole workload through ``simulate`` with
a reclaim grace period of 30 s; the table gives its wall time (``SimulationResult.wall_s``: the
event loop only, not reading the trace or computing the figures), the events it processed and
the documented figures.

SimPy comparison, same run: ``static`` written the obvious way on SimPy 4
(``bench/simpy_static.py``: a Container per tenant, a process per job, gang ``get``). To compare
like with like, both run on pooled capacity where placement cannot fragment (one node holding
all the GPUs, ``NodePool("gpu", 1, total_gpus)``); ``gpufleet`` runs the same engine that
``simulate`` drives (``Scheduler`` + ``run_to_end``, timed the same way, figures left out as
SimPy computes none). Both must give the same finish time for every job (to 1e-6 s); the wall
time ratio SimPy / gpufleet is printed.

Goals printed at the end: < 30 s per policy on one core (the simulator is single-threaded;
numpy's thread pools are limited to one thread); >= 5x faster than SimPy; ``borrow`` beats
``static`` in utilization and mean JCT; under ``borrow`` no job within its owner's quota waits
longer than the reclaim grace period (``guarantee_wait_max_s``), and, stricter, no owner stays
below its quota with work waiting for longer than that at a stretch (``guarantee_violation_max_s``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core: before numpy is imported

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import simpy  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from gpufleet.scheduler import (Cluster, NodePool, Scheduler, SimulationResult, Workload,  # noqa: E402
                                make_policy, run_to_end, simulate)
from gpufleet.scheduler.fairness import alone_jct_s  # noqa: E402
from gpufleet.scheduler.model import MILLI  # noqa: E402
from gpufleet.scheduler.sizing import size_from_workload  # noqa: E402
from gpufleet.services.traces import read_philly  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simpy_static import simulate_static  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACE = ROOT.parent / "shared" / "traces" / "philly" / "philly.csv"
HOUR, DAY = 3600.0, 86_400.0
AGREE_S = 1e-6


def progress_bar(console: Console) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.fields[what]}"), TimeElapsedColumn(), console=console, transient=True)


def run_policy(name: str, workload: Workload, cluster: Cluster, tenants, grace_s: float,
               console: Console, alone) -> SimulationResult:
    gc.collect()
    with progress_bar(console) as bar:
        task = bar.add_task(f"{name}: replaying {len(workload.jobs):,} jobs", total=None, what="")
        return simulate(workload, cluster, tenants, make_policy(name), reclaim_grace_s=grace_s,
                        progress=lambda steps: bar.update(task, what=f"{steps:,} events"), alone_jct_s=alone)


def replay_alone(workload: Workload, cluster: Cluster, tenants, grace_s: float, console: Console):
    """Each tenant's jobs alone on its quota (finish-time fairness's baseline), once for every policy."""
    gc.collect()
    with progress_bar(console) as bar:
        task = bar.add_task("each tenant alone on its quota", total=None, what="")
        started = time.perf_counter()
        alone = alone_jct_s(workload, cluster, tenants, reclaim_grace_s=grace_s,
                            progress=lambda steps: bar.update(task, what=f"{steps:,} events"))
    return alone, time.perf_counter() - started


def compare_with_simpy(workload: Workload, tenants, total_gpus: int, grace_s: float, console: Console) -> dict:
    """gpufleet ``static`` and the SimPy version on one node holding every GPU: finish times and wall times."""
    jobs = workload.jobs
    pooled = Cluster(pools=(NodePool("gpu", 1, total_gpus),))
    gc.collect()
    with progress_bar(console) as bar:
        task = bar.add_task("gpufleet static, pooled capacity", total=None, what="")
        started = time.perf_counter()
        scheduler = Scheduler(pooled, tenants, make_policy("static"), reclaim_grace_s=grace_s)
        scheduler.feed(jobs)
        run_to_end(scheduler, lambda steps: bar.update(task, what=f"{steps:,} events"))
        ours_s = time.perf_counter() - started
    ours = list(scheduler.records.finish_s)
    events = scheduler.kernel.steps
    del scheduler
    nominal = {t.name: int(round(t.quotas["gpu"].nominal_gpus * MILLI)) for t in tenants}
    span_days = (max(ours) - jobs[0].arrival_s) / DAY
    gc.collect()
    with progress_bar(console) as bar:
        task = bar.add_task("SimPy static, pooled capacity", total=span_days, what="")
        started = time.perf_counter()
        theirs = simulate_static(jobs, nominal, progress=lambda now: bar.update(
            task, completed=min(now / DAY, span_days), what=f"day {now / DAY:,.0f} of {span_days:,.0f}"))
        simpy_s = time.perf_counter() - started
    diffs = [abs(a - b) for a, b in zip(ours, theirs)]
    nan = sum(math.isnan(a) or math.isnan(b) for a, b in zip(ours, theirs))
    worst = max(range(len(diffs)), key=diffs.__getitem__)
    out = {"jobs": len(jobs), "gpufleet_s": ours_s, "gpufleet_events": events, "simpy_s": simpy_s,
           "ratio": simpy_s / ours_s, "max_abs_diff_s": diffs[worst], "differing_jobs": sum(d > AGREE_S for d in diffs),
           "unfinished": nan, "identical": ours == theirs}
    out["agree"] = nan == 0 and out["max_abs_diff_s"] <= AGREE_S
    if not out["agree"]:
        j = jobs[worst]
        out["worst"] = {"job": j.id, "tenant": j.tenant, "arrival_s": j.arrival_s, "gpus": j.gpus,
                        "service_s": j.service_s, "gpufleet_finish_s": ours[worst], "simpy_finish_s": theirs[worst]}
    return out


def metrics_table(results: list[SimulationResult], title: str) -> Table:
    table = Table(title=title)
    cols = ["policy", "wall s", "events", "events/s", "util", "JCT mean h", "JCT p50 h", "JCT p99 h",
            "queue mean h", "makespan d", "preempt", "lost GPU-h", "viol total s", "viol max s", "wait max s",
            "Jain t", "rho max", "rho mean"]
    for c in cols:
        table.add_column(c, justify="left" if c == "policy" else "right")
    for r in results:
        o = r.overall
        table.add_row(r.policy, f"{r.wall_s:.1f}", f"{r.events:,}", f"{r.events / r.wall_s:,.0f}",
                      f"{o.utilization:.3f}", f"{o.jct_mean_s / HOUR:,.1f}", f"{o.jct_p50_s / HOUR:,.1f}",
                      f"{o.jct_p99_s / HOUR:,.1f}", f"{o.queue_mean_s / HOUR:,.1f}", f"{o.makespan_s / DAY:,.1f}",
                      f"{o.preemptions:,}", f"{o.lost_gpu_hours:,.0f}", f"{o.guarantee_violation_s:,.0f}",
                      f"{o.guarantee_violation_max_s:,.0f}", f"{o.guarantee_wait_max_s:,.0f}", _f3(r.fairness.jain.index),
                      _f3(r.fairness.finish_time_max), _f3(r.fairness.finish_time_mean))
    return table


def _f3(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def goals(results: dict[str, SimulationResult], cmp: dict | None, grace_s: float, quick: bool) -> list:
    scope = " (quick run, not the goal's trace)" if quick else ""
    out = []
    for name, r in results.items():
        out.append((f"{name}: < 30 s on one core{scope}", f"{r.wall_s:.1f} s", r.wall_s < 30))
    if cmp:
        out.append((f"static: >= 5x faster than SimPy (pooled capacity){scope}",
                    f"{cmp['ratio']:.2f}x (SimPy {cmp['simpy_s']:.1f} s / gpufleet {cmp['gpufleet_s']:.1f} s)"
                    + (f": gpufleet {1 / cmp['ratio']:.1f}x slower" if cmp["ratio"] < 1 else ""),
                    cmp["ratio"] >= 5))
        out.append((f"static: same finish times as SimPy (max |diff| <= {AGREE_S:g} s)",
                    f"max |diff| {cmp['max_abs_diff_s']:g} s, {cmp['differing_jobs']:,} of {cmp['jobs']:,} jobs differ"
                    + (" (bit-identical)" if cmp["identical"] else ""), cmp["agree"]))
    if "borrow" in results and "static" in results:
        b, s = results["borrow"].overall, results["static"].overall
        out.append(("borrow beats static in utilization", f"{b.utilization:.3f} vs {s.utilization:.3f}",
                    b.utilization > s.utilization))
        out.append(("borrow beats static in mean JCT", f"{b.jct_mean_s / HOUR:,.1f} h vs {s.jct_mean_s / HOUR:,.1f} h",
                    b.jct_mean_s < s.jct_mean_s))
    if "borrow" in results:
        o = results["borrow"].overall
        out.append((f"borrow: no job within its owner's quota waits longer than the reclaim grace ({grace_s:g} s)",
                    f"{o.guarantee_wait_max_s:,.0f} s", o.guarantee_wait_max_s <= grace_s))
        out.append((f"borrow: no owner is below its quota with work waiting for longer than {grace_s:g} s at a stretch",
                    f"{o.guarantee_violation_max_s:,.0f} s", o.guarantee_violation_max_s <= grace_s))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the first 10,000 jobs only")
    ap.add_argument("--policies", default="static,borrow,fair")
    ap.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="a Philly CSV (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=None, help="use the first N jobs (--quick: 10,000)")
    ap.add_argument("--checkpoint-s", type=float, default=3600.0, help="checkpoint interval given to every job")
    ap.add_argument("--restart-s", type=float, default=60.0, help="restart cost given to every job")
    ap.add_argument("--grace-s", type=float, default=30.0, help="reclaim grace period")
    ap.add_argument("--skip-simpy", action="store_true", help="leave out the SimPy comparison")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    console, wall = Console(width=max(180, Console().width)), time.perf_counter()
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    limit = args.jobs or (10_000 if args.quick else None)
    console.print(f"[bold]gpufleet scheduler benchmark[/]  Python {platform.python_version()}, SimPy "
                  f"{simpy.__version__}, {os.cpu_count()} CPUs, {platform.platform()}")
    if not args.trace.exists():
        sys.exit(f"no trace at {args.trace} (see ../shared/traces/README.md); pass --trace")

    started = time.perf_counter()
    trace = read_philly(args.trace)
    jobs = trace.jobs[:limit] if limit else trace.jobs
    jobs = tuple(dataclasses.replace(j, checkpoint_s=args.checkpoint_s, restart_s=args.restart_s) for j in jobs)
    workload = Workload(jobs, trace.epoch, trace.skipped)
    console.print(f"trace {args.trace}: {len(jobs):,} of {len(trace.jobs):,} jobs, {len({j.tenant for j in jobs})} "
                  f"tenants, from {trace.epoch}; read in {time.perf_counter() - started:.1f} s; every job: checkpoint "
                  f"every {args.checkpoint_s:g} s, restart cost {args.restart_s:g} s")
    cluster, tenants = size_from_workload(jobs)
    pool = cluster.pools[0]
    console.print(f"sizing (size_from_workload: offered load / 0.8, >= largest job, whole 8-GPU nodes): "
                  f"{cluster.gpus:,} GPUs = {pool.nodes} nodes x {pool.gpus_per_node}; nominal GPUs per tenant: "
                  + ", ".join(f"{t.name} {t.quotas[pool.model].nominal_gpus:g}" for t in tenants))

    alone, alone_s = replay_alone(workload, cluster, tenants, args.grace_s, console)
    console.print(f"  each tenant alone on its quota (finish-time fairness): {alone_s:.1f} s")
    results: dict[str, SimulationResult] = {}
    for name in policies:
        r = run_policy(name, workload, cluster, tenants, args.grace_s, console, alone)
        results[name] = r
        console.print(f"  {name}: {r.wall_s:.1f} s, {r.events:,} events, {r.events / r.wall_s:,.0f} events/s")
    console.print(metrics_table(list(results.values()), f"Philly, {len(jobs):,} jobs, {cluster.gpus:,} GPUs "
                                f"({pool.nodes} nodes), reclaim grace {args.grace_s:g} s"))

    cmp = None
    if not args.skip_simpy:
        cmp = compare_with_simpy(workload, tenants, cluster.gpus, args.grace_s, console)
        table = Table(title=f"static on pooled capacity (1 node x {cluster.gpus:,} GPUs): gpufleet vs SimPy")
        for c in ("", "wall s", "jobs/s", "ratio SimPy / gpufleet", "max |finish diff| s", "jobs differing"):
            table.add_column(c, justify="left" if not c else "right")
        table.add_row("gpufleet (Scheduler + run_to_end)", f"{cmp['gpufleet_s']:.1f}",
                      f"{cmp['jobs'] / cmp['gpufleet_s']:,.0f}", f"{cmp['ratio']:.2f}x",
                      f"{cmp['max_abs_diff_s']:g}", f"{cmp['differing_jobs']:,}")
        table.add_row("SimPy 4 (process per job, Container per tenant)", f"{cmp['simpy_s']:.1f}",
                      f"{cmp['jobs'] / cmp['simpy_s']:,.0f}", "", "", "")
        console.print(table)
        if not cmp["agree"]:
            console.print(f"[red]finish times disagree[/]; largest difference: {cmp['worst']}")

    gt = Table(title="Goals")
    for c in ("goal", "measured", "met"):
        gt.add_column(c, justify="left" if c == "goal" else "right")
    for goal, measured, met in goals(results, cmp, args.grace_s, bool(limit)):
        gt.add_row(goal, measured, "[green]yes" if met else "[red]NO")
    console.print(gt)
    if args.json:
        args.json.write_text(json.dumps({"jobs": len(jobs), "gpus": cluster.gpus, "nodes": pool.nodes,
                                         "nominal_gpus": {t.name: t.quotas[pool.model].nominal_gpus for t in tenants},
                                         "policies": {n: r.to_dict() for n, r in results.items()},
                                         "simpy": cmp}, indent=2))
    console.print(f"total wall time {time.perf_counter() - wall:,.1f} s")


if __name__ == "__main__":
    main()
