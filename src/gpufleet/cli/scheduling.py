"""``gpufleet simulate`` and ``gpufleet export``: thin shells over :mod:`gpufleet.services.scheduling`."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gpufleet.cli import render
from gpufleet.cli.app import _fleet, app
from gpufleet.cli.options import number
from gpufleet.cli.render import console
from gpufleet.scheduler import POLICIES, PolicyOptions, SimulationResult
from gpufleet.scheduler.limits import MAX_PREEMPTIONS, MAX_TIME_S
from gpufleet.services import job_output, scheduling
from gpufleet.services.outputs import check_writable, write_text

TraceFormat = StrEnum("TraceFormat", {name: name for name in scheduling.READERS})
PolicyName = StrEnum("PolicyName", {name: name for name in POLICIES})
SECONDS = number(0, MAX_TIME_S)  # any time or duration option (docs/scheduling.md, "Bounds")


class Output(StrEnum):
    table = "table"
    json = "json"


class Engine(StrEnum):
    kueue = "kueue"
    slurm = "slurm"


TraceArg = Annotated[Path, typer.Argument(help="the trace file (Philly CSV or Alibaba 2023 pod list)")]
TraceFormatOpt = Annotated[TraceFormat, typer.Option("--trace-format", help="the trace's format")]
ClusterOpt = Annotated[str | None, typer.Option(
    "--cluster", help="nodes as NODESxGPUS[:MODEL],... (e.g. 69x8:V100) or an Alibaba node-list CSV; "
                      "default: sized from the trace (docs/scheduling.md)")]
QuotasOpt = Annotated[Path | None, typer.Option(
    "--quotas", help="tenants' quotas: YAML, or a Helios per-day CSV; default: docs/scheduling.md")]
LoansOpt = Annotated[bool, typer.Option(
    "--loans/--no-loans", help="apply the ledger's dated loans (--db) as quota transfers between tenants")]
SkipOpt = Annotated[bool, typer.Option(
    "--skip-bad-rows", help="skip trace rows that are malformed or name no GPU model of the cluster, and count them")]


def _setup(trace: Path, trace_format: TraceFormat, cluster: str | None, quotas: Path | None, loans: bool,
           skip_bad_rows: bool, checkpoint_s: float, restart_s: float) -> scheduling.Setup:
    workload = scheduling.read_workload(trace, trace_format.value, skip_bad_rows=skip_bad_rows,
                                        checkpoint_s=checkpoint_s or None, restart_s=restart_s)
    state = _fleet().state() if loans else None
    return scheduling.prepare(workload, cluster_spec=cluster, quotas=quotas, loans=state, skip_bad_rows=skip_bad_rows)


@app.command()
def simulate(
    trace: TraceArg,
    trace_format: TraceFormatOpt = TraceFormat.philly,
    cluster: ClusterOpt = None,
    quotas: QuotasOpt = None,
    policy: Annotated[PolicyName, typer.Option(help="the scheduling policy")] = PolicyName.borrow,
    compare: Annotated[bool, typer.Option("--compare", help="run every policy on the trace, side by side")] = False,
    backfill: Annotated[bool, typer.Option("--backfill", help="start short jobs behind a blocked head")] = False,
    max_preemptions: Annotated[int | None, typer.Option(
        min=1, max=MAX_PREEMPTIONS, help="never preempt a job more often")] = None,
    reclaim_grace_s: Annotated[float, typer.Option(
        parser=SECONDS, help="seconds a preempted job keeps its GPUs")] = 30.0,
    checkpoint_s: Annotated[float, typer.Option(
        parser=SECONDS, help="checkpoint interval for jobs the trace gives none (0: never)")] =
        scheduling.DEFAULT_CHECKPOINT_S,
    restart_s: Annotated[float, typer.Option(parser=SECONDS, help="restart cost after a preemption, s")] =
        scheduling.DEFAULT_RESTART_S,
    loans: LoansOpt = False,
    skip_bad_rows: SkipOpt = False,
    fmt: Annotated[Output, typer.Option("--format", "-f", help="table or json")] = Output.table,
    jobs_out: Annotated[Path | None, typer.Option(
        "--jobs-out", help="also write one row per job and policy to this .csv or .parquet file")] = None,
) -> None:
    """Replay a GPU cluster trace under a multi-tenant scheduling policy and report what it does to each tenant."""
    if jobs_out is not None:
        job_output.check_jobs_out(jobs_out)
    setup = _setup(trace, trace_format, cluster, quotas, loans, skip_bad_rows, checkpoint_s, restart_s)
    names = list(POLICIES) if compare else [policy.value]
    options = PolicyOptions(backfill=backfill, max_preemptions=max_preemptions)
    with _progress(len(setup.workload.jobs)) as progress:
        results = scheduling.run(setup, names, options=options, reclaim_grace_s=reclaim_grace_s,
                                 progress=progress)
    if fmt is Output.json:
        render.print_json(scheduling.summary(setup, results))
    else:
        _print(setup, results)
    if jobs_out is not None:
        rows = job_output.write_jobs(jobs_out, results)
        render.errors.print(f"wrote {rows:,} rows (jobs x policies) to {jobs_out}", highlight=False)


def _progress(jobs: int) -> _Bars | _Lines:
    """Progress of the replays on stderr (stdout may be JSON): bars in a terminal, else a line each."""
    return _Bars(jobs) if render.errors.is_terminal else _Lines(jobs)


class _Bars:
    """A Rich progress bar per replay, advanced by the simulation's steps (about 2 per job)."""

    def __init__(self, jobs: int):
        self.jobs = jobs
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=render.errors, transient=True)

    def __enter__(self) -> _Bars:
        self.bars.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.__exit__(*exc)

    def __call__(self, policy: str) -> Callable[[int], None]:
        task = self.bars.add_task(f"{policy:>7}", total=2 * self.jobs)
        return lambda steps: self.bars.update(task, completed=min(steps, 2 * self.jobs))


