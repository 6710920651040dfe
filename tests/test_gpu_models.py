"""GPU-model constraints: the alternatives of Alibaba's ``gpu_spec``, the naming rule that matches a
trace's model to the cluster's pools, a job that may run on several models (best fit among them,
quota charged on the model placed), a row refused for a model the cluster lacks, and every published
variant of the Alibaba 2023 pod list that carries times, replayed on the trace's own node list."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpufleet.errors import InputError
from gpufleet.scheduler import POLICIES
from gpufleet.services import scheduling
from gpufleet.services.traces import match_models, pools_named, read_alibaba, read_cluster
from scheduler_builders import MAX_STEPS, cluster, job, pool, random_scenario, scenario, tenant
from test_cli import run

ALIBABA_HEADER = ("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
                  "creation_time,deletion_time,scheduled_time")
NODE_HEADER = "sn,cpu_milli,memory_mib,gpu,model"
TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "alibaba-2023"
NODE_LIST = TRACES / "openb_node_list_gpu_node.csv"


def pods(tmp_path: Path, *specs: str) -> Path:
    """A pod list of 1-GPU LS pods, one per ``gpu_spec``, arriving 10 s apart (lines 2, 3, ...)."""
    rows = [f"pod-{i},1000,1024,1,1000,{spec},LS,Running,{10 * i},{10 * i + 100},{10 * i}"
            for i, spec in enumerate(specs)]
    path = tmp_path / "pods.csv"
    path.write_text("\n".join([ALIBABA_HEADER, *rows]) + "\n")
    return path


# -- reading gpu_spec ------------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "models"), [
    pytest.param("", (), id="empty-any-model"),
    pytest.param("T4", ("T4",), id="one-model"),
    pytest.param("V100M16|V100M32", ("V100M16", "V100M32"), id="alternatives"),
    pytest.param("V100M16|V100M32|V100M32", ("V100M16", "V100M32"), id="a-repeat-counts-once"),  # gpuspec33 has it
    pytest.param(" A10 | T4 ", ("A10", "T4"), id="spaces-around-names"),
])
def test_gpu_spec_lists_the_models_a_pod_may_run_on(tmp_path, spec, models):
    assert read_alibaba(pods(tmp_path, spec)).jobs[0].models == models


# -- the naming rule -------------------------------------------------------------------------------
@pytest.mark.parametrize(("model", "spec", "pools"), [
    pytest.param("G2", "2x8:G2", ("G2",), id="one-node-size-named-as-the-model"),
    pytest.param("T4", "3x2:T4-2,1x4:T4-4", ("T4-2", "T4-4"), id="model-dash-gpus-per-node"),
    pytest.param("T4-4", "3x2:T4-2,1x4:T4-4", ("T4-4",), id="a-pool-named-exactly"),
    pytest.param("V100M16", "1x8:V100M16-8,1x8:V100M32-8", ("V100M16-8",), id="no-prefix-match"),
    pytest.param("T4", "1x4:T4-2", (), id="suffix-other-than-its-node-size"),
    pytest.param("A10", "1x1:A100,1x1:A10-1", ("A10-1",), id="another-model-sharing-a-prefix"),
])
def test_a_trace_model_means_the_pools_named_after_it(model, spec, pools):
    assert pools_named(model, read_cluster(spec)) == pools


def test_a_pods_models_become_the_pools_of_the_node_list_in_pool_order(tmp_path):
    """T4 comes in 2- and 4-GPU nodes, so the node list gives pools T4-2 and T4-4; G2 in one size: G2.
    A10 is not in the cluster: an alternative the cluster lacks is dropped."""
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("\n".join([NODE_HEADER, "n0,1,1,2,T4", "n1,1,1,8,G2", "n2,1,1,4,T4", "n3,1,1,0,"]) + "\n")
    the_cluster = read_cluster(str(nodes))
    assert the_cluster.models == ("T4-2", "G2", "T4-4")
    workload = match_models(read_alibaba(pods(tmp_path, "G2|T4", "A10|T4", "", "G2")), the_cluster)
    assert [j.models for j in workload.jobs] == [("T4-2", "G2", "T4-4"), ("T4-2", "T4-4"), (), ("G2",)]


@pytest.mark.parametrize("skip", [False, True], ids=["refused", "skipped"])
def test_a_pod_none_of_whose_models_the_cluster_has_is_a_bad_row(tmp_path, skip):
    workload = read_alibaba(pods(tmp_path, "T4", "A100|H100", "T4"))
    the_cluster = read_cluster("2x4:T4")
    if not skip:
        with pytest.raises(InputError) as exc:
            match_models(workload, the_cluster)
        assert (exc.value.location, exc.value.field) == ("pods.csv:3", "gpu_spec")
        assert "A100|H100" in exc.value.message and "T4" in exc.value.message
    else:
        kept = match_models(workload, the_cluster, skip_bad_rows=True)
        assert [j.id for j in kept.jobs] == ["pod-0", "pod-2"]
        assert kept.skipped == {"unknown GPU model": 1}


def test_the_cli_names_file_line_and_field_of_an_unknown_model_or_skips_and_counts_it(tmp_path):
    path = pods(tmp_path, "T4", "A100", "T4|V100")
    args = ["simulate", path, "--trace-format", "alibaba", "--cluster", "2x4:T4,1x8:V100"]
    refused = run(*args)
    assert refused.returncode == 3, refused.stderr
    assert "pods.csv:3" in refused.stderr and "gpu_spec" in refused.stderr and "A100" in refused.stderr
    assert "Traceback" not in refused.stderr + refused.stdout
    skipped = run(*args, "--skip-bad-rows", "--format", "json")
    assert skipped.returncode == 0, skipped.stderr
    trace = json.loads(skipped.stdout)["trace"]
    assert (trace["jobs"], trace["skipped_rows"]) == (2, {"unknown GPU model": 1})


def test_a_trace_with_gpu_models_on_a_cluster_sized_from_it_asks_for_a_cluster(tmp_path):
    proc = run("simulate", pods(tmp_path, "", "T4"), "--trace-format", "alibaba")
    assert proc.returncode == 3 and "pods.csv:3" in proc.stderr and "give --cluster" in proc.stderr, proc.stderr


# -- scheduling a job of several models --------------------------------------------------------------
def owner(**nominal: float):
    return tenant("a", nominal)


PLACEMENTS = [  # (cluster, tenant, jobs before x, x, when and where x starts)
    pytest.param(cluster(1, 4, "m0", pool("m1", 1, 4)), owner(m0=4, m1=4), [],
                 job("x", "a", at=10, models=["m1"]), (10, "m1"), id="only-its-one-model-though-the-other-is-free"),
    pytest.param(cluster(1, 4, "m0", pool("m1", 1, 4)), owner(m0=4, m1=4), [job("f", "a", gpus=4, run=50, model="m1")],
                 job("x", "a", at=10, models=["m1"]), (50, "m1"), id="waits-for-its-model"),
    pytest.param(cluster(1, 4, "m0", pool("m1", 1, 4)), owner(m0=4, m1=4), [],
                 job("x", "a", at=10), (10, "m0"), id="any-model-first-in-pool-order"),
    pytest.param(cluster(1, 4, "m0", pool("m1", 1, 4), pool("m2", 1, 4)), owner(m0=4, m1=4, m2=4),
                 [job("f", "a", gpus=3, run=500, model="m2")],
                 job("x", "a", at=10, models=["m0", "m2"]), (10, "m2"), id="several-best-fit"),
    pytest.param(cluster(2, 2, "m0", pool("m1", 1, 4)), owner(m0=4, m1=4), [],
                 job("x", "a", at=10, gpus=4, models=["m0", "m1"]), (10, "m1"), id="several-fewest-nodes"),
    pytest.param(cluster(1, 4, "m0", pool("m1", 1, 4)), owner(m0=4, m1=4), [],
                 job("x", "a", at=10, models=["m1", "m0"]), (10, "m0"), id="several-tie-pool-order"),
    pytest.param(cluster(1, 4, "m0", pool("m1", 1, 4)), owner(m0=0, m1=4), [],
                 job("x", "a", at=10, models=["m0", "m1"]), (10, "m1"), id="several-where-the-quota-allows"),
    pytest.param(cluster(1, 4, "m0", pool("m1", 1, 4), pool("m2", 1, 4)), owner(m0=4, m1=4, m2=4),
                 [job("f", "a", gpus=4, run=50, model="m1"), job("g", "a", gpus=4, run=80, model="m2")],
                 job("x", "a", at=10, gpus=2, models=["m1", "m2"]), (50, "m1"), id="several-waits-for-the-first-free"),
]


@pytest.mark.parametrize(("the_cluster", "the_tenant", "before", "x", "started"), PLACEMENTS)
def test_a_job_starts_on_a_model_it_may_use(the_cluster, the_tenant, before, x, started):
    """static, one tenant owning the pools: where x goes is placement and quota alone."""
    log = scenario(the_cluster, [the_tenant], [*before, x]).log("static")
    time_s, detail = next((t, d) for t, what, j, d in log if what == "start" and j == "x")
    assert (time_s, detail.split()[1]) == started


@pytest.mark.parametrize("policy", list(POLICIES))
def test_quota_is_charged_on_the_model_placed(policy):
    """x may use m0 or m1 and goes to m1, the tighter fit (f holds 2 of its 4 GPUs): a's usage on m1
    is 3 GPUs, on m0 none; y (1 GPU of m1 only) then needs a's nominal 4 on m1: 3 + 1 fits."""
    sc = scenario(cluster(1, 4, "m0", pool("m1", 1, 4)), [owner(m0=4, m1=4)], [
        job("f", "a", gpus=2, run=100, model="m1"),
        job("x", "a", at=10, gpus=1, run=100, models=["m0", "m1"]),
        job("y", "a", at=20, gpus=1, run=100, model="m1"),
    ])
    sched = sc.scheduler(policy)
    sched.kernel.run(until_s=20)
    assert sched.state.usage == [[0, 4000]]
    assert sched.state.invariant_errors(confined_to_nominal=policy == "static") == []


