"""``gpufleet sweep supply|quotas``: Monte Carlo risk and quota what-if, thin shells over services.sweeps."""

from __future__ import annotations

import os
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from gpufleet.cli import render
from gpufleet.cli.app import _fleet
from gpufleet.cli.render import console
from gpufleet.errors import InputError
from gpufleet.services.fleet import parse_date

sweep_app = typer.Typer(help="Monte Carlo sweeps: supply risk and claims (`supply`), quota what-if (`quotas`).")


class Output(StrEnum):
    table = "table"
    json = "json"


SamplesOpt = Annotated[int, typer.Option(min=1, max=10_000_000, help="samples (supply) or random configurations")]
SeedOpt = Annotated[int, typer.Option(min=0, max=2**63 - 1,
                                      help="the sweep's seed (sample i: SeedSequence(seed).spawn)")]
WorkersOpt = Annotated[int | None, typer.Option(min=1, max=1024, help="local processes (default: all cores)")]
DaskOpt = Annotated[str | None, typer.Option("--dask", help="local:N (a LocalCluster) or tcp://HOST:8786")]
BatchOpt = Annotated[int | None, typer.Option(min=1, max=100_000,
                                              help="samples per task (default: samples / (4 x workers))")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="results folder (Parquet, one row per sample); resumes")]
PlotOpt = Annotated[Path | None, typer.Option("--plot", help=(
    "write the figures here: FILE.html (one page), or FILE.png (one figure), FILE.NAME.png each when several "
    "(drawn by kaleido in Chromium: /usr/bin/chromium or BROWSER_PATH)"))]
FormatOpt = Annotated[Output, typer.Option("--format", "-f", help="table or json")]


class _Progress:
    """Samples done, rate and time left on stderr (a bar in a terminal, else nothing)."""

    def __init__(self, label: str):
        self.bars = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=render.errors,
                             transient=True, disable=not render.errors.is_terminal)
        self.task = None
        self.first: tuple[float, int] | None = None

    def __enter__(self) -> _Progress:
        self.bars.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.__exit__(*exc)

    def __call__(self, done: int, total: int) -> None:
        import time

        if self.task is None:
            self.task = self.bars.add_task("sweep", total=total, completed=done, rate="")
            self.first = (time.perf_counter(), done)
            return
        t0, d0 = self.first or (time.perf_counter(), 0)
        rate = (done - d0) / max(1e-9, time.perf_counter() - t0)
        self.bars.update(self.task, completed=done, rate=f"{rate:,.1f} samples/s")


def _execution(workers: int | None, dask: str | None) -> dict:
    if dask is not None and workers is not None:
        raise InputError("give --workers or --dask, not both", field="dask")
    return {"dask": dask} if dask is not None else {"workers": workers or os.cpu_count() or 1}


def _check_plot(plot: Path | None) -> None:
    """Refuse an unwritable --plot, or a .png without kaleido or a browser, before the sweep runs."""
    if plot is not None:
        from gpufleet.reports import sweeps as figures

        figures.check(plot)


def _wrote(paths: list[Path]) -> None:
    """The figure files written, on stderr (stdout may be JSON)."""
    render.errors.print(f"wrote {', '.join(str(p) for p in paths)}", highlight=False, soft_wrap=True)


def _sibling(out: Path | None, day: date) -> Path | None:
    return None if out is None else out.with_name(f"{out.stem}.known-{day.isoformat()}{out.suffix}")


