"""Exports of a scheduler setup (Kueue manifests, Slurm accounts), quotas on a date, and loans as quotas."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from builders import Story
from gpufleet.errors import InputError
from gpufleet.scheduler.model import Cluster, NodePool, QuotaChange, Tenant, TenantQuota
from gpufleet.services import scheduling
from gpufleet.services.export import kueue_manifests, kueue_yaml, quotas_at, slurm_commands
from gpufleet.services.loan_quotas import (
    QuotaDelta,
    loan_quota_changes,
    loan_quota_deltas,
    loan_reclaims,
    merge_quota_changes,
)

CRDS = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "kueue-crds"
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DAY = 86_400.0

# -- the example: 2 models, 3 tenants, 2 cohorts -----------------------------------------------

CLUSTER = Cluster((NodePool("H100", 4, 8), NodePool("A100 80GB", 2, 8)))
TENANTS = [
    Tenant("Tesla", {"H100": TenantQuota(16, borrowing_limit_gpus=8, lending_limit_gpus=4),
                     "A100 80GB": TenantQuota(8)}, cohort="Musk", weight=2),
    Tenant("xAI", {"H100": TenantQuota(12.5)}, cohort="Musk", weight=1.5),
    Tenant("research", {"H100": TenantQuota(3.5, borrowing_limit_gpus=0), "A100 80GB": TenantQuota(8, None, 8)},
           cohort="academia"),
]


# -- validating manifests against the CRDs -----------------------------------------------------


@pytest.fixture(scope="module")
def crds() -> dict[str, tuple[dict, dict]]:
    """kind -> (CRD, its storage version)."""
    if not CRDS.is_dir():
        pytest.skip(f"Kueue CRDs not found at {CRDS}")
    out = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        out[crd["spec"]["names"]["kind"]] = (crd, next(v for v in crd["spec"]["versions"] if v.get("storage")))
    return out


def json_schema(node):
    """An OpenAPI v3 CRD schema as JSON Schema: ``x-kubernetes-*`` keys dropped (int-or-string fields
    already say ``anyOf: [integer, string]``), and objects closed to unknown fields, as the API
    server's strict field validation (``kubectl apply --validate=strict``) does."""
    if isinstance(node, list):
        return [json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if "properties" in node and "additionalProperties" not in node \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def quantity_milli(text) -> int:
    if isinstance(text, int):
        return text * 1000
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def cel_errors(manifest: dict) -> list[str]:
    """The CRDs' CEL rules (and Kueue's webhook rule lending <= nominal) that our objects can meet."""
    if manifest["kind"] != "ClusterQueue":
        return []
    spec, errors = manifest["spec"], []
    for group in spec.get("resourceGroups", []):
        for flavor in group["flavors"]:
            if len(flavor["resources"]) != len(group["coveredResources"]):
                errors.append("flavors must have the same number of resources as the coveredResources")
            for r in flavor["resources"]:
                if "borrowingLimit" in r and "cohortName" not in spec:
                    errors.append("borrowingLimit must be nil when cohort is empty")
                if "lendingLimit" in r and quantity_milli(r["lendingLimit"]) > quantity_milli(r["nominalQuota"]):
                    errors.append("lendingLimit must be <= nominalQuota")
    preemption = spec.get("preemption", {})
    if preemption.get("reclaimWithinCohort") == "Never" and \
            preemption.get("borrowWithinCohort", {}).get("policy", "Never") != "Never":
        errors.append("reclaimWithinCohort=Never and borrowWithinCohort.Policy!=Never")
    return errors


def validation_errors(manifest: dict, crds) -> list[str]:
    crd, version = crds[manifest["kind"]]
    validator = Draft202012Validator(json_schema(version["schema"]["openAPIV3Schema"]))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]
    if manifest["apiVersion"] != f"{crd['spec']['group']}/{version['name']}":
        errors.append(f"apiVersion {manifest['apiVersion']} is not the storage version {version['name']}")
    if not DNS_1123_LABEL.match(manifest["metadata"]["name"]):
        errors.append(f"metadata.name {manifest['metadata']['name']!r} is not a DNS-1123 label")
    if ("namespace" in manifest["metadata"]) != (crd["spec"]["scope"] == "Namespaced"):
        errors.append(f"metadata.namespace does not fit a {crd['spec']['scope']} resource")
    return errors or cel_errors(manifest)  # CEL rules run on objects that fit the schema