@pytest.mark.parametrize("policy", list(POLICIES))
@settings(max_examples=40)
@given(data=st.data())
def test_a_job_of_several_models_runs_only_on_them_and_every_invariant_holds(policy, data):
    sc = data.draw(random_scenario(policy, model_sets=True))
    sched = sc.scheduler(policy, log=[], backfill=data.draw(st.booleans(), label="backfill"))
    while sched.kernel.pending:
        sched.kernel.step()
        errors = sched.state.invariant_errors(confined_to_nominal=policy == "static")
        assert not errors, f"after step {sched.kernel.steps} at {sched.kernel.now}: {errors}"
        assert sched.kernel.steps < MAX_STEPS, "the scheduler does not come to an end"
    allowed = {j.id: j.models for j in sc.jobs}
    for _, what, job_id, detail in sched.log:
        if what == "start" and allowed[job_id]:
            assert detail.split()[1] in allowed[job_id], (job_id, detail)
    assert not any(math.isnan(finish) for finish in sched.records.finish_s), "a job never finished"


# -- the published variants ------------------------------------------------------------------------
# Every pod list of alibaba/clusterdata cluster-trace-gpu-v2023/csv/ that has times (the multigpu*
# lists have none: docs/scheduling.md section 7).
TIMED_VARIANTS = ["default", "gpuspec05", "gpuspec10", "gpuspec20", "gpuspec25", "gpuspec33",
                  "gpushare20", "gpushare40", "gpushare60", "gpushare80", "gpushare100",
                  "cpu0", "cpu037", "cpu050", "cpu072", "cpu100", "cpu200", "cpu235", "cpu250", "cpu300"]


def variant(name: str):
    path = TRACES / f"openb_pod_list_{name}.csv"
    absent = [p.name for p in (path, NODE_LIST) if not p.is_file()]
    return pytest.param(path, id=name, marks=pytest.mark.skipif(
        bool(absent), reason=f"{', '.join(absent)} not in {TRACES} (published in alibaba/clusterdata, "
                             "cluster-trace-gpu-v2023/csv/)"))


@pytest.mark.parametrize("path", [variant(name) for name in TIMED_VARIANTS])
def test_a_published_alibaba_variant_runs_on_the_traces_own_node_list(path):
    setup = scheduling.prepare(scheduling.read_workload(path, "alibaba"), cluster_spec=str(NODE_LIST))
    assert "unknown GPU model" not in setup.workload.skipped
    [result] = scheduling.run(setup, ["borrow"])
    assert result.overall.finished == result.overall.jobs == len(setup.workload.jobs) > 0
    for spec, model in zip(setup.workload.jobs, result.jobs.model):
        assert not spec.models or model in spec.models, (spec.id, spec.models, model)
