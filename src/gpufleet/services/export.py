"""Export a scheduler setup (cluster, tenants, quotas) to Kueue manifests or Slurm accounts.

Units: quotas are GPUs (floats, whole or fractional) as in :mod:`gpufleet.scheduler.model`;
times are seconds from the trace's epoch. Kubernetes quantities are strings: whole GPUs as
``"64"``, fractions as milli-GPUs (``"500m"``), which Kueue reads exactly.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Sequence

import yaml

from gpufleet.errors import InputError
from gpufleet.scheduler.model import MILLI, Cluster, QuotaChange, Tenant, TenantQuota, gpus_to_milli

KUEUE_API = "kueue.x-k8s.io/v1beta2"  # the storage version of every Kueue CRD we emit
GPU_RESOURCE = "nvidia.com/gpu"
MODEL_LABEL = "gpufleet.io/gpu-model"
MANAGED_BY = {"app.kubernetes.io/managed-by": "gpufleet"}
NAME_ANNOTATION = "gpufleet.io/name"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


# -- names and quantities --------------------------------------------------------------------


def dns_name(text: str, what: str = "name") -> str:
    """``text`` as a DNS-1123 label: lowercase, runs of other characters as ``-``, at most 63 characters."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63].rstrip("-")
    if not name:
        raise InputError(f"'{text}' has no letter or digit to make a Kubernetes name from", field=what)
    return name


def _unique_names(texts: Iterable[str], what: str) -> dict[str, str]:
    """Original -> DNS name for each distinct text; InputError if two texts share a DNS name."""
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for text in texts:
        if text in out:
            continue
        name = dns_name(text, what)
        if name in seen:
            raise InputError(f"{what}s '{seen[name]}' and '{text}' both become the name '{name}'", field=what)
        out[text], seen[name] = name, text
    return out


