"""Sweeps (docs/sweeps.md): determinism across executors, a killed Dask worker, resume, a closed-form
claim probability, config errors, the quota search. One LocalCluster of 2 workers for the module."""

from __future__ import annotations

import math
import os
import signal
from datetime import date
from pathlib import Path
from statistics import NormalDist

import pytest

from gpufleet.errors import InputError
from gpufleet.services.planning import scenario_state
from gpufleet.services.sweeps import runner, supply

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "src" / "gpufleet" / "examples" / "h100-2024.yaml"
ONE_SITE = Path(__file__).resolve().parent / "data" / "one-site.yaml"
START = date(2024, 6, 4)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def example_sweep():
    """24 samples of the bundled example as known on 2024-06-04 (both claims open, Cortex still ahead)."""
    state = scenario_state(EXAMPLE, START)
    return supply.supply_sweep(state, START, samples=24, seed=11)


@pytest.fixture(scope="module")
def serial_rows(example_sweep):
    return runner.summary_rows(runner.run(example_sweep, batch=3).rows)


def test_the_same_rows_serially_on_two_processes_and_on_a_local_cluster(example_sweep, serial_rows, client):
    assert [r["sample"] for r in serial_rows] == list(range(24))
    assert all(r["status"] == "ok" for r in serial_rows)
    assert len({str(r["claim_actual"]) for r in serial_rows}) > 1, "the samples must differ from one another"
    pool = runner.run(example_sweep, workers=2, batch=3)
    assert pool.where == "2 local processes"
    assert runner.summary_rows(pool.rows) == serial_rows
    dask = runner.run(example_sweep, dask=client, batch=5)
    assert runner.summary_rows(dask.rows) == serial_rows


def test_dask_batches_are_sized_by_the_cluster_s_workers(example_sweep, serial_rows):
    """samples / (4 x workers) with the workers the scheduler has: 1 here (24 / 4 = 6 per task), not a guess."""
    run = runner.run(example_sweep, dask="local:1")
    assert run.where == "Dask local:1" and run.batches == 4
    assert runner.summary_rows(run.rows) == serial_rows


def test_any_sample_drawn_alone_is_the_same(example_sweep, serial_rows):
    context = supply.prepare(example_sweep.inputs)
    for i in (17, 3):  # out of order, in a fresh context
        assert supply.sample(context, 11, i) | {"sample": i, "seed": 11} == serial_rows[i]


def test_a_worker_killed_mid_sweep_changes_nothing(example_sweep, serial_rows, client):
    pids = client.run(os.getpid)
    killed = []

    def kill_once(done: int, total: int) -> None:
        if done and not killed:  # the first batch is back: the others are queued or running
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    run = runner.run(example_sweep, dask=client, batch=1, progress=kill_once)
    assert killed
    assert runner.summary_rows(run.rows) == serial_rows
    assert client.run(os.getpid) != pids  # the nanny started a new worker


def test_an_interrupted_sweep_resumes_with_only_the_rest(example_sweep, serial_rows, tmp_path):
    out = tmp_path / "results.parquet"
    with pytest.raises(runner.SweepInterrupted):
        runner.run(example_sweep, store=runner.Store(out, example_sweep), batch=4, stop_after_batches=2)
    assert len(list(out.glob("part-*.parquet"))) == 2
    rest = runner.run(example_sweep, store=runner.Store(out, example_sweep), batch=4)
    assert rest.ran == 24 - 8
    assert runner.summary_rows(rest.rows) == serial_rows
    again = runner.run(example_sweep, store=runner.Store(out, example_sweep), batch=4)
    assert again.ran == 0 and runner.summary_rows(again.rows) == serial_rows
    assert {r["inputs_hash"] for r in again.rows} == {example_sweep.inputs_hash}
    assert all(r["code_version"].startswith("0.") for r in again.rows)


