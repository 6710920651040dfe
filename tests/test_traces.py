"""Trace, cluster and quota readers (services.traces) and the default sizing rule (scheduler.sizing)."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpufleet.errors import InputError
from gpufleet.scheduler.model import Cluster, Job, NodePool, QuotaChange, Tenant, TenantQuota
from gpufleet.scheduler.sizing import size_from_workload
from gpufleet.services.traces import read_alibaba, read_cluster, read_philly, read_quota_csv, read_quotas

TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
needs_traces = pytest.mark.skipif(not TRACES.is_dir(), reason=f"real traces not available at {TRACES}")

PHILLY_HEADER = "timestamp,duration,num_gpus,gpu_time,cluster"
ALIBABA_HEADER = ("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
                  "creation_time,deletion_time,scheduled_time")


def write(tmp_path: Path, name: str, *lines: str) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


# --- Philly ---------------------------------------------------------------------------------

def test_philly_rows_become_jobs_sorted_by_arrival_then_line(tmp_path):
    path = write(tmp_path, "p.csv", PHILLY_HEADER,
                 "2017-10-09 07:01:55,66.0,1,66.0,11cb48",
                 "2017-10-09 06:13:03,2951.0,2,5902.0,6214e9",
                 "2017-10-09 06:13:03,10,8,80,11cb48")
    w = read_philly(path)
    assert w.epoch == "2017-10-09T06:13:03+00:00"
    assert w.skipped == {}
    assert w.jobs == (
        Job(id="philly-3", tenant="6214e9", arrival_s=0.0, milli_gpus=2000, service_s=2951.0, line=3),
        Job(id="philly-4", tenant="11cb48", arrival_s=0.0, milli_gpus=8000, service_s=10.0, line=4),
        Job(id="philly-2", tenant="11cb48", arrival_s=2932.0, milli_gpus=1000, service_s=66.0, line=2),
    )


def test_philly_times_with_a_zone_are_converted_to_utc(tmp_path):
    path = write(tmp_path, "p.csv", PHILLY_HEADER, "2017-10-09 07:00:00,1,1,1,a", "2017-10-09T09:30:00+02:00,1,1,1,b")
    assert [(j.id, j.arrival_s) for j in read_philly(path).jobs] == [("philly-2", 0.0), ("philly-3", 1800.0)]


def test_philly_line_numbers_count_blank_lines(tmp_path):
    path = write(tmp_path, "p.csv", PHILLY_HEADER, "", "2017-10-09 07:01:55,66.0,1,66.0,a", "")
    assert [j.id for j in read_philly(path).jobs] == ["philly-3"]


PHILLY_BAD = [  # (bad row, field, skip reason)
    pytest.param("2017-10-09 07:01:55,66.0,1,66.0", "cluster", "wrong number of columns", id="missing-column"),
    pytest.param("2017-10-09 07:01:55,66.0,1,66.0,a,b", None, "wrong number of columns", id="extra-column"),
    pytest.param("2017-13-09 07:01:55,66.0,1,66.0,a", "timestamp", "bad timestamp", id="bad-timestamp"),
    pytest.param("yesterday,66.0,1,66.0,a", "timestamp", "bad timestamp", id="timestamp-not-a-time"),
    pytest.param("2017-10-09 07:01:55,abc,1,66.0,a", "duration", "bad duration", id="duration-not-a-number"),
    pytest.param("2017-10-09 07:01:55,-5,1,66.0,a", "duration", "bad duration", id="negative-duration"),
    pytest.param("2017-10-09 07:01:55,nan,1,66.0,a", "duration", "bad duration", id="nan-duration"),
    pytest.param("2017-10-09 07:01:55,inf,1,66.0,a", "duration", "bad duration", id="infinite-duration"),
    pytest.param("2017-10-09 07:01:55,66.0,0,0,a", "num_gpus", "bad num_gpus", id="zero-gpus"),
    pytest.param("2017-10-09 07:01:55,66.0,-2,0,a", "num_gpus", "bad num_gpus", id="negative-gpus"),
    pytest.param("2017-10-09 07:01:55,66.0,1.5,99,a", "num_gpus", "bad num_gpus", id="fractional-gpus"),
    pytest.param("2017-10-09 07:01:55,66.0,1,x,a", "gpu_time", "bad gpu_time", id="gpu-time-not-a-number"),
    pytest.param("2017-10-09 07:01:55,66.0,1,66.0,", "cluster", "empty tenant", id="empty-tenant"),
]


def philly_with(tmp_path: Path, bad: str) -> Path:
    return write(tmp_path, "p.csv", PHILLY_HEADER, "2017-10-09 07:00:00,1,1,1,a", bad,
                 "2017-10-09 08:00:00,1,1,1,b")


@pytest.mark.parametrize(("row", "field", "reason"), PHILLY_BAD)
def test_a_malformed_philly_row_names_its_line_and_column(tmp_path, row, field, reason):
    with pytest.raises(InputError) as exc:
        read_philly(philly_with(tmp_path, row))
    assert exc.value.location == "p.csv:3"
    assert exc.value.field == field


@pytest.mark.parametrize(("row", "field", "reason"), PHILLY_BAD)
def test_skip_bad_rows_counts_a_malformed_philly_row(tmp_path, row, field, reason):
    w = read_philly(philly_with(tmp_path, row), skip_bad_rows=True)
    assert [j.id for j in w.jobs] == ["philly-2", "philly-4"]
    assert w.skipped == {reason: 1}


def test_the_error_message_gives_the_bad_value(tmp_path):
    with pytest.raises(InputError, match=r"num_gpus '0' must be at least 1"):
        read_philly(philly_with(tmp_path, "2017-10-09 07:01:55,66.0,0,0,a"))


@pytest.mark.parametrize("lines", [
    pytest.param(["timestamp,duration,gpus,gpu_time,cluster", "2017-10-09 07:00:00,1,1,1,a"], id="renamed-column"),
    pytest.param(["2017-10-09 07:00:00,1,1,1,a"], id="no-header"),
    pytest.param([""], id="empty-file"),
])
def test_a_bad_header_names_the_expected_columns(tmp_path, lines):
    with pytest.raises(InputError, match=PHILLY_HEADER) as exc:
        read_philly(write(tmp_path, "p.csv", *lines))
    assert exc.value.location == "p.csv:1"


@pytest.mark.parametrize(("lines", "skip"), [
    pytest.param([PHILLY_HEADER], False, id="header-only"),
    pytest.param([PHILLY_HEADER, "2017-10-09 07:00:00,1,0,1,a"], True, id="every-row-skipped"),
])
def test_a_trace_without_jobs_is_an_error(tmp_path, lines, skip):
    with pytest.raises(InputError, match="no jobs"):
        read_philly(write(tmp_path, "p.csv", *lines), skip_bad_rows=skip)


def test_a_missing_trace_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_philly(tmp_path / "absent.csv")


# --- Alibaba --------------------------------------------------------------------------------

def test_alibaba_pods_become_fractional_gpu_jobs_by_qos(tmp_path):
    path = write(tmp_path, "pods.csv", ALIBABA_HEADER,
                 "pod-0,12000,16384,1,1000,,LS,Running,0,100,0",
                 "pod-1,6000,12288,1,460,,BE,Running,50,500,60",
                 "pod-2,8000,4096,0,0,,LS,Running,55,90,55",
                 "pod-3,8000,4096,2,1000,V100M16,Guaranteed,Pending,70,900,",
                 "pod-4,8000,4096,4,500,V100M16,Burstable,Failed,20,80,30",
                 "pod-5,8000,4096,8,1000,,Guaranteed,Succeeded,10,20,12")
    w = read_alibaba(path)
    assert w.epoch is None
    assert w.skipped == {"no GPU requested": 1, "never scheduled in the trace": 1}
    assert w.jobs == (
        Job(id="pod-0", tenant="LS", arrival_s=0.0, milli_gpus=1000, service_s=100.0, priority=2, line=2),
        Job(id="pod-5", tenant="Guaranteed", arrival_s=10.0, milli_gpus=8000, service_s=8.0, priority=3, line=7),
        Job(id="pod-4", tenant="Burstable", arrival_s=20.0, milli_gpus=2000, service_s=50.0, priority=1,
            models=("V100M16",), line=6),
        Job(id="pod-1", tenant="BE", arrival_s=50.0, milli_gpus=460, service_s=440.0, priority=0, line=3),
    )


ALIBABA_BAD = [  # (bad row, field, skip reason)
    pytest.param("pod-x,1,1,1,1000,,LS,Running,0,10", "scheduled_time", "wrong number of columns", id="missing-column"),
    pytest.param("pod-x,1,1,one,1000,,LS,Running,0,10,0", "num_gpu", "bad num_gpu", id="num-gpu-not-a-number"),
    pytest.param("pod-x,1,1,-1,1000,,LS,Running,0,10,0", "num_gpu", "bad num_gpu", id="negative-num-gpu"),
    pytest.param("pod-x,1,1,1,0,,LS,Running,0,10,0", "gpu_milli", "bad gpu_milli", id="zero-gpu-milli"),
    pytest.param("pod-x,1,1,1,1500,,LS,Running,0,10,0", "gpu_milli", "bad gpu_milli", id="gpu-milli-over-1000"),
    pytest.param("pod-x,lots,1,1,1000,,LS,Running,0,10,0", "cpu_milli", "bad cpu_milli", id="cpu-not-a-number"),
    pytest.param("pod-x,1,1,1,1000,,Gold,Running,0,10,0", "qos", "bad qos", id="unknown-qos"),
    pytest.param("pod-x,1,1,1,1000,,,Running,0,10,0", "qos", "empty tenant", id="empty-qos"),
    pytest.param("pod-x,1,1,1,1000,,LS,Running,-1,10,0", "creation_time", "bad creation_time", id="negative-creation"),
    pytest.param("pod-x,1,1,1,1000,,LS,Running,0,5,9", "deletion_time", "deleted before scheduled",
                 id="deleted-before-scheduled"),
    pytest.param("pod-x,1,1,1,1000,,LS,Running,0,,0", "deletion_time", "bad deletion_time", id="no-deletion-time"),
    pytest.param(",1,1,1,1000,,LS,Running,0,10,0", "name", "empty name", id="empty-name"),
    pytest.param("pod-a,1,1,1,1000,,LS,Running,0,10,0", "name", "duplicate name", id="duplicate-name"),
    pytest.param("pod-x,1,1,1,1000,T4||A10,LS,Running,0,10,0", "gpu_spec", "bad gpu_spec",
                 id="empty-gpu-spec-alternative"),
]


@pytest.mark.parametrize(("row", "field", "reason"), ALIBABA_BAD)
def test_a_malformed_alibaba_row_names_its_line_and_column(tmp_path, row, field, reason):
    path = write(tmp_path, "pods.csv", ALIBABA_HEADER, "pod-a,1,1,1,1000,,LS,Running,0,10,0", row)
    with pytest.raises(InputError) as exc:
        read_alibaba(path)
    assert (exc.value.location, exc.value.field) == ("pods.csv:3", field)
    assert read_alibaba(path, skip_bad_rows=True).skipped == {reason: 1}


# --- Helios per-day quotas ------------------------------------------------------------------

QUOTA_ROWS = ["date,a,b,total", "2020-04-01,8,16,24", "2020-04-02,8,16,24", "2020-04-03,16,16,32",
              "2020-04-04,16,0,16"]


def change(at_s: float, tenant: str, gpus: float, day: str) -> QuotaChange:
    return QuotaChange(at_s, tenant, "V100", gpus, reason=f"quota file q.csv row {day}")


@pytest.mark.parametrize(("epoch", "expected"), [
    pytest.param(None, [change(0, "a", 8, "2020-04-01"), change(0, "b", 16, "2020-04-01"),
                        change(172800, "a", 16, "2020-04-03"), change(259200, "b", 0, "2020-04-04")],
                 id="from-the-first-date"),
    pytest.param("2020-04-02T12:00:00", [change(0, "a", 8, "2020-04-02"), change(0, "b", 16, "2020-04-02"),
                                         change(43200, "a", 16, "2020-04-03"), change(129600, "b", 0, "2020-04-04")],
                 id="earlier-rows-clamped-to-the-epoch"),
    pytest.param("2020-04-03T00:00:00+00:00", [change(0, "a", 16, "2020-04-03"), change(0, "b", 16, "2020-04-03"),
                                               change(86400, "b", 0, "2020-04-04")],
                 id="a-row-at-the-epoch-wins"),
])
def test_quota_csv_emits_a_change_when_a_tenants_gpus_change(tmp_path, epoch, expected):
    assert read_quota_csv(write(tmp_path, "q.csv", *QUOTA_ROWS), epoch=epoch, model="V100") == expected


def test_quota_csv_total_column_is_optional(tmp_path):
    path = write(tmp_path, "q.csv", "date,a,b", "2020-04-01,8,1.5")
    assert read_quota_csv(path, epoch=None, model="V100") == [change(0, "a", 8, "2020-04-01"),
                                                              change(0, "b", 1.5, "2020-04-01")]


@pytest.mark.parametrize(("lines", "location", "field"), [
    pytest.param(["date,a,b,total", "2020-04-01,8,16,24", "2020-04-02,8,16,25"], "q.csv:3", "total", id="wrong-total"),
    pytest.param(["date,a,total", "2020-04-01,-8,-8"], "q.csv:2", "a", id="negative-gpus"),
    pytest.param(["date,a,total", "2020-04-01,many,8"], "q.csv:2", "a", id="gpus-not-a-number"),
    pytest.param(["date,a", "04/01/2020,8"], "q.csv:2", "date", id="date-not-iso"),
    pytest.param(["date,a", "2020-02-30,8"], "q.csv:2", "date", id="date-not-in-the-calendar"),
    pytest.param(["date,a", "2020-04-02,8", "2020-04-01,8"], "q.csv:3", "date", id="dates-going-back"),
    pytest.param(["date,a", "2020-04-02,8", "2020-04-02,9"], "q.csv:3", "date", id="date-repeated"),
    pytest.param(["date,a", "2020-04-02,8,9"], "q.csv:2", None, id="extra-column"),
    pytest.param(["day,a", "2020-04-02,8"], "q.csv:1", None, id="no-date-column"),
    pytest.param(["date,a,a", "2020-04-02,8,8"], "q.csv:1", None, id="tenant-twice"),
    pytest.param(["date,total", "2020-04-02,8"], "q.csv:1", None, id="no-tenants"),
    pytest.param(["date,a,total"], "q.csv", None, id="no-rows"),
])
def test_a_bad_quota_csv_names_line_and_column(tmp_path, lines, location, field):
    with pytest.raises(InputError) as exc:
        read_quota_csv(write(tmp_path, "q.csv", *lines), epoch=None, model="V100")
    assert (exc.value.location, exc.value.field) == (location, field)


def test_quota_csv_rejects_a_bad_epoch(tmp_path):
    with pytest.raises(InputError) as exc:
        read_quota_csv(write(tmp_path, "q.csv", *QUOTA_ROWS), epoch="April", model="V100")
    assert exc.value.field == "epoch"


# --- Cluster --------------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "pools"), [
    pytest.param("60x8:V100", [("V100", 60, 8)], id="one-pool"),
    pytest.param("16x8:A100,4x8:H100", [("A100", 16, 8), ("H100", 4, 8)], id="two-pools-in-order"),
    pytest.param("2x4", [("gpu", 2, 4)], id="default-model"),
    pytest.param(" 1x8:A100 , 2x4:T4 ", [("A100", 1, 8), ("T4", 2, 4)], id="spaces"),
])
def test_cluster_spec_strings(spec, pools):
    assert read_cluster(spec) == Cluster(tuple(NodePool(*p) for p in pools))


@pytest.mark.parametrize(("spec", "bad"), [
    pytest.param("", "''", id="empty"),
    pytest.param("60x8:", "'60x8:'", id="empty-model"),
    pytest.param("x8", "'x8'", id="no-nodes"),
    pytest.param("60*8", "'60*8'", id="wrong-separator"),
    pytest.param("0x8", "'0x8'", id="zero-nodes"),
    pytest.param("4x0:A100", "'4x0:A100'", id="zero-gpus"),
    pytest.param("60x8:V100,bad", "'bad'", id="one-bad-part"),
    pytest.param("1x8:V100,2x4:V100", "V100", id="model-twice"),
])
def test_a_bad_cluster_spec_names_the_bad_part(spec, bad):
    with pytest.raises(InputError) as exc:
        read_cluster(spec)
    assert exc.value.field == "cluster"
    assert bad in exc.value.message


def test_cluster_from_a_node_list_groups_nodes_by_model_and_size(tmp_path):
    path = write(tmp_path, "nodes.csv", "sn,cpu_milli,memory_mib,gpu,model",
                 "n0,64000,262144,2,P100", "n1,96000,393216,8,V100", "n2,64000,262144,2,P100",
                 "n3,96000,393216,4,V100", "n4,32000,1000,0,", "n5,96000,393216,8,V100")
    assert read_cluster(str(path)) == Cluster((NodePool("P100", 2, 2), NodePool("V100-8", 2, 8),
                                                NodePool("V100-4", 1, 4)))


@pytest.mark.parametrize(("row", "field"), [
    pytest.param("n1,1,1,two,V100", "gpu", id="gpus-not-a-number"),
    pytest.param("n1,1,1,8,", "model", id="no-model"),
    pytest.param("n1,1,1,8", "model", id="missing-column"),
])
def test_a_bad_node_list_names_line_and_column(tmp_path, row, field):
    path = write(tmp_path, "nodes.csv", "sn,cpu_milli,memory_mib,gpu,model", "n0,1,1,8,V100", row)
    with pytest.raises(InputError) as exc:
        read_cluster(str(path))
    assert (exc.value.location, exc.value.field) == ("nodes.csv:3", field)


def test_a_missing_node_list_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_cluster(str(tmp_path / "nodes.csv"))


# --- Quotas ---------------------------------------------------------------------------------

CLUSTER = Cluster((NodePool("V100", 10, 8), NodePool("P100", 2, 4)))
GOOD_QUOTAS = """\
cohort: philly
tenants:
  - name: 6214e9
    nominal: 64
    borrowing_limit: 32
    lending_limit: 16
    weight: 2
  - name: 103959
    nominal: {V100: 8, P100: 4}
    lending_limit: {P100: 2}
    cohort: other
