"""Every quantity a simulation takes in has an upper bound (docs/scheduling.md, "Bounds"), checked where
it enters: a trace row past it is a bad row naming ``file:line`` and the column, a cluster or option
past it a refusal naming the option; never memory exhausted, an OverflowError or an internal error."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cli_runner import invoke, refused
from gpufleet.errors import InputError
from gpufleet.scheduler.limits import MAX_GPUS
from gpufleet.scheduler.model import Job
from gpufleet.scheduler.sizing import size_from_workload
from gpufleet.services import scheduling
from gpufleet.services.traces import read_alibaba, read_cluster, read_philly, read_quota_csv, read_quotas
from test_cli import run

PHILLY_HEADER = "timestamp,duration,num_gpus,gpu_time,cluster"
ALIBABA_HEADER = ("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
                  "creation_time,deletion_time,scheduled_time")
PHILLY = f"{PHILLY_HEADER}\n2024-03-01 00:00:00,3600.0,4,14400.0,y\n2024-03-01 00:00:00,3600.0,4,14400.0,y\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- trace rows ------------------------------------------------------------------------------

PHILLY_TOO_LARGE = [  # (row, column, words)
    pytest.param("2024-03-01 00:30:00,600.0,1000000000000,1.0,x", "num_gpus", "at most 1,000,000", id="gpus-1e12"),
    pytest.param("2024-03-01 00:30:00,600.0,1000000000000000000000000000000,1.0,x", "num_gpus", "at most",
                 id="gpus-1e30"),
    pytest.param("2024-03-01 00:30:00,600.0,9223372036854775808,1.0,x", "num_gpus", "at most", id="gpus-2^63"),
    pytest.param("2024-03-01 00:30:00,600.0,1000001,1.0,x", "num_gpus", "at most", id="gpus-one-over"),
    pytest.param("2024-03-01 00:30:00,1e30,1,1.0,x", "duration", "at most 10,000,000,000", id="duration-1e30"),
    pytest.param("2024-03-01 00:30:00,1e308,1,1.0,x", "duration", "at most", id="duration-1e308"),
    pytest.param("2024-03-01 00:30:00,600.0,1,1e17,x", "gpu_time", "at most", id="gpu-time-1e17"),
    pytest.param("9999-03-01 00:30:00,600.0,1,1.0,x", "timestamp", "2286-11-20", id="year-9999"),
    pytest.param("1960-03-01 00:30:00,600.0,1,1.0,x", "timestamp", "1970-01-01", id="before-1970"),
]


@pytest.mark.parametrize(("row", "column", "words"), PHILLY_TOO_LARGE)
def test_a_philly_value_past_its_bound_is_a_bad_row(tmp_path, row, column, words):
    path = write(tmp_path, "p.csv", f"{PHILLY}{row}\n")
    with pytest.raises(InputError, match=words) as exc:
        read_philly(path)
    assert (exc.value.location, exc.value.field) == ("p.csv:4", column)
    assert read_philly(path, skip_bad_rows=True).skipped == {f"bad {column}": 1}


def test_a_philly_job_at_the_bound_is_read(tmp_path):
    path = write(tmp_path, "p.csv", f"{PHILLY}2286-11-20 17:46:40,1e10,{MAX_GPUS},1e16,x\n")
    assert max(j.gpus for j in read_philly(path).jobs) == MAX_GPUS


@pytest.mark.parametrize(("values", "column"), [
    pytest.param({"num_gpu": "1000000000000"}, "num_gpu", id="gpus-1e12"),
    pytest.param({"cpu_milli": "1e13"}, "cpu_milli", id="cpu-1e13"),
    pytest.param({"memory_mib": "inf"}, "memory_mib", id="memory-inf"),
    pytest.param({"creation_time": "1e11"}, "creation_time", id="created-1e11"),
    pytest.param({"deletion_time": "1e300"}, "deletion_time", id="deleted-1e300"),
])
def test_an_alibaba_value_past_its_bound_is_a_bad_row(tmp_path, values, column):
    pod = dict(zip(ALIBABA_HEADER.split(","), "p1,1000,1024,1,500,,LS,Running,0,100,10".split(",")))
    row = ",".join((pod | values).values())
    with pytest.raises(InputError) as exc:
        read_alibaba(write(tmp_path, "pods.csv", f"{ALIBABA_HEADER}\n{row}\n"))
    assert (exc.value.location, exc.value.field) == ("pods.csv:2", column)


# --- clusters, quotas, sizing -----------------------------------------------------------------

@pytest.mark.parametrize("spec", [
    pytest.param("1000000000x8", id="1e9-nodes"),
    pytest.param("1" + "0" * 5000 + "x8", id="5000-digit-nodes"),
    pytest.param("8x" + "9" * 30, id="30-digit-gpus"),
    pytest.param("1000001x1", id="one-over"),
    pytest.param("600000x1:a,600000x1:b", id="pools-add-up-past-it"),
])
def test_a_cluster_spec_past_the_bound_is_refused(spec):
    with pytest.raises(InputError, match="1,000,000") as exc:
        read_cluster(spec)
    assert exc.value.field == "cluster"


def test_a_cluster_at_the_bound_is_built():
    assert read_cluster("125000x8").gpus == MAX_GPUS


@pytest.mark.parametrize("text", [pytest.param("a\x00b", id="nul"), pytest.param("x" * 5000, id="long-name")])
def test_a_cluster_spec_no_file_can_have_is_a_bad_part(text):
    with pytest.raises(InputError, match="bad part") as exc:
        read_cluster(text)
    assert exc.value.field == "cluster"


def test_a_node_list_past_the_bound_is_refused(tmp_path):
    nodes = write(tmp_path, "nodes.csv", "sn,cpu_milli,memory_mib,gpu,model\nn1,1,1,600000,A\nn2,1,1,600000,A\n")
    with pytest.raises(InputError, match="1,000,000") as exc:
        read_cluster(nodes)
    assert exc.value.field == "cluster"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\nn1,1,1,10000000,A\n")
    with pytest.raises(InputError) as exc:
        read_cluster(nodes)
    assert (exc.value.location, exc.value.field) == ("nodes.csv:2", "gpu")


def test_a_cluster_sized_from_the_trace_past_the_bound_is_refused():
    jobs = [Job(id=t, tenant=t, arrival_s=0, milli_gpus=600_000_000, service_s=1) for t in "ab"]
    with pytest.raises(InputError, match="sized from the trace would hold 1,500,000 GPUs") as exc:
        size_from_workload(jobs)
    assert exc.value.field == "cluster"


@pytest.mark.parametrize(("body", "field"), [
    pytest.param("tenants:\n  - {name: a, nominal: 1000000000000000000000000000000}\n", "tenants[0].nominal",
                 id="nominal-1e30"),
    pytest.param("tenants:\n  - {name: a, nominal: 9223372036854775808}\n", "tenants[0].nominal", id="nominal-2^63"),
    pytest.param("tenants:\n  - {name: a, nominal: 1" + "0" * 400 + "}\n", "tenants[0].nominal",
                 id="nominal-400-digits"),
    pytest.param("tenants:\n  - {name: a, nominal: 1, borrowing_limit: 10000000}\n", "tenants[0].borrowing_limit",
                 id="borrowing-limit-1e7"),
    pytest.param("tenants:\n  - {name: a, nominal: 1, weight: 1000000000.5}\n", "tenants[0].weight", id="weight-1e9"),
    pytest.param("tenants:\n  - {name: a, nominal: 1, weight: 1.0e-300}\n", "tenants[0].weight", id="weight-1e-300"),
    pytest.param("tenants:\n  - {name: a, nominal: 1}\nchanges:\n  - {at_s: 100000000000, tenant: a, nominal: 2}\n",
                 "changes[0].at_s", id="at-s-1e11"),
])
def test_a_quota_past_its_bound_names_the_field_and_line(tmp_path, body, field):
    with pytest.raises(InputError, match="at most|at least") as exc:
        read_quotas(write(tmp_path, "q.yaml", body), read_cluster("2x8"))
    assert exc.value.field == field and exc.value.location.startswith("q.yaml:")


@pytest.mark.parametrize(("row", "field"), [
    pytest.param("2020-04-01,10000000", "a", id="gpus-1e7"),
    pytest.param("2300-04-01,1", "date", id="year-2300"),
])
def test_a_helios_value_past_its_bound_names_line_and_column(tmp_path, row, field):
    with pytest.raises(InputError) as exc:
        read_quota_csv(write(tmp_path, "q.csv", f"date,a\n{row}\n"), epoch=None, model="gpu")
    assert (exc.value.location, exc.value.field) == ("q.csv:2", field)


@pytest.mark.parametrize(("call", "field"), [
    pytest.param(lambda trace: scheduling.read_workload(trace, "philly", checkpoint_s=math.inf), "checkpoint_s",
                 id="checkpoint-inf"),
    pytest.param(lambda trace: scheduling.read_workload(trace, "philly", restart_s=math.nan), "restart_s",
                 id="restart-nan"),
    pytest.param(lambda trace: scheduling.run(scheduling.prepare(scheduling.read_workload(trace, "philly")),
                                              ["static"], reclaim_grace_s=math.inf), "reclaim_grace_s",
                 id="reclaim-grace-inf"),
])
def test_the_services_refuse_non_finite_seconds(tmp_path, call, field):
    with pytest.raises(InputError) as exc:
        call(write(tmp_path, "p.csv", PHILLY))
    assert exc.value.field == field


# --- the command line ------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "option"), [
    pytest.param(["--restart-s", "inf"], "--restart-s", id="restart-inf"),
    pytest.param(["--checkpoint-s", "nan"], "--checkpoint-s", id="checkpoint-nan"),
    pytest.param(["--reclaim-grace-s", "inf"], "--reclaim-grace-s", id="grace-inf"),
    pytest.param(["--reclaim-grace-s", "-1"], "--reclaim-grace-s", id="grace-negative"),
    pytest.param(["--restart-s", "1e11"], "--restart-s", id="restart-past-bound"),
    pytest.param(["--max-preemptions", str(2**63)], "--max-preemptions", id="preemptions-2^63"),
])
def test_simulate_refuses_an_option_past_its_bounds(tmp_path, args, option):
    trace, out = write(tmp_path, "p.csv", PHILLY), tmp_path / "jobs.csv"
    result = invoke("simulate", trace, *args, "--format", "json", "--jobs-out", out)
    refused(result, 2, option, "Usage:")
    assert not out.exists()


@pytest.mark.parametrize("at_s", ["inf", "nan", "-5", "1e11"])
def test_export_refuses_an_instant_past_its_bounds(tmp_path, at_s):
    quotas = write(tmp_path, "q.csv", "date,a\n2020-04-01,8\n")
    refused(invoke("export", "kueue", "--cluster", "1x8", "--quotas", quotas, "--at-s", at_s), 2, "--at-s")


@pytest.mark.parametrize(("row", "cluster", "words"), [
    pytest.param("2024-03-01 00:30:00,600.0,1000000000000,2400.0,x", [], ["p.csv:4", "num_gpus", "1,000,000"],
                 id="num-gpus-1e12"),
    pytest.param("2024-03-01 00:30:00,600.0,9223372036854775808,2400.0,x", [], ["p.csv:4", "num_gpus"],
                 id="num-gpus-2^63"),
    pytest.param("2024-03-01 00:30:00,600.0,4,2400.0,x", ["--cluster", "1000000000x8"], ["cluster", "1,000,000"],
                 id="cluster-1e9-nodes"),
])
def test_the_reported_inputs_are_refused_by_the_real_command(tmp_path, row, cluster, words):
    """As a subprocess: 10^12 GPUs exhausted memory, 2^63 overflowed, and so did 10^9 nodes."""
    trace, out = write(tmp_path, "p.csv", f"{PHILLY}{row}\n"), tmp_path / "jobs.csv"
    proc = run("simulate", trace, *cluster, "--format", "json", "--jobs-out", out)
    assert proc.returncode == 3 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith("error: ") and all(w in proc.stderr for w in words), proc.stderr
    assert not out.exists()


def test_a_simulation_at_the_bounds_gives_finite_json(tmp_path):
    trace = write(tmp_path, "p.csv", f"{PHILLY_HEADER}\n1970-01-01 00:00:00,1e10,{MAX_GPUS},1e16,x\n")
    result = invoke("simulate", trace, "--cluster", "125000x8", "--reclaim-grace-s", "1e10", "--restart-s", "1e10",
                    "--checkpoint-s", "1e10", "--format", "json")
    assert result.code == 0, result.stderr
    json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"{name} in the JSON output"))