@sweep_app.command("supply")
def supply_cmd(
    known_at: Annotated[str | None, typer.Option(help="the ledger as known at (and plans from) this date; "
                                                      "default: its latest")] = None,
    samples: SamplesOpt = 200,
    seed: SeedOpt = 0,
    config: Annotated[Path | None, typer.Option(help="distributions YAML (docs/sweeps.md)")] = None,
    policy: Annotated[str, typer.Option(help="hold, max-value or owner-first")] = "owner-first",
    horizon: Annotated[int, typer.Option(min=1, max=520, help="weeks (extended to reach every open claim)")] = 52,
    claim_dates: Annotated[bool, typer.Option(help="also sweep from each claim's date (as known then)")] = True,
    workers: WorkersOpt = None,
    dask: DaskOpt = None,
    batch: BatchOpt = None,
    out: OutOpt = None,
    plot: PlotOpt = None,
    fmt: FormatOpt = Output.table,
) -> None:
    """Supply risk: draw site slips, lot delays and redirections, failures and demand; re-plan each sample."""
    from gpufleet.planner.problem import PlanOptions
    from gpufleet.services.sweeps import runner, supply

    cfg = supply.read_config(config)
    how = _execution(workers, dask)
    _check_plot(plot)
    fleet = _fleet()
    day = parse_date(known_at, "known_at")
    state = fleet.state(day, known_at)
    start = day or state.as_of or date.today()
    head = fleet.head()
    plan = supply.date_sweeps(state, start, lambda at: fleet.state(at, at.isoformat()), with_claim_dates=claim_dates,
                              cfg=cfg, samples=samples, seed=seed, policy=policy,
                              options=PlanOptions(horizon_weeks=horizon), ledger={"seq": head.seq, "hash": head.hash})
    stores = [runner.Store(out if k == 0 else _sibling(out, at), sweep) if out is not None else None
              for k, (at, sweep) in enumerate(plan)]
    with _Progress(f"supply from {len(plan)} date{'s' if len(plan) > 1 else ''}") as progress:
        runs = runner.run_all([sweep for _, sweep in plan], stores=stores, batch=batch, progress=progress, **how)
    results = [supply.summary(sweep.inputs, ran.rows) | {"known_at": at.isoformat(), "ran": ran.ran,
                                                         "wall_s": round(ran.wall_s, 3), "where": ran.where,
                                                         "inputs_hash": sweep.inputs_hash}
               for (at, sweep), ran in zip(plan, runs)]
    main = results[0]
    claims = supply.claims_by_view(state, start, [(at, body) for (at, _), body in zip(plan, results)])
    if plot is not None:
        from gpufleet.reports import sweeps as figures

        today = [c for c in claims if c["known_at"] == start.isoformat()]
        _wrote(figures.write({"fan": figures.fan_chart(main, today), "claims": figures.claim_chart(claims)}, plot))
    if fmt is Output.json:
        render.print_json({"sweeps": results, "claims": claims})
        return
    _print_supply(main, claims)


def _report_week(dates: list[str], claims: list[dict]) -> int:
    """The week the table reads the active GPUs at: that of the latest claim deadline in the horizon
    (what the claims are about), else the horizon's last week."""
    deadlines = [c["deadline"] for c in claims if dates and dates[0] <= c["deadline"] <= dates[-1]]
    if not deadlines:
        return len(dates) - 1
    return max(i for i, day in enumerate(dates) if day <= max(deadlines))


def _print_supply(main: dict, claims: list[dict]) -> None:
    dates = main["entities"][0]["dates"] if main["entities"] else []
    week = _report_week(dates, claims)
    when = f"active P10, week of {dates[week]}" if dates else "active P10"
    console.print(render.table(
        f"Supply sweep from {main['known_at']}: {main['samples']} samples ({main['ran']} run now, {main['where']}, "
        f"{main['wall_s']} s); active GPUs serve demand",
        [{"entity": e["entity"], when: e["active_p10"][week], "P50": e["active_p50"][week],
          "P90": e["active_p90"][week], "idle GPU-weeks P50": e["idle_gpu_weeks"]["p50"],
          "value USD P50": e["value_usd"]["p50"], "lot delay days mean": e["lot_delay_days"]["mean"],
          "redirected GPUs mean": e["redirected_gpus"]["mean"]} for e in main["entities"]]))
    if claims:
        console.print(render.table("Claims: probability of being met", [
            {"claim": c["claim"], "known at": c["known_at"], "deadline": c["deadline"], "target": c["target"],
             "probability": c["probability"], "95% interval": f"{c['ci95'][0]:.3f}-{c['ci95'][1]:.3f}",
             "value P50": c.get("value_p50", c.get("decided", ""))} for c in claims]))


def _values(text: str, field: str, allow_none: bool = True) -> tuple:
    """Comma-separated numbers (and ``none`` where allowed)."""
    out: list = []
    for part in text.split(","):
        part = part.strip().lower()
        if allow_none and part in ("none", "inf", "unlimited"):
            out.append(None)
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise InputError(f"expected comma-separated numbers{' or none' if allow_none else ''}, got {part!r}",
                             field=field) from None
    return tuple(out)