changes:
  - {at_s: 86400, tenant: 6214e9, nominal: 32}
  - {at_s: 3600, tenant: "103959", model: P100, nominal: 0}
"""


def test_quotas_yaml_gives_tenants_and_dated_changes(tmp_path):
    tenants, changes = read_quotas(write(tmp_path, "quotas.yaml", GOOD_QUOTAS), CLUSTER)
    assert tenants == [
        Tenant("6214e9", {"V100": TenantQuota(64, 32, 16)}, cohort="philly", weight=2),
        Tenant("103959", {"V100": TenantQuota(8), "P100": TenantQuota(4, None, 2)}, cohort="other"),
    ]
    assert changes == [QuotaChange(3600, "103959", "P100", 0, reason="quota file quotas.yaml changes[1]"),
                       QuotaChange(86400, "6214e9", "V100", 32, reason="quota file quotas.yaml changes[0]")]


def test_quotas_from_a_helios_csv(tmp_path):
    path = write(tmp_path, "q.csv", *QUOTA_ROWS)
    tenants, changes = read_quotas(path, CLUSTER)
    assert tenants == [Tenant("a", {"V100": TenantQuota(8)}), Tenant("b", {"V100": TenantQuota(16)})]
    assert changes == read_quota_csv(path, epoch=None, model="V100")


def tenant_yaml(*body: str) -> str:
    return "tenants:\n  - name: a\n    nominal: 8\n" + "".join(f"{line}\n" for line in body)


@pytest.mark.parametrize(("text", "field", "line"), [
    pytest.param("tenant: []\n", "tenant", 1, id="unknown-top-key"),
    pytest.param("cohort: x\n", "tenants", 1, id="no-tenants"),
    pytest.param("tenants: []\n", "tenants", 1, id="empty-tenants"),
    pytest.param("tenants:\n  - name: a\n    nominl: 8\n", "tenants[0].nominl", 3, id="unknown-tenant-key"),
    pytest.param("tenants:\n  - name: a\n", "tenants[0].nominal", 2, id="no-nominal"),
    pytest.param(tenant_yaml("  - name: b", "    nominal: -4"), "tenants[1].nominal", 5, id="negative-nominal"),
    pytest.param(tenant_yaml("  - name: b", "    nominal: lots"), "tenants[1].nominal", 5, id="nominal-not-a-number"),
    pytest.param(tenant_yaml("  - name: b", "    nominal: true"), "tenants[1].nominal", 5, id="nominal-a-boolean"),
    pytest.param(tenant_yaml("  - name: b", "    nominal: {A100: 8}"), "tenants[1].nominal.A100", 5,
                 id="unknown-model"),
    pytest.param(tenant_yaml("    lending_limit: 9"), "tenants[0].lending_limit", 4, id="lending-over-nominal"),
    pytest.param(tenant_yaml("    borrowing_limit: -1"), "tenants[0].borrowing_limit", 4, id="negative-borrowing"),
    pytest.param(tenant_yaml("    lending_limit: {P100: 1}"), "tenants[0].lending_limit.P100", 4,
                 id="limit-on-a-model-without-nominal"),
    pytest.param(tenant_yaml("    weight: 0"), "tenants[0].weight", 4, id="zero-weight"),
    pytest.param(tenant_yaml("  - name: a", "    nominal: 4"), "tenants[1].name", 4, id="tenant-twice"),
    pytest.param(tenant_yaml("  - name: [a]", "    nominal: 4"), "tenants[1].name", 4, id="name-not-text"),
    pytest.param(tenant_yaml("changes:", "  - {at_s: 0, tenant: z, nominal: 1}"), "changes[0].tenant", 5,
                 id="change-to-unknown-tenant"),
    pytest.param(tenant_yaml("changes:", "  - {at_s: 0, tenant: a, nominal: 1, model: H100}"), "changes[0].model", 5,
                 id="change-to-unknown-model"),
    pytest.param(tenant_yaml("changes:", "  - {at_s: -5, tenant: a, nominal: 1}"), "changes[0].at_s", 5,
                 id="change-before-zero"),
    pytest.param(tenant_yaml("changes:", "  - {at_s: 5, tenant: a}"), "changes[0].nominal", 5,
                 id="change-without-nominal"),
    pytest.param(tenant_yaml("changes:", "  - {at_s: 5, tenant: a, nominal: 1, when: 3}"), "changes[0].when", 5,
                 id="change-unknown-key"),
])
def test_a_bad_quotas_file_names_the_field_path_and_line(tmp_path, text, field, line):
    with pytest.raises(InputError) as exc:
        read_quotas(write(tmp_path, "quotas.yaml", text), CLUSTER)
    assert (exc.value.field, exc.value.location) == (field, f"quotas.yaml:{line}")


def test_malformed_quotas_yaml_gives_the_line(tmp_path):
    with pytest.raises(InputError, match=r"quotas.yaml:3"):
        read_quotas(write(tmp_path, "quotas.yaml", "tenants:\n  - name: a\n    nominal: 8: 9\n"), CLUSTER)


# --- Sizing ---------------------------------------------------------------------------------

def job(tenant: str, arrival_s: float, gpus: float, service_s: float) -> Job:
    return Job(id=f"{tenant}-{arrival_s}-{service_s}", tenant=tenant, arrival_s=arrival_s,
               milli_gpus=round(gpus * 1000), service_s=service_s)


def test_sizing_by_hand():
    """Span 0..200 s. d: 1000 GPU-s / 200 s = 5 GPUs / 0.5 = 10 -> 12; b: 350/200 = 1.75 / 0.5 = 3.5 -> 4;
    a: 0.25 / 0.5 -> 1 GPU -> 4; c: load 0.6 but its largest job has 6 GPUs -> 8. Total 28 = 7 nodes of 4."""
    jobs = [job("b", 0, 2, 100), job("b", 50, 1, 150), job("a", 100, 0.5, 100), job("c", 0, 6, 10),
            *[job("d", 0, 1, 200) for _ in range(5)]]
    cluster, tenants = size_from_workload(jobs, gpus_per_node=4, target_utilization=0.5, model="A100")
    assert cluster == Cluster((NodePool("A100", 7, 4),))
    assert [(t.name, t.quotas["A100"].nominal_gpus, t.cohort, t.weight) for t in tenants] == [
        ("a", 4, "default", 1), ("b", 4, "default", 1), ("c", 8, "default", 1), ("d", 12, "default", 1)]
    assert all(t.quotas["A100"].borrowing_limit_gpus is None is t.quotas["A100"].lending_limit_gpus for t in tenants)


def test_sizing_ignores_floating_point_noise():
    """x: 21 GPU-s over 10 s = 2.1 GPUs; 2.1 / 0.7 is 3.0000000000000004 in floats, and means 3."""
    jobs = [job("x", 0, 1, 7) for _ in range(3)] + [job("y", 0, 1, 10)]
    _, tenants = size_from_workload(jobs, gpus_per_node=1, target_utilization=0.7)
    assert [t.quotas["gpu"].nominal_gpus for t in tenants] == [3, 2]


@pytest.mark.parametrize(("jobs", "options", "field"), [
    pytest.param([], {}, "jobs", id="no-jobs"),
    pytest.param([job("a", 0, 1, 1)], {"gpus_per_node": 0}, "gpus_per_node", id="zero-gpus-per-node"),
    pytest.param([job("a", 0, 1, 1)], {"target_utilization": 0}, "target_utilization", id="zero-utilization"),
    pytest.param([job("a", 0, 1, 1)], {"target_utilization": 1.5}, "target_utilization", id="utilization-over-1"),
])
def test_sizing_rejects_bad_options(jobs, options, field):
    with pytest.raises(InputError) as exc:
        size_from_workload(jobs, **options)
    assert exc.value.field == field


jobs_strategy = st.lists(
    st.builds(job, st.sampled_from("abcde"), st.integers(0, 10_000), st.integers(1, 64_000).map(lambda m: m / 1000),
              st.integers(0, 10_000)),
    min_size=1, max_size=40)


@given(jobs=jobs_strategy, gpus_per_node=st.integers(1, 16), target=st.floats(0.05, 1.0))
def test_sizing_fits_every_job_in_whole_nodes(jobs, gpus_per_node, target):
    cluster, tenants = size_from_workload(jobs, gpus_per_node=gpus_per_node, target_utilization=target)
    nominal = {t.name: t.quotas["gpu"].nominal_gpus for t in tenants}
    assert list(nominal) == sorted({j.tenant for j in jobs})
    span = max(j.arrival_s + j.service_s for j in jobs) - min(j.arrival_s for j in jobs)
    for name, gpus in nominal.items():
        own = [j for j in jobs if j.tenant == name]
        assert gpus % gpus_per_node == 0
        assert gpus >= math.ceil(max(j.milli_gpus for j in own) / 1000)
        if span > 0:
            assert gpus >= sum(j.milli_gpus * j.service_s for j in own) / 1000 / span / target - 1e-6
    assert cluster.gpus == sum(nominal.values())
    assert size_from_workload(jobs, gpus_per_node=gpus_per_node, target_utilization=target) == (cluster, tenants)


# --- Real traces ----------------------------------------------------------------------------

@needs_traces
def test_the_full_philly_trace():
    path = TRACES / "philly" / "philly.csv"
    start = time.perf_counter()
    w = read_philly(path)
    assert time.perf_counter() - start < 5  # ~0.5 s; a generous bound against quadratic slips
    with path.open(newline="") as f:
        gpu_time = math.fsum(float(row["gpu_time"]) for row in csv.DictReader(f))
    assert len(w.jobs) == 82_247 and w.skipped == {}
    assert len({j.tenant for j in w.jobs}) == 15
    assert w.epoch == "2017-09-04T10:30:41+00:00"
    assert gpu_time == math.fsum(j.milli_gpus * j.service_s for j in w.jobs) / 1000


@needs_traces
def test_the_philly_trace_sizes_a_cluster():
    cluster, tenants = size_from_workload(read_philly(TRACES / "philly" / "philly.csv").jobs)
    assert len(tenants) == 15
    assert cluster.gpus == sum(t.quotas["gpu"].nominal_gpus for t in tenants) == 552


@needs_traces
def test_the_alibaba_pod_list():
    w = read_alibaba(TRACES / "alibaba-2023" / "openb_pod_list_default.csv")
    assert w.skipped == {"no GPU requested": 1088, "never scheduled in the trace": 861}
    assert len(w.jobs) == 8152 - 1088 - 861
    assert {j.tenant: j.priority for j in w.jobs} == {"Guaranteed": 3, "LS": 2, "Burstable": 1, "BE": 0}
    assert any(j.milli_gpus < 1000 for j in w.jobs)


@needs_traces
def test_the_alibaba_node_list():
    cluster = read_cluster(str(TRACES / "alibaba-2023" / "openb_node_list_gpu_node.csv"))
    assert cluster.gpus == 6212
    assert sum(p.nodes for p in cluster.pools) == 1213


@needs_traces
def test_the_venus_quota_file():
    path = TRACES / "helios" / "Venus_cluster_gpu_number.csv"
    changes = read_quota_csv(path, epoch=None, model="V100")
    assert len({c.tenant for c in changes}) == 25
    assert sum(c.nominal_gpus for c in changes if c.at_s == 0) == 968
    tenants, _ = read_quotas(path, Cluster((NodePool("V100", 200, 8),)))
    assert len(tenants) == 25
