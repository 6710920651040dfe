"""Sweep benchmark: samples per second, speed-up on 2 cores, overhead per task, cost of one sample.

Run from the repository root, in the project's virtual environment::

    python bench/sweep.py --quick       # 48 supply samples per case, 4 quota configurations on 10,000 Philly jobs
    python bench/sweep.py               # 192 supply samples, 8 quota configurations
    python bench/sweep.py --large       # one sample of ``generate large``: cost, build, plain plan, Dask costs
    python bench/sweep.py --claim-dates # a supply sweep from today and 5 claim dates: per date vs one submission

Cases: a supply sweep of the bundled example (the ledger as known on 2024-06-04, policy owner-first)
and of ``generate medium`` (seed 0, from its plan start, default access), and a quota sweep (grid over
policy and borrowing) on the first 10,000 Philly jobs. For each: a plain loop calling the sample
function (its context prepared once; the reference), the runner serially, on 2 local processes, and
on a LocalCluster of 2 worker processes (its start-up not counted). Overhead = runner time / plain
loop time - 1 (serially: per-task bookkeeping and Parquet-free row handling; in parallel, against
half the plain loop: what 2 cores do not win back). Sample cost: one supply sample against one plain
``make_plan`` of the same problem; one quota sample against one plain ``simulate``.

``--large`` measures what docs/sweeps.md's estimate of a 1,000-sample sweep on 100 Dask workers needs,
on ``generate large`` (seed 0, from its plan start, default access): building the sweep's inputs and
their pickled size; one worker's preparation (both owner-first LPs built, passed to HiGHS and solved
once); a handful of samples, serially in that context; one plain ``make_plan`` of the same problem;
and on a LocalCluster of 2 (its start not counted), the broadcast scatter of the inputs and Dask's
cost per task (empty tasks submitted and awaited as the runner does).

``--claim-dates`` times what ``gpufleet sweep supply`` runs on a ledger with several claim dates: the
bundled example plus three claims stated on 2024-05-10, 05-20 and 05-27, known on 2024-06-04, so a
sweep from that date and one from each of the 5 claim dates, 96 samples each; on 2 local processes
and on the LocalCluster of 2: one run per date after another (each its own pool, as before) against
one submission of every date's batches (``runner.run_all``), twice each, alternating; rows checked
equal.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import time  # noqa: E402
from datetime import date  # noqa: E402
from pathlib import Path  # noqa: E402

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from gpufleet.services.sweeps import runner  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PHILLY = ROOT.parent / "shared" / "traces" / "philly" / "philly.csv"


def supply_cases(samples: int):
    from gpufleet.planner.generate import PLAN_START, generate_scenario, group_access, scenario_state
    from gpufleet.services import planning
    from gpufleet.services.sweeps import supply

    day = date(2024, 6, 4)
    state = planning.scenario_state(ROOT / "src" / "gpufleet" / "examples" / "h100-2024.yaml", day)
    yield "supply: bundled example", supply.supply_sweep(state, day, samples=samples, seed=1)
    doc = generate_scenario("medium", 0)
    yield "supply: generate medium", supply.supply_sweep(scenario_state(doc, PLAN_START), PLAN_START,
                                                          samples=samples, seed=1, access=group_access(doc))


def quota_case(configs: int):
    from gpufleet.services import scheduling
    from gpufleet.services.sweeps import quotas

    workload = scheduling.read_workload(PHILLY, "philly")
    setup = scheduling.prepare(dataclasses.replace(workload, jobs=workload.jobs[:10_000]))
    borrowing = (None, 1.0, 0.5, 2.0)[: max(1, configs // 2)]
    space = quotas.SearchSpace(policies=("static", "borrow"), mix=(0.0,), lending=(None,), borrowing=borrowing)
    return "quotas: 10,000 Philly jobs", quotas.quota_sweep(setup, space)


def plain_loop(sweep) -> float:
    prepare, sample = runner._functions(sweep.kind)
    context = prepare(sweep.inputs)
    started = time.perf_counter()
    for i in range(sweep.samples):
        sample(context, sweep.seed, i)
    return time.perf_counter() - started


def one_plain(sweep) -> tuple[float, float]:
    """(seconds of one plain plan or simulate, seconds of one sample in a prepared context)."""
    prepare, sample = runner._functions(sweep.kind)
    context = prepare(sweep.inputs)
    if sweep.kind == "supply":
        from gpufleet.planner.plan import make_plan

        base = sweep.inputs
        plain = _best(lambda: make_plan(base.problem, base.policy, lent_now=base.lent_now))
    else:
        from gpufleet.scheduler import PolicyOptions, make_policy, simulate
        from gpufleet.services.sweeps import quotas

        s = sweep.inputs.setup
        config = quotas.configuration(sweep.inputs.space, sweep.seed, 0)
        plain = _best(lambda: simulate(s.workload, s.cluster, quotas.tenants_for(s, config),
                                       make_policy(config["policy"], PolicyOptions()), reclaim_grace_s=30.0), 1)
    return plain, _best(lambda: sample(context, sweep.seed, 0), 1 if sweep.kind == "quotas" else 3)


def _noop(i: int) -> int:
    return i


def large_case(samples: int, client) -> None:
    """The ``--large`` measures (module docstring), printed as a table."""
    import pickle
    import statistics

    from distributed import as_completed

    from gpufleet.planner.generate import PLAN_START, generate_scenario, group_access, scenario_state
    from gpufleet.planner.plan import make_plan
    from gpufleet.services.sweeps import supply

    started = time.perf_counter()
    doc = generate_scenario("large", 0)
    sweep = supply.supply_sweep(scenario_state(doc, PLAN_START), PLAN_START, samples=samples, seed=1,
                                access=group_access(doc))
    inputs_s = time.perf_counter() - started
    size_mb = len(pickle.dumps(sweep.inputs)) / 1e6
    started = time.perf_counter()
    context = supply.prepare(sweep.inputs)
    prepare_s = time.perf_counter() - started
    shapes = ", ".join(f"{m.A.shape[0]:,} x {m.A.shape[1]:,}" for m, _r in context.stages)
    times = []
    for i in range(samples):
        started = time.perf_counter()
        row = supply.sample(context, sweep.seed, i)
        times.append(time.perf_counter() - started)
        assert row["status"] == "ok", row["status"]
    base = sweep.inputs
    started = time.perf_counter()
    make_plan(base.problem, base.policy, lent_now=base.lent_now)
    plan_s = time.perf_counter() - started
    workers = len(client.scheduler_info()["workers"])
    client.gather(client.map(_noop, range(20), pure=False))  # connections made before timing
    client.scatter(list(range(10)), broadcast=True, hash=False)
    scatter_s = _best(lambda: client.scatter(sweep.inputs, broadcast=True, hash=False))
    tasks = 400
    started = time.perf_counter()
    for future in as_completed([client.submit(_noop, i, pure=False) for i in range(tasks)]):
        future.result()
    task_ms = (time.perf_counter() - started) / tasks * 1e3
    mean = statistics.fmean(times)
    table = Table(title=f"generate large (seed 0), owner-first, {base.problem.weeks} weeks; LPs {shapes}")
    for col in ("inputs s", "inputs MB", "prepare s", "samples", "sample s (mean, min-max)", "plain plan s",
                "sample / plain plan", f"scatter to {workers} s", "Dask ms / empty task"):
        table.add_column(col, justify="right")
    table.add_row(f"{inputs_s:.2f}", f"{size_mb:.2f}", f"{prepare_s:.2f}", str(samples),
                  f"{mean:.2f} ({min(times):.2f}-{max(times):.2f})", f"{plan_s:.2f}", f"{mean / plan_s:.2f}x",
                  f"{scatter_s:.3f}", f"{task_ms:.2f}")
    Console(width=220).print(table)


EXTRA_CLAIMS = [("xai-100k-h100-2024", "xai", 100_000, "2024-05-10", "2024-12-31"),
                ("x-12k-h100-2024", "x", 12_000, "2024-05-20", "2024-12-31"),
                ("tesla-50k-h100-2024q3", "tesla", 50_000, "2024-05-27", "2024-09-30")]


def claim_date_case(samples: int, client) -> None:
    """The ``--claim-dates`` measures (module docstring), printed as a table."""
    import tempfile

    from gpufleet.services.fleet import FleetService
    from gpufleet.services.sweeps import supply

    text = (ROOT / "src" / "gpufleet" / "examples" / "h100-2024.yaml").read_text()
    claims = "".join(f"  - claim: {c}\n    on: {on}\n    claimant: {who}\n    metric: active_gpus\n    model: h100\n"
                     f"    target: {target}\n    deadline: {deadline}\n\n"
                     for c, who, target, on, deadline in EXTRA_CLAIMS)
    day = date(2024, 6, 4)
    with tempfile.TemporaryDirectory(prefix="gpufleet-bench-") as tmp:
        scenario = Path(tmp) / "claims.yaml"
        scenario.write_text(text.replace("\nclaims:\n", "\nclaims:\n" + claims, 1))
        service = FleetService.open(str(Path(tmp) / "fleet.db"), create=True)
        service.load(scenario)
        plan = supply.date_sweeps(service.state(day, day.isoformat()), day,
                                  lambda at: service.state(at, at.isoformat()), samples=samples, seed=3)
        service.engine.dispose()
    sweeps = [sweep for _, sweep in plan]
    table = Table(title=f"supply sweep from {day} and {len(plan) - 1} claim dates, {samples} samples each "
                        f"({len(plan) * samples} in all), 2 workers; seconds, twice each")
    for col in ("executor", "one run per date", "one submission", "saved"):
        table.add_column(col, justify="right")
    for label, how in (("2 local processes", {"workers": 2}), ("Dask LocalCluster(2)", {"dask": client})):
        per_date, together = [], []
        for _ in range(2):
            started = time.perf_counter()
            one_by_one = [runner.run(sweep, **how) for sweep in sweeps]
            per_date.append(time.perf_counter() - started)
            started = time.perf_counter()
            at_once = runner.run_all(sweeps, **how)
            together.append(time.perf_counter() - started)
            assert [runner.summary_rows(r.rows) for r in at_once] == [runner.summary_rows(r.rows) for r in one_by_one]
        table.add_row(label, ", ".join(f"{t:.2f}" for t in per_date), ", ".join(f"{t:.2f}" for t in together),
                      f"{1 - min(together) / min(per_date):.0%}")
    Console(width=220).print(table)


def _best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--large", action="store_true", help="only the generate-large measures (about a minute)")
    parser.add_argument("--large-samples", type=int, default=5, help="serial samples of generate large")
    parser.add_argument("--claim-dates", action="store_true", help="only the claim-date sweeps (about 2 minutes)")
    parser.add_argument("--claim-date-samples", type=int, default=96, help="samples per date")
    parser.add_argument("--samples", type=int, help="supply samples per case (default 192; 48 with --quick)")
    parser.add_argument("--only", help="the cases whose name contains this (e.g. medium)")
    args = parser.parse_args()
    samples, configs = (48, 4) if args.quick else (192, 8)
    samples = args.samples or samples
    from distributed import Client, LocalCluster

    console = Console(width=220)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    if args.large or args.claim_dates:
        if args.large:
            large_case(args.large_samples, client)
        if args.claim_dates:
            claim_date_case(args.claim_date_samples, client)
        client.close()
        cluster.close()
        return
    table = Table(title=f"Sweeps on {os.cpu_count()} cores (2 workers)")
    for col in ("case", "samples", "plain loop /s", "serial /s", "2 proc /s", "Dask 2 /s", "speed-up 2 proc",
                "speed-up Dask", "overhead serial", "overhead 2 proc", "sample / plain run"):
        table.add_column(col, justify="right")
    cases = list(supply_cases(samples)) + [quota_case(configs)]
    cases = [(name, sweep) for name, sweep in cases if args.only is None or args.only in name]
    for name, sweep in cases:
        loop = plain_loop(sweep)
        serial = runner.run(sweep, workers=1)
        batch = runner.batch_size(sweep.samples, 2)
        pool = runner.run(sweep, workers=2, batch=batch)
        dask = runner.run(sweep, dask=client, batch=batch)
        plain, one = one_plain(sweep)
        n = sweep.samples
        table.add_row(name, str(n), f"{n / loop:.2f}", f"{n / serial.wall_s:.2f}", f"{n / pool.wall_s:.2f}",
                      f"{n / dask.wall_s:.2f}", f"{loop / pool.wall_s:.2f}x", f"{loop / dask.wall_s:.2f}x",
                      f"{serial.wall_s / loop - 1:+.1%}", f"{pool.wall_s / (loop / 2) - 1:+.1%}",
                      f"{one / plain:.2f}x ({one * 1e3:.0f} / {plain * 1e3:.0f} ms)")
        console.print(f"{name}: plain loop {loop:.2f} s, serial {serial.wall_s:.2f} s, 2 processes "
                      f"{pool.wall_s:.2f} s, Dask {dask.wall_s:.2f} s ({batch} samples per task)")
    client.close()
    cluster.close()
    console.print(table)
    console.print("Goals: speed-up >= 1.8x on 2 cores; overhead < 5%; sample / plain run <= 1.2x.")


if __name__ == "__main__":
    main()