def quantity(gpus: float) -> str:
    """A Kubernetes quantity string: ``"64"`` for whole GPUs, ``"1500m"`` for fractional ones."""
    milli = gpus_to_milli(gpus)
    return str(milli // MILLI) if milli % MILLI == 0 else f"{milli}m"


def _check_models(cluster: Cluster, tenants: Sequence[Tenant]) -> None:
    for t in tenants:
        unknown = sorted(set(t.quotas) - set(cluster.models))
        if unknown:
            raise InputError(f"tenant '{t.name}' has quotas on {unknown}, which the cluster does not have "
                             f"(models: {list(cluster.models)})", field=f"tenants.{t.name}.quotas")


# -- Kueue -----------------------------------------------------------------------------------


def _names(cluster: Cluster, tenants: Sequence[Tenant]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """DNS-safe names of the GPU models, cohorts and tenants (InputError on a clash or an unknown model)."""
    _check_models(cluster, tenants)
    models = _unique_names(cluster.models, "GPU model")
    cohorts = _unique_names([t.cohort for t in tenants], "cohort")
    tenant_names = _unique_names([t.name for t in tenants], "tenant")
    if len(tenant_names) != len(tenants):
        raise InputError("tenant names must be listed once each", field="tenants")
    return models, cohorts, tenant_names


def kueue_manifests(cluster: Cluster, tenants: list[Tenant], *, namespace: str = "default") -> list[dict]:
    """Kueue ``v1beta2`` objects that set up ``tenants`` on ``cluster``, in apply order.

    Mapping (fields as in the CRDs' storage version, ``kueue.x-k8s.io/v1beta2``):

    * each GPU model -> a ``ResourceFlavor`` named ``dns_name(model)`` whose ``spec.nodeLabels``
      are ``{gpufleet.io/gpu-model: <flavor name>}`` (label the nodes so);
    * each cohort -> a ``Cohort`` (v1beta2 makes cohorts objects; no ``parentName``, no quota of its own);
    * each tenant -> a cluster-scoped ``ClusterQueue`` named ``dns_name(tenant)`` with ``spec.cohortName``,
      ``namespaceSelector: {}`` (every namespace), one resource group covering ``nvidia.com/gpu`` whose
      flavors are *all* the cluster's models in pool (preference) order: Kueue tries flavors in order.
      Per flavor: ``nominalQuota`` (0 for a model the tenant has no quota on, so it can only borrow it),
      ``borrowingLimit``/``lendingLimit`` only where set (absent = no limit, as in the model);
      ``preemption``: ``reclaimWithinCohort: Any`` (a tenant under its nominal quota takes it back from
      borrowers), ``withinClusterQueue: LowerPriority``, ``borrowWithinCohort: {policy: Never}``
      (borrowing never preempts another tenant's work); ``fairSharing.weight`` is the tenant's weight
      as a quantity string; ``queueingStrategy: StrictFIFO``;
    * each tenant -> a ``LocalQueue`` of the same name in ``namespace`` pointing at its ClusterQueue.

    Every object carries ``app.kubernetes.io/managed-by: gpufleet`` and the original name in the
    ``gpufleet.io/name`` annotation. InputError if two models, cohorts or tenants map to one name,
    or a tenant has a quota on a model the cluster lacks.
    """
    if not _DNS_LABEL.match(namespace):
        raise InputError(f"'{namespace}' is not a valid namespace name", field="namespace")
    flavors, cohorts, queues = _names(cluster, tenants)
    out = [_object("ResourceFlavor", flavors[m], m, {"nodeLabels": {MODEL_LABEL: flavors[m]}})
           for m in cluster.models]
    out += [_object("Cohort", name, cohort, {}) for cohort, name in cohorts.items()]
    out += [_object("ClusterQueue", queues[t.name], t.name, _cluster_queue_spec(t, flavors, cohorts[t.cohort]))
            for t in tenants]
    out += [_object("LocalQueue", queues[t.name], t.name, {"clusterQueue": queues[t.name]}, namespace)
            for t in tenants]
    return out


def _object(kind: str, name: str, original: str, spec: dict, namespace: str | None = None) -> dict:
    metadata: dict = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    metadata["labels"] = dict(MANAGED_BY)
    metadata["annotations"] = {NAME_ANNOTATION: original}
    return {"apiVersion": KUEUE_API, "kind": kind, "metadata": metadata, "spec": spec}


def _cluster_queue_spec(tenant: Tenant, flavors: dict[str, str], cohort: str) -> dict:
    resources = [{"name": flavors[m], "resources": [_resource_quota(tenant.quotas.get(m))]} for m in flavors]
    return {
        "cohortName": cohort,
        "namespaceSelector": {},
        "queueingStrategy": "StrictFIFO",
        "resourceGroups": [{"coveredResources": [GPU_RESOURCE], "flavors": resources}],
        "preemption": {"reclaimWithinCohort": "Any", "withinClusterQueue": "LowerPriority",
                       "borrowWithinCohort": {"policy": "Never"}},
        "fairSharing": {"weight": quantity(tenant.weight)},
    }


def _resource_quota(quota: TenantQuota | None) -> dict:
    quota = quota or TenantQuota(0.0)
    out = {"name": GPU_RESOURCE, "nominalQuota": quantity(quota.nominal_gpus)}
    if quota.borrowing_limit_gpus is not None:
        out["borrowingLimit"] = quantity(quota.borrowing_limit_gpus)
    if quota.lending_limit_gpus is not None:
        out["lendingLimit"] = quantity(quota.lending_limit_gpus)
    return out


def kueue_yaml(manifests: Iterable[dict]) -> str:
    """The manifests as one multi-document YAML string (``---`` before each), keys in insertion order.

    The manifests' dicts are built in a fixed order, so equal inputs give byte-equal text.
    """
    return yaml.safe_dump_all(list(manifests), sort_keys=False, explicit_start=True, default_flow_style=False)


# -- Slurm -----------------------------------------------------------------------------------


def slurm_commands(cluster: Cluster, tenants: list[Tenant], *, cluster_name: str = "gpufleet") -> list[str]:
    """``sacctmgr -i`` commands that set up one Slurm account per tenant, under one per cohort.

    Accounts: ``root -> <cohort> -> <tenant>`` (DNS-style names, which Slurm accepts). Each tenant
    account gets ``Fairshare=<weight rounded, at least 1>`` and ``GrpTRES=gres/gpu:<model>=<cap>``
    per cluster model, where cap = nominal + borrowing limit (no borrowing limit, or a model without
    quota and limit: every GPU of that model), at most the model's GPUs in the cluster, in whole GPUs
    rounded down. Slurm has no nominal/borrowed distinction and no lending limit: a tenant may use up
    to its cap whenever GPUs are free and nothing is reclaimed (fair share only orders the queue), so
    lending limits are dropped. The output starts with ``#`` comment lines saying so and naming
    every rounding. Typed GRES limits need ``AccountingStorageTRES=gres/gpu:<model>`` in slurm.conf.
    InputError on a name clash between accounts (cohort or tenant).
    """
    models, cohorts, accounts = _names(cluster, tenants)
    clash = set(cohorts.values()) & set(accounts.values())
    if clash:
        raise InputError(f"Slurm accounts share one namespace: {sorted(clash)} would name both a cohort "
                         "and a tenant", field="tenants")
    notes = [
        "# gpufleet -> Slurm: Slurm has no nominal quota, borrowing or lending limit; each tenant's",
        "# GrpTRES cap is nominal + borrowing limit (no limit: all GPUs of the model); lending limits are dropped.",
        f"# slurm.conf needs AccountingStorageTRES={','.join(f'gres/gpu:{models[m]}' for m in cluster.models)}",
    ]
    where = f"Cluster={cluster_name}"
    lines = [f'sacctmgr -i add account {name} {where} Parent=root Description="gpufleet cohort {_text(c)}" '
             "Organization=gpufleet" for c, name in cohorts.items()]
    for t in tenants:
        caps, fairshare = _tenant_limits(t, cluster, models, notes)
        name = accounts[t.name]
        lines.append(f'sacctmgr -i add account {name} {where} Parent={cohorts[t.cohort]} '
                     f'Description="gpufleet tenant {_text(t.name)}" Organization=gpufleet')
        lines.append(f"sacctmgr -i modify account where name={name} cluster={cluster_name} "
                     f"set GrpTRES={caps} Fairshare={fairshare}")
    return notes + lines


def _tenant_limits(tenant: Tenant, cluster: Cluster, models: dict[str, str], notes: list[str]) -> tuple[str, int]:
    """(GrpTRES value, Fairshare) of one tenant; appends a note per rounding."""
    caps = []
    for pool in cluster.pools:
        quota = tenant.quotas.get(pool.model)
        cap = float(pool.gpus)
        if quota is not None and quota.borrowing_limit_gpus is not None:
            cap = min(cap, quota.nominal_gpus + quota.borrowing_limit_gpus)
        whole = math.floor(gpus_to_milli(cap) / MILLI)
        if whole * MILLI != gpus_to_milli(cap):
            notes.append(f"# {tenant.name}: {pool.model} cap {cap:g} GPUs rounded down to {whole}")
        caps.append(f"gres/gpu:{models[pool.model]}={whole}")
    fairshare = max(1, math.floor(tenant.weight + 0.5))
    if fairshare != tenant.weight:
        notes.append(f"# {tenant.name}: weight {tenant.weight:g} becomes Fairshare={fairshare}")
    return ",".join(caps), fairshare


def _text(text: str) -> str:
    """Text safe inside a double-quoted shell word."""
    return re.sub(r'["$`\\]', "", text)


# -- quotas on a date ------------------------------------------------------------------------


def quotas_at(tenants: Sequence[Tenant], changes: Iterable[QuotaChange], at_s: float) -> list[Tenant]:
    """``tenants`` with each nominal quota set by the latest change at or before ``at_s`` (seconds).

    Changes at the same time apply in list order (the last wins). A change on a model the tenant
    had no quota on adds a quota without limits; a lending limit above the new nominal is
    clamped to it. InputError for a change naming an unknown tenant.
    """
    latest: dict[tuple[str, str], QuotaChange] = {}
    names = {t.name for t in tenants}
    for change in sorted(changes, key=lambda c: c.at_s):
        if change.tenant not in names:
            raise InputError(f"quota change at {change.at_s}s names unknown tenant '{change.tenant}'",
                             field="tenant")
        if change.at_s <= at_s:
            latest[(change.tenant, change.model)] = change
    return [_with_nominals(t, {m: c.nominal_gpus for (n, m), c in latest.items() if n == t.name})
            for t in tenants]


def _with_nominals(tenant: Tenant, nominals: dict[str, float]) -> Tenant:
    quotas = dict(tenant.quotas)
    for model, nominal in nominals.items():
        old = quotas.get(model, TenantQuota(0.0))
        lending = old.lending_limit_gpus
        quotas[model] = dataclasses.replace(
            old, nominal_gpus=nominal, lending_limit_gpus=None if lending is None else min(lending, nominal))
    return dataclasses.replace(tenant, quotas=quotas)