@pytest.fixture(scope="module")
def date_sweeps(tmp_path_factory):
    """8 samples of the bundled example from 2024-06-04 and from each claim's date (2024-04-23, 2024-04-30),
    each with the ledger as known then, as `gpufleet sweep supply` builds them."""
    from gpufleet.services.fleet import FleetService

    service = FleetService.open(str(tmp_path_factory.mktemp("ledger") / "fleet.db"), create=True)
    service.load(EXAMPLE)
    state = service.state(START, START.isoformat())
    plan = supply.date_sweeps(state, START, lambda at: service.state(at, at.isoformat()), samples=8, seed=5)
    assert [at for at, _ in plan] == [START, date(2024, 4, 23), date(2024, 4, 30)]
    return state, plan


@pytest.fixture(scope="module")
def per_date_rows(date_sweeps):
    """What the claim-date sweeps gave when each ran alone, one after the other, serially."""
    return [runner.summary_rows(runner.run(sweep).rows) for _, sweep in date_sweeps[1]]


def test_claim_date_sweeps_in_one_submission_give_each_date_s_rows(date_sweeps, per_date_rows, client):
    state, plan = date_sweeps
    sweeps = [sweep for _, sweep in plan]
    assert len({s.inputs_hash for s in sweeps}) == 3 and all(len({str(r["claim_actual"]) for r in rows}) > 1
                                                           for rows in per_date_rows)
    seen = []
    pool = runner.run_all(sweeps, workers=2, batch=3, progress=lambda done, total: seen.append((done, total)))
    assert [runner.summary_rows(r.rows) for r in pool] == per_date_rows
    assert [r.batches for r in pool] == [3, 3, 3] and {r.where for r in pool} == {"2 local processes"}
    assert seen[0] == (0, 24) and seen[-1] == (24, 24) and len(seen) == 10  # one bar over every date
    dask = runner.run_all(sweeps, dask=client)
    assert [runner.summary_rows(r.rows) for r in dask] == per_date_rows
    claims = supply.claims_by_view(state, START, [(at, supply.summary(s.inputs, r.rows))
                                                  for (at, s), r in zip(plan, pool)])
    assert [(c["claim"], c["known_at"]) for c in claims] == [
        ("tesla-10b-ai-spend-2024", "2024-06-04"), ("tesla-85k-h100-2024", "2024-06-04"),
        ("tesla-85k-h100-2024", "2024-04-23"), ("tesla-10b-ai-spend-2024", "2024-04-30")]


def test_an_interrupted_multi_date_sweep_resumes_with_only_what_each_date_lacks(date_sweeps, per_date_rows, tmp_path):
    sweeps = [sweep for _, sweep in date_sweeps[1]]

    def stores():
        return [runner.Store(tmp_path / f"results-{k}.parquet", sweep) for k, sweep in enumerate(sweeps)]

    with pytest.raises(runner.SweepInterrupted):  # batches of 4 in order: date 0's two, then date 1's first
        runner.run_all(sweeps, stores=stores(), batch=4, stop_after_batches=3)
    assert [len(list((tmp_path / f"results-{k}.parquet").glob("part-*"))) for k in range(3)] == [2, 1, 0]
    rest = runner.run_all(sweeps, stores=stores(), workers=2, batch=4)
    assert [r.ran for r in rest] == [0, 4, 8]
    assert [runner.summary_rows(r.rows) for r in rest] == per_date_rows
    again = runner.run_all(sweeps, stores=stores(), workers=2)
    assert [r.ran for r in again] == [0, 0, 0] and [runner.summary_rows(r.rows) for r in again] == per_date_rows


def test_a_results_folder_of_another_sweep_is_refused(example_sweep, tmp_path):
    out = tmp_path / "results.parquet"
    runner.run(example_sweep, store=runner.Store(out, example_sweep), batch=12)
    other = runner.Sweep("supply", example_sweep.inputs, example_sweep.inputs_hash, 12, 24)
    with pytest.raises(InputError) as err:
        runner.run(other, store=runner.Store(out, other))
    assert err.value.field == "out" and "another sweep" in err.value.message