MANIFESTS = kueue_manifests(CLUSTER, TENANTS, namespace="ml-jobs")


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[f"{m['kind']}-{m['metadata']['name']}" for m in MANIFESTS])
def test_every_kueue_object_validates_against_its_crd(manifest, crds):
    assert validation_errors(manifest, crds) == []


def test_the_crd_schemas_are_valid_json_schemas(crds):
    for _crd, version in crds.values():
        Draft202012Validator.check_schema(json_schema(version["schema"]["openAPIV3Schema"]))


def test_the_export_has_one_object_per_model_cohort_and_tenant():
    kinds = [(m["kind"], m["metadata"]["name"]) for m in MANIFESTS]
    assert kinds == [("ResourceFlavor", "h100"), ("ResourceFlavor", "a100-80gb"),
                     ("Cohort", "musk"), ("Cohort", "academia"),
                     ("ClusterQueue", "tesla"), ("ClusterQueue", "xai"), ("ClusterQueue", "research"),
                     ("LocalQueue", "tesla"), ("LocalQueue", "xai"), ("LocalQueue", "research")]


def test_references_between_objects_resolve():
    names = {(m["kind"], m["metadata"]["name"]) for m in MANIFESTS}
    for m in MANIFESTS:
        if m["kind"] == "ClusterQueue":
            assert ("Cohort", m["spec"]["cohortName"]) in names
            for flavor in m["spec"]["resourceGroups"][0]["flavors"]:
                assert ("ResourceFlavor", flavor["name"]) in names
        if m["kind"] == "LocalQueue":
            assert ("ClusterQueue", m["spec"]["clusterQueue"]) in names
            assert m["metadata"]["namespace"] == "ml-jobs"


def _resource(tenant: str, flavor: str) -> dict:
    cq = next(m for m in MANIFESTS if m["kind"] == "ClusterQueue" and m["metadata"]["name"] == tenant)
    rg = cq["spec"]["resourceGroups"][0]
    return next(f for f in rg["flavors"] if f["name"] == flavor)["resources"][0]


@pytest.mark.parametrize("tenant, flavor, field, expected", [
    pytest.param("tesla", "h100", "nominalQuota", "16", id="whole-gpus"),
    pytest.param("tesla", "h100", "borrowingLimit", "8", id="borrowing-limit"),
    pytest.param("tesla", "h100", "lendingLimit", "4", id="lending-limit"),
    pytest.param("tesla", "a100-80gb", "borrowingLimit", None, id="no-limit-is-absent"),
    pytest.param("xai", "h100", "nominalQuota", "12500m", id="fractional-as-milli"),
    pytest.param("xai", "a100-80gb", "nominalQuota", "0", id="no-quota-is-zero-nominal"),
    pytest.param("research", "h100", "borrowingLimit", "0", id="zero-limit-is-kept"),
    pytest.param("research", "a100-80gb", "lendingLimit", "8", id="lend-everything"),
])
def test_quota_fields(tenant, flavor, field, expected):
    assert _resource(tenant, flavor).get(field) == expected


@pytest.mark.parametrize("tenant, weight", [("tesla", "2"), ("xai", "1500m"), ("research", "1")])
def test_fair_sharing_weight_is_a_quantity(tenant, weight):
    cq = next(m for m in MANIFESTS if m["kind"] == "ClusterQueue" and m["metadata"]["name"] == tenant)
    assert cq["spec"]["fairSharing"] == {"weight": weight}
    assert cq["spec"]["queueingStrategy"] == "StrictFIFO"


def _cq(manifests):
    return next(m for m in manifests if m["kind"] == "ClusterQueue")


def _break(change):
    def broken():
        m = copy.deepcopy(_cq(MANIFESTS))
        change(m)
        return m
    return broken