class _Lines:
    """Without a terminal (a log, a pipe): a line per replay when it is done, with its time, such as
    ``simulate: fair done in 12.3 s (20,000 jobs)``."""

    NAMES = {"alone": "alone (each tenant on its quota)"}

    def __init__(self, jobs: int):
        self.jobs, self.running = jobs, None

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, error: type | None, *exc) -> None:
        if error is None:
            self._done()

    def __call__(self, policy: str) -> Callable[[int], None]:
        self._done()  # replays run one after the other: asking for the next means the last is done
        self.running = (policy, time.perf_counter())
        return lambda steps: None

    def _done(self) -> None:
        if self.running:
            policy, start = self.running
            render.errors.print(f"simulate: {self.NAMES.get(policy, policy)} done in "
                                f"{time.perf_counter() - start:.1f} s ({self.jobs:,} jobs)", markup=False,
                                highlight=False)
            self.running = None


COLUMNS = ["policy", "utilization", "jct_mean_h", "jct_p50_h", "jct_p99_h", "queue_mean_h", "makespan_d",
           "preemptions", "lost_gpu_hours", "guarantee_violation_s", "guarantee_violation_max_s", "guarantee_wait_max_s"]
FAIRNESS = ["jain_over_time", "rho_max", "rho_mean"]  # overall; per tenant its own rho (docs/scheduling.md)


def _row(name: str, f: dict) -> dict:
    return {"policy": name, "utilization": f["utilization"], "jct_mean_h": f["jct_mean_s"] / 3600,
            "jct_p50_h": f["jct_p50_s"] / 3600, "jct_p99_h": f["jct_p99_s"] / 3600,
            "queue_mean_h": f["queue_mean_s"] / 3600, "makespan_d": f["makespan_s"] / 86400,
            "preemptions": f["preemptions"], "lost_gpu_hours": f["lost_gpu_hours"],
            "guarantee_violation_s": f["guarantee_violation_s"],
            "guarantee_violation_max_s": f["guarantee_violation_max_s"],
            "guarantee_wait_max_s": f["guarantee_wait_max_s"], "jain_over_time": f.get("jain_over_time"),
            "rho_max": f.get("finish_time_fairness_max"), "rho_mean": f.get("finish_time_fairness_mean"),
            "rho": f.get("finish_time_fairness")}


def _print(setup: scheduling.Setup, results: list[SimulationResult]) -> None:
    skipped = ", ".join(f"{n} {why}" for why, n in setup.workload.skipped.items()) or "none"
    console.print(f"{len(setup.workload.jobs):,} jobs (rows skipped: {skipped}); cluster of "
                  f"{setup.cluster.gpus:,} GPUs, {setup.sizing}")
    rows = [_row(r.policy, r.to_dict()) for r in results]
    console.print(render.table("Overall", rows, COLUMNS + FAIRNESS))
    for r in results:
        tenants = [_row(t["tenant"], t) for t in r.to_dict()["tenants"]]
        console.print(render.table(f"{r.policy}: per tenant (utilization = GPU-hours held / nominal GPU-hours; "
                                   "rho = completion times / those alone on its quota)",
                                   tenants, COLUMNS + ["rho"], ["tenant", *COLUMNS[1:], "rho"]))
        console.print(f"{r.policy}: {r.events:,} events in {r.wall_s:.1f} s "
                      f"({r.events / max(r.wall_s, 1e-9):,.0f} events/s)")


@app.command("export")
def export_cmd(
    engine: Annotated[Engine, typer.Argument(help="kueue (ClusterQueue/Cohort manifests) or slurm (sacctmgr)")],
    cluster: Annotated[str, typer.Option("--cluster", help="nodes as NODESxGPUS[:MODEL],... or a node-list CSV")],
    quotas: Annotated[Path, typer.Option("--quotas", help="tenants' quotas: YAML or a Helios per-day CSV")],
    at_s: Annotated[float, typer.Option(
        parser=SECONDS, help="the quotas in force this many seconds after the epoch")] = 0.0,
    epoch: Annotated[str | None, typer.Option(help="ISO time of second 0, to place dated quotas and loans")] = None,
    loans: LoansOpt = False,
    namespace: Annotated[str, typer.Option(help="namespace of the Kueue LocalQueues")] = "default",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write here instead of stdout")] = None,
) -> None:
    """Write the quotas (with the ledger's loans at that time) for an existing engine to enforce."""
    if out is not None:
        check_writable(out, "out")
    setup = scheduling.prepare_quotas(cluster, quotas, epoch=epoch, loans=_fleet().state() if loans else None)
    text = scheduling.export_quotas(setup, engine.value, at_s=at_s, namespace=namespace)
    if out is None:
        console.out(text, end="", highlight=False)
    else:
        write_text(out, text, "out")
        console.print(f"wrote {out}")

