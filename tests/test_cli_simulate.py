"""End to end: ``gpufleet simulate`` and ``gpufleet export`` as real subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from test_cli import BASE_SCENARIO, ok, run

SHARED_TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
DOCUMENTED_KEYS = {"policy", "utilization", "jct_mean_s", "jct_p50_s", "jct_p99_s", "queue_mean_s", "makespan_s",
                   "preemptions", "lost_gpu_hours", "guarantee_violation_s", "jain_over_time", "jain_overlap_s",
                   "finish_time_fairness_max", "finish_time_fairness_mean", "tenants"}

# Two tenants on a 2-node cluster of 4 GPUs each; x is idle when y's burst arrives.
PHILLY = """\
timestamp,duration,num_gpus,gpu_time,cluster
2024-03-01 00:00:00,3600.0,4,14400.0,y
2024-03-01 00:00:00,3600.0,4,14400.0,y
2024-03-01 00:30:00,600.0,4,2400.0,x
"""
QUOTAS = "cohort: c\ntenants:\n  - {name: x, nominal: 4}\n  - {name: y, nominal: 4}\n"


@pytest.fixture
def trace(tmp_path) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(PHILLY)
    (tmp_path / "quotas.yaml").write_text(QUOTAS)
    return path


def simulate_json(*args: object, cwd: Path | None = None) -> dict:
    return json.loads(ok("simulate", *args, "--format", "json", cwd=cwd).stdout)


def test_compare_reports_every_policy_with_the_documented_keys(trace):
    out = simulate_json(trace, "--cluster", "2x4:gpu", "--quotas", trace.parent / "quotas.yaml", "--compare",
                        "--reclaim-grace-s", "0", "--checkpoint-s", "0", "--restart-s", "0")
    by_policy = {p["policy"]: p for p in out["policies"]}
    assert set(by_policy) == {"static", "borrow", "fair"}
    for figures in by_policy.values():
        assert DOCUMENTED_KEYS <= set(figures)
        assert {t["tenant"] for t in figures["tenants"]} == {"x", "y"}
    # static: y's second job waits the hour; borrow: it runs on x's idle node until x reclaims at 00:30
    # and loses its 30 minutes (no checkpoints), restarting at 00:40 when x is done.
    assert by_policy["static"]["jct_mean_s"] == pytest.approx((3600 + 7200 + 600) / 3)
    assert by_policy["borrow"]["preemptions"] == 1
    assert by_policy["borrow"]["jct_mean_s"] == pytest.approx((3600 + 2400 + 3600 + 600) / 3)
    assert by_policy["borrow"]["lost_gpu_hours"] == pytest.approx(4 * 0.5)
    assert out["cluster"]["gpus"] == 8
    # finish-time fairness: alone on its 4 GPUs y runs as under static (3600 + 7200 s of completion
    # times); under borrow 3600 + 6000. x runs at once every way.
    assert by_policy["static"]["finish_time_fairness_max"] == by_policy["static"]["finish_time_fairness_mean"] == 1
    rho = {t["tenant"]: t["finish_time_fairness"] for t in by_policy["borrow"]["tenants"]}
    assert rho == {"x": 1.0, "y": pytest.approx(9600 / 10800, abs=1e-6)}


def test_without_cluster_and_quotas_the_cluster_is_sized_from_the_trace(trace):
    out = simulate_json(trace, "--policy", "static")
    assert "sized from the trace" in out["cluster"]["sizing"]
    # y offers 2 x 4 GPUs over the 1-hour span: 8 / 0.8 = 10, rounded up to 2 nodes of 8;
    # x offers 0.67 GPUs, but its largest job is 4, so 4, rounded up to 1 node.
    assert out["cluster"]["gpus"] == 24
    assert out["policies"][0]["policy"] == "static"


def test_table_output_names_the_policies_and_tenants(trace):
    text = ok("simulate", trace, "--compare").stdout
    assert all(word in text for word in ("static", "borrow", "fair", "Overall", "per tenant"))


@pytest.mark.parametrize("args, field", [
    pytest.param(["--policy", "lottery"], "policy", id="unknown-policy"),
    pytest.param(["--trace-format", "slurm"], "trace-format", id="unknown-format"),
    pytest.param(["--cluster", "2x:gpu"], "cluster", id="bad-cluster"),
    pytest.param(["--quotas", "quotas.yaml"], "cluster", id="quotas-without-cluster"),
], )
def test_bad_options_are_refused_with_the_field(trace, args, field):
    proc = run("simulate", trace, *args, cwd=trace.parent)
    assert proc.returncode in (2, 3), proc.stderr
    assert field in proc.stderr


def test_a_bad_row_names_its_line_or_is_skipped_and_counted(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(PHILLY + "2024-03-01 01:00:00,ten,1,10.0,x\n")
    proc = run("simulate", path)
    assert proc.returncode == 3 and "bad.csv:5" in proc.stderr and "duration" in proc.stderr
    out = simulate_json(path, "--skip-bad-rows")
    assert sum(out["trace"]["skipped_rows"].values()) == 1 and out["trace"]["jobs"] == 3


def test_a_job_no_quota_could_ever_hold_is_refused(trace):
    proc = run("simulate", trace, "--cluster", "2x4:gpu", "--quotas", "quotas.yaml", "--policy", "static",
               "--cluster", "1x2:gpu", cwd=trace.parent)
    assert proc.returncode == 3 and "never" in proc.stderr


def test_ledger_loans_become_quota_transfers(tmp_path):
    """The CLI ledger lends 40 H100 from a to b from 2024-04-01 to 2024-06-01. Under static, b (nominal 4)
    can run a 40-GPU job only during the loan: submitted on 2024-03-31, it starts on 04-01."""
    db = tmp_path / "ledger.db"
    (tmp_path / "scenario.yaml").write_text(BASE_SCENARIO)
    ok("init", db=db)
    ok("load", tmp_path / "scenario.yaml", db=db)
    (tmp_path / "quotas.yaml").write_text("tenants:\n  - {name: a, nominal: 100}\n  - {name: b, nominal: 4}\n")
    (tmp_path / "trace.csv").write_text("timestamp,duration,num_gpus,gpu_time,cluster\n"
                                        "2024-03-31 00:00:00,3600.0,40,144000.0,b\n"
                                        "2024-03-31 00:00:00,60.0,1,60.0,a\n")
    args = ["simulate", "trace.csv", "--cluster", "13x8:h100", "--quotas", "quotas.yaml", "--policy", "static",
            "--format", "json"]
    refused = run(*args, db=db)
    assert refused.returncode == 3 and "never" in refused.stderr  # without the loan b can never hold 40
    out = json.loads(ok(*args, "--loans", db=db).stdout)
    b = next(t for t in out["policies"][0]["tenants"] if t["tenant"] == "b")
    assert b["jct_mean_s"] == pytest.approx(86400 + 3600)


def test_export_kueue_and_slurm(tmp_path):
    (tmp_path / "quotas.yaml").write_text(
        "cohort: shared\ntenants:\n  - {name: tesla, nominal: 64, lending_limit: 32, weight: 2}\n"
        "  - {name: xai, nominal: 32, borrowing_limit: 16}\nchanges:\n  - {at_s: 86400, tenant: xai, nominal: 48}\n")
    docs = list(yaml.safe_load_all(ok("export", "kueue", "--cluster", "12x8:H100", "--quotas", "quotas.yaml",
                                      "--at-s", "90000", cwd=tmp_path).stdout))
    queues = {d["metadata"]["name"]: d for d in docs if d and d["kind"] == "ClusterQueue"}
    xai = queues["xai"]["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]
    assert xai["nominalQuota"] == "48" and xai["borrowingLimit"] == "16"  # the change at 1 day is in force
    slurm = ok("export", "slurm", "--cluster", "12x8:H100", "--quotas", "quotas.yaml", cwd=tmp_path).stdout
    assert "GrpTRES=gres/gpu:h100=96" in slurm and "GrpTRES=gres/gpu:h100=48" in slurm


@pytest.mark.skipif(not SHARED_TRACES.is_dir(), reason="../shared/traces is absent")
def test_alibaba_slice_runs_with_fractional_gpus(tmp_path):
    lines = (SHARED_TRACES / "alibaba-2023" / "openb_pod_list_default.csv").read_text().splitlines()[:400]
    (tmp_path / "pods.csv").write_text("\n".join(lines) + "\n")
    out = simulate_json(tmp_path / "pods.csv", "--trace-format", "alibaba", "--policy", "borrow")
    figures = out["policies"][0]
    assert figures["jobs"] == out["trace"]["jobs"] > 0 and figures["utilization"] > 0
    assert out["trace"]["skipped_rows"]  # CPU-only pods are counted, not run