def test_a_claim_probability_with_a_closed_form_is_within_its_interval():
    """One site online on day 63; a slip of 0 (prob 1 - p) or rint(LogNormal(ln 40, 0.5)) days. The GPUs
    serve two weeks (burn-in) after the first week starting on or after the online day, so the claim
    (deadline in week 18) is met iff online day <= 7 x (18 - 2) = 112, i.e. slip <= 49 days."""
    state = scenario_state(ONE_SITE, date(2024, 1, 1))
    p, median, sigma = 0.8, 40.0, 0.5
    cfg = supply.config_from({"site_slip": {"sites": {"dc": {"p_slip": p, "median_days": median, "sigma": sigma}}}})
    sweep = supply.supply_sweep(state, date(2024, 1, 1), cfg=cfg, samples=400, seed=5, policy="hold")
    rows = runner.run(sweep).rows
    assert all(r["claim_met"] == [r["site_online_day"][0] <= 112] for r in rows)
    truth = (1 - p) + p * NormalDist().cdf((math.log(49.5) - math.log(median)) / sigma)
    claim = supply.summary(sweep.inputs, rows)["claims"][0]
    lo, hi = claim["ci95"]
    assert lo <= truth <= hi, (claim, truth)
    assert hi - lo < 0.1 and 0.5 < claim["probability"] < 0.95


def test_the_wilson_interval():
    assert supply.wilson(0, 10)[0] == 0.0
    lo, hi = supply.wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)


@pytest.mark.parametrize("data, field", [
    ({"site_slip": {"prior": {"p_slip": 1.5}}}, "site_slip.prior.p_slip"),
    ({"lot_delay": {"fit": "guess"}}, "lot_delay.fit"),
    ({"failures": {"gpus": -1}}, "failures.gpus"),
    ({"demand": {"tesla": {"low": "many"}}}, "demand.tesla.low"),
    ({"unknown": 1}, "unknown"),
])
def test_config_errors_name_the_field(data, field):
    with pytest.raises(InputError) as err:
        supply.config_from(data)
    assert err.value.field == field