@sweep_app.command("quotas")
def quotas_cmd(
    trace: Annotated[Path, typer.Argument(help="the trace file (Philly CSV or Alibaba 2023 pod list)")],
    trace_format: Annotated[str, typer.Option(help="philly or alibaba")] = "philly",
    cluster: Annotated[str | None, typer.Option(help="NODESxGPUS[:MODEL],...; default: sized from the trace")] = None,
    quotas_file: Annotated[Path | None, typer.Option("--quotas", help="the base quotas YAML (needs --cluster)")] = None,
    policies: Annotated[str, typer.Option(help="scheduling policies to try, comma-separated")] = "static,borrow,fair",
    mix: Annotated[str, typer.Option(help="re-split of nominal quotas: 0 base, 1 equal shares")] = "0,0.5",
    lending: Annotated[str, typer.Option(help="lending limits as shares of nominal (none: no limit)")] = "none,0.5",
    borrowing: Annotated[str, typer.Option(help="borrowing limits as multiples of nominal (none: none)")] = "none,1",
    random: Annotated[int | None, typer.Option(
        min=1, max=100_000, help="random search of N configurations in the ranges, not the grid")] = None,
    seed: SeedOpt = 0,
    max_guarantee_wait: Annotated[float | None, typer.Option(
        min=0, help="choose the best configuration with no tenant's guarantee wait over this, s")] = None,
    max_wait_p99: Annotated[float | None, typer.Option(min=0, help="and a p99 wait at most this, s")] = None,
    limit_jobs: Annotated[int | None, typer.Option(min=1, help="replay only the first N jobs")] = None,
    best_out: Annotated[Path | None, typer.Option(help="write the chosen quotas here (for export)")] = None,
    workers: WorkersOpt = None,
    dask: DaskOpt = None,
    batch: BatchOpt = None,
    out: OutOpt = None,
    plot: PlotOpt = None,
    fmt: FormatOpt = Output.table,
) -> None:
    """Quota what-if: replay the trace under each configuration; Pareto front and the best within limits."""
    import dataclasses

    from gpufleet.services import scheduling
    from gpufleet.services.outputs import check_writable, write_text
    from gpufleet.services.sweeps import quotas, runner

    if best_out is not None:
        check_writable(best_out, "best_out")
    how = _execution(workers, dask)
    _check_plot(plot)
    space = quotas.SearchSpace(tuple(p.strip() for p in policies.split(",") if p.strip()),
                               _values(mix, "mix", False), _values(lending, "lending"), _values(borrowing, "borrowing"),
                               random=random is not None)
    workload = scheduling.read_workload(trace, trace_format)
    if limit_jobs is not None:
        workload = dataclasses.replace(workload, jobs=workload.jobs[:limit_jobs])
    setup = scheduling.prepare(workload, cluster_spec=cluster, quotas=quotas_file)
    sweep = quotas.quota_sweep(setup, space, samples=random, seed=seed)
    store = runner.Store(out, sweep) if out is not None else None
    with _Progress("quota configurations") as progress:
        ran = runner.run(sweep, store=store, batch=batch, progress=progress, **how)
    front = quotas.pareto(ran.rows)
    chosen = quotas.best(ran.rows, max_guarantee_wait, max_wait_p99)
    if best_out is not None and chosen is not None:
        write_text(best_out, quotas.quotas_yaml(setup, chosen), "best_out")
    if plot is not None:
        from gpufleet.reports import sweeps as figures

        _wrote(figures.write({"pareto": figures.pareto_chart(ran.rows, front, chosen)}, plot))
    keys = ("sample", "policy", "mix", "lending", "borrowing", "status", *quotas.FIGURES)
    body = {"configurations": len(ran.rows), "ran": ran.ran, "wall_s": round(ran.wall_s, 3), "where": ran.where,
            "cluster": quotas.cluster_spec(setup), "rows": ran.rows, "pareto": [r["sample"] for r in front],
            "best": chosen and {k: chosen[k] for k in keys},
            "export": f"gpufleet export kueue --cluster {quotas.cluster_spec(setup)} --quotas {best_out}"
            if best_out is not None and chosen is not None else None}
    if fmt is Output.json:
        render.print_json(body)
        return
    console.print(render.table(f"Pareto front ({len(front)} of {len(ran.rows)} configurations; {ran.where})",
                               [{k: r[k] for k in keys} for r in front]))
    if chosen is None:
        console.print("no configuration meets the limits given")
    else:
        console.print(render.table(f"Best within the limits: #{chosen['sample']}, per tenant", [
            {"tenant": t, "nominal": chosen["nominal_gpus"][i], "utilization": chosen["tenant_utilization"][i],
             "guarantee wait max s": chosen["tenant_guarantee_wait_max_s"][i],
             "guarantee violation max s": chosen["tenant_guarantee_violation_max_s"][i],
             "jct p99 s": chosen["tenant_jct_p99_s"][i]} for i, t in enumerate(chosen["tenants"])]))
        if body["export"]:
            console.print(f"wrote {best_out}; export it with: {body['export']}")