BROKEN = {
    "nominal-quota-as-list": lambda m: m["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]
    .update(nominalQuota=["16"]),
    "quantity-with-unit-text": lambda m: m["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]
    .update(nominalQuota="16 GPUs"),
    "v1beta1-field-cohort": lambda m: m["spec"].update(cohort=m["spec"].pop("cohortName")),
    "unknown-queueing-strategy": lambda m: m["spec"].update(queueingStrategy="FIFO"),
    "borrowing-without-cohort": lambda m: m["spec"].pop("cohortName"),
    "lending-above-nominal": lambda m: m["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]
    .update(lendingLimit="17"),
    "old-api-version": lambda m: m.update(apiVersion="kueue.x-k8s.io/v1beta1"),
    "name-not-dns": lambda m: m["metadata"].update(name="Tesla_Inc"),
}


@pytest.mark.parametrize("change", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_manifest_fails_validation(change, crds):
    manifest = _break(change)()
    assert validation_errors(manifest, crds), "the check should have failed"


@pytest.mark.parametrize("names", [
    pytest.param(["Team A", "team-a"], id="same-dns-name"),
    pytest.param(["x", "x"], id="listed-twice"),
    pytest.param(["--"], id="no-letters"),
])
def test_tenant_names_that_cannot_be_kubernetes_names(names):
    tenants = [Tenant(n, {"H100": TenantQuota(1)}) for n in names]
    with pytest.raises(InputError):
        kueue_manifests(CLUSTER, tenants)


def test_a_quota_on_a_model_the_cluster_lacks_is_refused():
    with pytest.raises(InputError, match="B200"):
        kueue_manifests(CLUSTER, [Tenant("a", {"B200": TenantQuota(1)})])


def test_kueue_yaml_round_trips_and_is_deterministic():
    text = kueue_yaml(MANIFESTS)
    assert text.startswith("---\napiVersion: kueue.x-k8s.io/v1beta2\nkind: ResourceFlavor\n")
    assert text.count("---\n") == len(MANIFESTS)
    assert list(yaml.safe_load_all(text)) == MANIFESTS
    assert kueue_yaml(kueue_manifests(CLUSTER, TENANTS, namespace="ml-jobs")) == text


# -- Slurm -----------------------------------------------------------------------------------


SMALL = Cluster((NodePool("H100", 2, 8), NodePool("A100", 1, 8)))
SLURM_TENANTS = [
    Tenant("tesla", {"H100": TenantQuota(8, borrowing_limit_gpus=4, lending_limit_gpus=2),
                     "A100": TenantQuota(2.5, borrowing_limit_gpus=1)}, cohort="musk", weight=2),
    Tenant("xai", {"H100": TenantQuota(8)}, cohort="musk", weight=1.5),
]
SLURM_GOLDEN = """\
# gpufleet -> Slurm: Slurm has no nominal quota, borrowing or lending limit; each tenant's
# GrpTRES cap is nominal + borrowing limit (no limit: all GPUs of the model); lending limits are dropped.
# slurm.conf needs AccountingStorageTRES=gres/gpu:h100,gres/gpu:a100
# tesla: A100 cap 3.5 GPUs rounded down to 3
# xai: weight 1.5 becomes Fairshare=2
sacctmgr -i add account musk Cluster=gpufleet Parent=root Description="gpufleet cohort musk" Organization=gpufleet
sacctmgr -i add account tesla Cluster=gpufleet Parent=musk Description="gpufleet tenant tesla" Organization=gpufleet
sacctmgr -i modify account where name=tesla cluster=gpufleet set GrpTRES=gres/gpu:h100=12,gres/gpu:a100=3 Fairshare=2
sacctmgr -i add account xai Cluster=gpufleet Parent=musk Description="gpufleet tenant xai" Organization=gpufleet
sacctmgr -i modify account where name=xai cluster=gpufleet set GrpTRES=gres/gpu:h100=16,gres/gpu:a100=8 Fairshare=2
"""


def test_slurm_commands_golden():
    assert "\n".join(slurm_commands(SMALL, SLURM_TENANTS)) + "\n" == SLURM_GOLDEN


def test_slurm_cap_is_at_most_the_cluster():
    lines = slurm_commands(SMALL, [Tenant("a", {"H100": TenantQuota(10, borrowing_limit_gpus=100)})])
    assert "GrpTRES=gres/gpu:h100=16,gres/gpu:a100=8 Fairshare=1" in lines[-1]


def test_slurm_refuses_a_cohort_and_tenant_of_one_name():
    with pytest.raises(InputError, match="cohort and a tenant"):
        slurm_commands(SMALL, [Tenant("musk", {}, cohort="musk")])


# -- quotas on a date --------------------------------------------------------------------------


QUOTA_TENANTS = [Tenant("a", {"H100": TenantQuota(10, lending_limit_gpus=6)}), Tenant("b", {})]
CHANGES = [QuotaChange(100, "a", "H100", 8), QuotaChange(200, "a", "H100", 4), QuotaChange(200, "a", "H100", 5),
           QuotaChange(150, "b", "H100", 3)]


@pytest.mark.parametrize("at_s, a_nominal, a_lending, b_quotas", [
    pytest.param(0, 10, 6, {}, id="before-any-change"),
    pytest.param(100, 8, 6, {}, id="at-a-change"),
    pytest.param(150, 8, 6, {"H100": TenantQuota(3)}, id="new-model-no-limits"),
    pytest.param(200, 5, 5, {"H100": TenantQuota(3)}, id="same-time-last-wins-lending-clamped"),
    pytest.param(1e9, 5, 5, {"H100": TenantQuota(3)}, id="long-after"),
])
def test_quotas_at(at_s, a_nominal, a_lending, b_quotas):
    a, b = quotas_at(QUOTA_TENANTS, CHANGES, at_s)
    assert (a.quotas["H100"].nominal_gpus, a.quotas["H100"].lending_limit_gpus) == (a_nominal, a_lending)
    assert b.quotas == b_quotas


def test_quotas_at_refuses_an_unknown_tenant():
    with pytest.raises(InputError, match="'c'"):
        quotas_at(QUOTA_TENANTS, [QuotaChange(0, "c", "H100", 1)], 0)


# -- loans as quota changes --------------------------------------------------------------------

EPOCH = "2024-02-01"  # 2024-03-01 is day 29, 2024-04-01 day 60, 2024-04-15 day 74, 2024-05-01 day 90
LOAN_TENANTS = [Tenant("tesla", {"H100": TenantQuota(1000)}), Tenant("xai", {"H100": TenantQuota(200)}),
                Tenant("spacex", {})]
MODELS = {"h100": "H100"}


def _fleet() -> Story:
    return (Story("2024-01-01").entity("tesla").entity("xai").entity("spacex").model("h100")
            .site("s1", "tesla", slots=2000, mw=10.0).po("po1", "tesla", {"l1": (1000, "2024-01-01")})
            .deliver("l1").install("tesla", "s1", 1000)
            .on("2024-03-01").lend("L-1", "tesla", "xai", "s1", 500, end="2024-05-01"))


def _changes(story: Story, tenants=LOAN_TENANTS, **kw) -> list[tuple[float, str, float]]:
    changes = loan_quota_changes(story.state(), tenants, epoch=kw.pop("epoch", EPOCH), model_map=MODELS, **kw)
    assert all(c.model == "H100" for c in changes)
    return [(c.at_s / DAY, c.tenant, c.nominal_gpus) for c in changes]


LOAN_CASES = {
    "open-to-end-date": (_fleet(), [(29, "tesla", 500), (29, "xai", 700), (90, "tesla", 1000), (90, "xai", 200)]),
    "closed-early": (_fleet().on("2024-04-15").close("L-1"),
                     [(29, "tesla", 500), (29, "xai", 700), (74, "tesla", 1000), (74, "xai", 200)]),
    "one-reclaim": (_fleet().on("2024-04-01").reclaim("L-1", 100, notice="2024-04-01"),
                    [(29, "tesla", 500), (29, "xai", 700), (60, "tesla", 600), (60, "xai", 600),
                     (90, "tesla", 1000), (90, "xai", 200)]),
}


@pytest.mark.parametrize("story, expected", LOAN_CASES.values(), ids=LOAN_CASES.keys())
def test_a_loan_moves_nominal_quota_for_its_dates(story, expected):
    assert _changes(story) == expected


def test_reasons_name_the_loan():
    changes = loan_quota_changes(_fleet().state(), LOAN_TENANTS, epoch=EPOCH, model_map=MODELS)
    assert changes[0].reason == "loan L-1: tesla lends 500 H100 to xai"
    assert changes[-1].reason == "loan L-1 ends: 500 H100 back from xai to tesla"


def test_several_reclaims_need_the_event_history():
    story = (_fleet().on("2024-03-15").reclaim("L-1", 100, notice="2024-03-15")
             .on("2024-04-01").reclaim("L-1", 100, notice="2024-04-01"))
    with pytest.raises(InputError, match="reclaimed several times"):
        _changes(story)
    assert _changes(story, reclaims=loan_reclaims(story.items)) == [
        (29, "tesla", 500), (29, "xai", 700), (43, "tesla", 600), (43, "xai", 600),
        (60, "tesla", 700), (60, "xai", 500), (90, "tesla", 1000), (90, "xai", 200)]


@pytest.mark.parametrize("epoch, expected", [
    pytest.param("2024-03-15", [(0, "tesla", 500), (0, "xai", 700), (47, "tesla", 1000), (47, "xai", 200)],
                 id="started-before-epoch"),
    pytest.param("2024-06-01", [], id="over-before-epoch"),
])
def test_times_before_the_epoch_clamp_to_zero(epoch, expected):
    assert _changes(_fleet(), epoch=epoch) == expected


def test_absolute_changes_and_loans_combine():
    helios = [QuotaChange(40 * DAY, "tesla", "H100", 800, "helios day 40")]
    changes = _changes(_fleet(), base_changes=helios)
    assert changes == [(29, "tesla", 500), (29, "xai", 700), (40, "tesla", 300), (90, "tesla", 800),
                       (90, "xai", 200)]


def test_merge_nets_changes_at_one_time():
    deltas = [QuotaDelta(10, "xai", "H100", -200, "x"), QuotaDelta(10, "xai", "H100", 50, "y")]
    assert merge_quota_changes(LOAN_TENANTS, [QuotaChange(10, "xai", "H100", 300)], deltas) == [
        QuotaChange(10, "xai", "H100", 150, "x; y")]


@pytest.mark.parametrize("tenants, match", [
    pytest.param(LOAN_TENANTS[:1] + LOAN_TENANTS[2:], "L-1.*'xai'", id="borrower-missing"),
    pytest.param(LOAN_TENANTS[1:], "L-1.*'tesla'", id="lender-missing"),
    pytest.param([Tenant("tesla", {"H100": TenantQuota(100)}), *LOAN_TENANTS[1:]],
                 "tesla's nominal H100 quota would be -400 GPUs.*loan L-1", id="lender-goes-negative"),
])
def test_loans_that_cannot_become_quotas(tenants, match):
    with pytest.raises(InputError, match=match):
        loan_quota_changes(_fleet().state(), tenants, epoch=EPOCH, model_map=MODELS)


@pytest.mark.parametrize("model_map, error", [
    pytest.param({"a100": "A100"}, "h100", id="unmapped-model"),
    pytest.param({"h100": None}, None, id="mapped-to-none-is-left-out"),
])
def test_model_map(model_map, error):
    state = _fleet().state()
    if error:
        with pytest.raises(InputError, match=error):
            loan_quota_deltas(state, LOAN_TENANTS, epoch=EPOCH, model_map=model_map)
    else:
        assert loan_quota_deltas(state, LOAN_TENANTS, epoch=EPOCH, model_map=model_map) == []


def test_a_bad_epoch_is_an_input_error():
    with pytest.raises(InputError, match="epoch"):
        loan_quota_deltas(_fleet().state(), LOAN_TENANTS, epoch="March")


def test_loan_start_dates_are_midnight_utc():
    deltas = loan_quota_deltas(_fleet().state(), LOAN_TENANTS, epoch="2024-02-29T12:00:00+00:00")
    assert [d.at_s for d in deltas] == [12 * 3600.0] * 2 + [(61 * DAY + 12 * 3600.0)] * 2


def test_the_example_quotas_export_validates_at_every_change(crds):
    """examples/quotas.yaml (the README's export command) gives valid Kueue objects before and after its changes."""
    example = Path(__file__).resolve().parents[1] / "examples" / "quotas.yaml"
    setup = scheduling.prepare_quotas("16x8:A100,2x8:H100", example)
    for at_s in (0.0, 86_400.0):
        for manifest in yaml.safe_load_all(scheduling.export_quotas(setup, "kueue", at_s=at_s)):
            if manifest:
                assert validation_errors(manifest, crds) == [], manifest["metadata"]["name"]