def test_a_config_file_error_names_its_line(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("site_slip:\n  prior:\n    sigma: 0\n")
    with pytest.raises(InputError) as err:
        supply.read_config(path)
    assert err.value.field == "site_slip.prior.sigma" and err.value.location.endswith(":3")


def test_an_unknown_demand_entity_and_a_fair_policy_are_refused():
    state = scenario_state(ONE_SITE, date(2024, 1, 1))
    with pytest.raises(InputError, match="unknown entity"):
        supply.supply_sweep(state, date(2024, 1, 1), cfg=supply.config_from({"demand": {"nobody": {}}}))
    with pytest.raises(InputError) as err:
        supply.supply_sweep(state, date(2024, 1, 1), policy="fair")
    assert err.value.field == "policy"


def test_a_sample_costs_less_than_a_plain_plan_and_rebuilds_nothing(example_sweep):
    from gpufleet.planner import reuse

    context = supply.prepare(example_sweep.inputs)
    built = [id(m) for m, _r in context.stages]
    supply.sample(context, 11, 0)
    assert [id(m) for m, _r in context.stages] == built
    model, x = context.solve(example_sweep.inputs.problem)  # the base problem: the base plan's value
    assert model is context.stages[-1][0] and len(x) == model.A.shape[1]
    assert reuse.SWEEP_POLICIES == ("hold", "max-value", "owner-first")


def test_the_quota_search_gives_a_front_and_a_best_within_the_limit(tmp_path):
    from gpufleet.scheduler import Cluster, Job, NodePool, Tenant, TenantQuota, Workload
    from gpufleet.services.scheduling import Setup
    from gpufleet.services.sweeps import quotas

    jobs = tuple(Job(f"j{i}", "ab"[i % 2], 60.0 * i, 4000, 900.0 + 300 * (i % 3)) for i in range(40))
    cluster = Cluster((NodePool("gpu", 2, 8),))
    tenants = [Tenant("a", {"gpu": TenantQuota(8.0)}), Tenant("b", {"gpu": TenantQuota(8.0)})]
    setup = Setup(Workload(jobs=jobs), cluster, tenants, [], "given")
    space = quotas.SearchSpace(policies=("static", "borrow"), mix=(0.0,), lending=(None, 0.5), borrowing=(None,))
    sweep = quotas.quota_sweep(setup, space)
    serial = runner.run(sweep).rows
    assert runner.summary_rows(runner.run(sweep, workers=2, batch=1).rows) == runner.summary_rows(serial)
    assert [r["policy"] for r in serial] == ["static", "static", "borrow", "borrow"]
    front = quotas.pareto(serial)
    assert front and all(r["status"] == "ok" for r in front)
    chosen = quotas.best(serial, max_guarantee_wait_s=60.0)
    assert chosen is not None and chosen["worst_guarantee_wait_s"] <= 60.0
    assert chosen["utilization"] == max(r["utilization"] for r in serial if r["worst_guarantee_wait_s"] <= 60.0)
    path = tmp_path / "best.yaml"
    path.write_text(quotas.quotas_yaml(setup, chosen))
    from gpufleet.services import scheduling

    text = scheduling.export_quotas(scheduling.prepare_quotas(quotas.cluster_spec(setup), path), "kueue")
    assert "kind: ClusterQueue" in text and "nominalQuota" in text


# -- pictures: PNG from the CLI (--plot FILE.png) ---------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk, after checking the file's signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def tiny_quota_rows() -> tuple[list[dict], list[dict], dict | None]:
    from gpufleet.scheduler import Cluster, Job, NodePool, Tenant, TenantQuota, Workload
    from gpufleet.services.scheduling import Setup
    from gpufleet.services.sweeps import quotas

    jobs = tuple(Job(f"j{i}", "ab"[i % 2], 60.0 * i, 4000, 900.0 + 300 * (i % 3)) for i in range(20))
    setup = Setup(Workload(jobs=jobs), Cluster((NodePool("gpu", 2, 8),)),
                  [Tenant("a", {"gpu": TenantQuota(8.0)}), Tenant("b", {"gpu": TenantQuota(8.0)})], [], "given")
    space = quotas.SearchSpace(policies=("static", "borrow"), mix=(0.0,), lending=(None,), borrowing=(None,))
    rows = runner.run(quotas.quota_sweep(setup, space)).rows
    return rows, quotas.pareto(rows), quotas.best(rows)


def test_the_fan_and_pareto_charts_are_drawn_as_png_in_chromium(example_sweep, serial_rows, tmp_path):
    pytest.importorskip("kaleido", reason="PNG needs kaleido (the sweeps and test extras install it)")
    from test_report import chromium

    from gpufleet.reports import png
    from gpufleet.reports import sweeps as figures

    browser = chromium()  # skips with the reason when Debian's Chromium is absent and cannot be installed
    assert png.find_browser() is not None, f"{browser} exists but gpufleet did not find a browser"
    summary = supply.summary(example_sweep.inputs, serial_rows) | {"known_at": START.isoformat()}
    rows, front, chosen = tiny_quota_rows()
    wrote = figures.write({"fan": figures.fan_chart(summary, summary["claims"]),
                           "pareto": figures.pareto_chart(rows, front, chosen)}, tmp_path / "risk.png")
    assert wrote == [tmp_path / "risk.fan.png", tmp_path / "risk.pareto.png"]
    for path in wrote:
        assert png_size(path) == (png.WIDTH_PX, png.HEIGHT_PX)
        assert path.stat().st_size > 20_000, f"{path} is too small to hold a drawn chart"
    one = figures.write({"pareto": figures.pareto_chart(rows, front, chosen)}, tmp_path / "front.png")
    assert one == [tmp_path / "front.png"] and png_size(one[0]) == (png.WIDTH_PX, png.HEIGHT_PX)


@pytest.fixture
def no_browser(monkeypatch, tmp_path):
    """No Chrome or Chromium anywhere gpufleet looks."""
    from gpufleet.reports import png

    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setattr(png, "DEBIAN_CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))


def quota_command(tmp_path: Path, *more: str):
    from cli_runner import invoke

    trace = tmp_path / "trace.csv"
    trace.write_text("timestamp,duration,num_gpus,gpu_time,cluster\n2024-03-01 00:00:00,3600.0,4,14400.0,y\n"
                     "2024-03-01 00:30:00,600.0,4,2400.0,x\n")
    return invoke("sweep", "quotas", trace, "--policies", "static", "--mix", "0", "--lending", "none",
                  "--borrowing", "none", "--workers", "1", *more)


def test_a_png_without_a_browser_is_refused_before_the_sweep_naming_plot(no_browser, tmp_path):
    pytest.importorskip("kaleido", reason="without kaleido the refusal names the package instead")
    from cli_runner import refused

    result = quota_command(tmp_path, "--plot", tmp_path / "front.png", "--out", tmp_path / "results.parquet")
    refused(result, 3, "--plot", "Chromium", ".html", "BROWSER_PATH")
    assert not (tmp_path / "results.parquet").exists(), "the sweep ran before the refusal"
    assert quota_command(tmp_path, "--plot", tmp_path / "front.html").code == 0  # HTML needs no browser
    assert (tmp_path / "front.html").read_text().count("plotly") > 1


def test_a_browser_path_that_is_not_a_browser_is_refused_naming_it(no_browser, monkeypatch, tmp_path):
    pytest.importorskip("kaleido", reason="without kaleido the refusal names the package instead")
    from cli_runner import refused

    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "nothing-here"))
    refused(quota_command(tmp_path, "--plot", tmp_path / "front.png"), 3, "BROWSER_PATH", "nothing-here")


