"""``gpufleet simulate --jobs-out``: one row per job and policy, CSV or Parquet, adding up to the figures."""

from __future__ import annotations

import math

import pyarrow.csv
import pyarrow.parquet
import pytest

from gpufleet.scheduler.outcomes import job_outcomes
from gpufleet.services.job_output import write_jobs
from scheduler_builders import cluster, job, quota_change, scenario, tenant
from test_cli import run
from test_cli_simulate import simulate_json, trace  # noqa: F401 (trace is a fixture)

COLUMNS = ["policy", "job", "tenant", "gpus", "model", "arrival_s", "first_start_s", "finish_s", "wait_s",
           "queue_s", "guarantee_wait_s", "preemptions", "busy_gpu_s", "lost_gpu_s"]
READ = {".csv": lambda path: pyarrow.csv.read_csv(path, convert_options=pyarrow.csv.ConvertOptions(
    strings_can_be_null=True)), ".parquet": pyarrow.parquet.read_table}


def rows_of(path) -> tuple[list[str], list[dict]]:
    table = READ[path.suffix](path)
    return table.column_names, table.to_pylist()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_jobs_out_gives_a_row_per_job_and_policy_that_add_up_to_the_figures(trace, suffix):  # noqa: F811
    out = trace.parent / f"jobs{suffix}"
    figures = simulate_json(trace, "--cluster", "2x4:gpu", "--quotas", trace.parent / "quotas.yaml", "--compare",
                            "--reclaim-grace-s", "0", "--checkpoint-s", "0", "--restart-s", "0", "--jobs-out", out)
    columns, rows = rows_of(out)
    assert columns == COLUMNS
    assert len(rows) == figures["trace"]["jobs"] * len(figures["policies"]) == 3 * 3
    for f in figures["policies"]:
        mine = [r for r in rows if r["policy"] == f["policy"]]
        done = [r for r in mine if r["finish_s"] is not None]
        assert [r["job"] for r in mine] == ["philly-2", "philly-3", "philly-4"]  # the trace's order
        assert len(done) == f["finished"]
        assert sum(r["preemptions"] for r in mine) == f["preemptions"]
        assert sum(r["lost_gpu_s"] for r in mine) / 3600 == pytest.approx(f["lost_gpu_hours"], abs=1e-5)
        assert sum(r["busy_gpu_s"] for r in mine) / 3600 == pytest.approx(f["busy_gpu_hours"], abs=1e-5)
        assert sum(r["finish_s"] - r["arrival_s"] for r in done) / len(done) == pytest.approx(f["jct_mean_s"])
        assert sum(r["queue_s"] for r in done) / len(done) == pytest.approx(f["queue_mean_s"], abs=1e-5)
        assert max(r["guarantee_wait_s"] for r in mine) == pytest.approx(f["guarantee_wait_max_s"])


def test_the_row_of_a_preempted_job_by_hand(trace):  # noqa: F811
    """borrow (see test_cli_simulate): y's two 4-GPU jobs start at 0, one of them on x's idle node. At
    00:30 x reclaims node 0 (the lowest of equal nodes), so philly-2 is preempted (grace 0, no
    checkpoints: 1800 s x 4 GPUs lost); it runs again from 00:40, when x is done, to 01:40."""
    out = trace.parent / "jobs.csv"
    simulate_json(trace, "--cluster", "2x4:gpu", "--quotas", trace.parent / "quotas.yaml", "--policy", "borrow",
                  "--reclaim-grace-s", "0", "--checkpoint-s", "0", "--restart-s", "0", "--jobs-out", out)
    _, rows = rows_of(out)
    y2 = next(r for r in rows if r["job"] == "philly-2")
    assert y2 == {"policy": "borrow", "job": "philly-2", "tenant": "y", "gpus": 4, "model": "gpu",
                  "arrival_s": 0, "first_start_s": 0, "finish_s": 6000, "wait_s": 0,
                  "queue_s": 6000 - 1800 - 3600, "guarantee_wait_s": 0, "preemptions": 1,
                  "busy_gpu_s": 4 * (1800 + 3600), "lost_gpu_s": 4 * 1800}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_job_that_never_started_has_no_model_and_no_times(tmp_path, suffix):
    """a's quota falls to 0 at 5 for good: a2, arriving at 10, never starts (static)."""
    sc = scenario(cluster(1, 4), [tenant("a", nominal=4)], [job("a1", "a", at=0, run=1), job("a2", "a", at=10)],
                  quota_changes=[quota_change(5, "a", 0)])
    result = sc.simulate("static")
    assert math.isnan(result.jobs.first_start_s[1]) and result.jobs.model[1] is None
    write_jobs(tmp_path / f"jobs{suffix}", [result])
    _, rows = rows_of(tmp_path / f"jobs{suffix}")
    assert [(r["job"], r["model"], r["first_start_s"], r["finish_s"], r["wait_s"]) for r in rows] == [
        ("a1", "gpu", 0, 1, 0), ("a2", None, None, None, None)]


def test_job_outcomes_read_the_scheduler_records():
    sched = scenario(cluster(1, 4), [tenant("a", nominal=4)], [job("a1", "a", at=0, gpus=0.5, run=10)]).run("static")
    rows = job_outcomes(sched)
    assert (len(rows), rows.gpus.tolist(), rows.busy_gpu_s.tolist(), rows.model.tolist()) == (1, [0.5], [5.0], ["gpu"])


@pytest.mark.parametrize("name", ["jobs.txt", "jobs", "no-such-folder/jobs.csv"], ids=["txt", "no-extension", "no-folder"])
def test_an_unusable_jobs_out_is_refused_before_the_simulation(trace, name):  # noqa: F811
    proc = run("simulate", trace, "--jobs-out", trace.parent / name)
    assert proc.returncode == 3 and "jobs-out" in proc.stderr, proc.stderr
    assert "Overall" not in proc.stdout  # nothing was simulated