def test_a_png_without_kaleido_is_refused_naming_the_package(monkeypatch, tmp_path):
    import builtins

    from cli_runner import refused

    real_import = builtins.__import__

    def without_kaleido(name, *args, **kwargs):
        if name == "kaleido" or name.startswith("kaleido."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_kaleido)
    refused(quota_command(tmp_path, "--plot", tmp_path / "front.png"), 3, "--plot", "kaleido", ".html")


@pytest.mark.parametrize("draws_on_call, ok", [(1, True), (2, True), (None, False)],
                         ids=["first-try", "drawn-again", "never-drawn"])
def test_a_png_kaleido_did_not_draw_is_drawn_again_or_refused(monkeypatch, tmp_path, draws_on_call, ok):
    """kaleido reports a figure it failed to draw instead of raising: gpufleet checks the files."""
    kaleido = pytest.importorskip("kaleido", reason="PNG needs kaleido (the sweeps and test extras install it)")
    import plotly.graph_objects as go

    from gpufleet.reports import png

    calls = []

    def fake(specs, kopts):
        calls.append([s["path"] for s in specs])
        if len(calls) == draws_on_call:
            for spec in specs:
                Path(spec["path"]).write_bytes(b"\x89PNG drawn")
        return ("a figure timed out",)

    monkeypatch.setattr(png, "find_browser", lambda: Path("/usr/bin/true"))
    monkeypatch.setattr(kaleido, "write_fig_from_object_sync", fake)
    target = tmp_path / "front.png"
    target.write_bytes(b"an old file")  # must not pass for one drawn now
    if ok:
        assert png.write({"front": go.Figure()}, target) == [target] and target.read_bytes() == b"\x89PNG drawn"
        assert len(calls) == draws_on_call
    else:
        with pytest.raises(InputError, match="did not draw .*front.png.*a figure timed out.*html"):
            png.write({"front": go.Figure()}, target)
        assert len(calls) == 2 and not target.exists()
