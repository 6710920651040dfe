"""Default cluster and quotas sized from the workload, used when no cluster or quotas are given.

The rule, in plain words:

1. The trace's span is from the first job's arrival to the last job's end (arrival + service time).
2. A tenant's offered load, in GPUs, is the GPU-seconds its jobs ask for (GPUs x service seconds,
   summed over its jobs) divided by the span.
3. A tenant's nominal quota is its offered load divided by the target utilization (0.8 by default),
   rounded up to whole GPUs, but never less than its largest job (rounded up to whole GPUs), so
   that every job fits within its owner's quota. It is then rounded up to a whole number of nodes
   (8 GPUs per node by default).
4. The cluster is one pool of identical nodes of one GPU model holding exactly the sum of the
   nominal quotas. Every tenant is in cohort "default" with weight 1 and no borrowing or lending
   limits, so idle quota can be borrowed by anyone.

Tenants are listed by name; the same jobs always give the same cluster and quotas.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gpufleet.errors import InputError
from gpufleet.scheduler.limits import MAX_GPUS
from gpufleet.scheduler.model import MILLI, Cluster, Job, NodePool, Tenant, TenantQuota

_NOISE = 1e-9  # GPUs: float error below this does not round a quota up


def size_from_workload(jobs: Sequence[Job], *, gpus_per_node: int = 8, target_utilization: float = 0.8,
                       model: str = "gpu") -> tuple[Cluster, list[Tenant]]:
    """The default cluster and tenant quotas for ``jobs`` (rule in the module docstring)."""
    _check(jobs, gpus_per_node, target_utilization)
    names, nominal = nominal_gpus(jobs, gpus_per_node=gpus_per_node, target_utilization=target_utilization)
    if nominal.sum() > MAX_GPUS:
        raise InputError(f"the cluster sized from the trace would hold {int(nominal.sum()):,} GPUs, over the most a "
                         f"cluster may have, {MAX_GPUS:,}", field="cluster")
    tenants = [Tenant(name, {model: TenantQuota(int(n))}) for name, n in zip(names, nominal)]
    pool = NodePool(model, nodes=int(nominal.sum()) // gpus_per_node, gpus_per_node=gpus_per_node)
    return Cluster(pools=(pool,)), tenants


def nominal_gpus(jobs: Sequence[Job], *, gpus_per_node: int = 8,
                 target_utilization: float = 0.8) -> tuple[list[str], np.ndarray]:
    """Tenant names (sorted) and each one's nominal quota in GPUs, a multiple of ``gpus_per_node``."""
    names, owner = np.unique(np.array([j.tenant for j in jobs]), return_inverse=True)
    milli = np.fromiter((j.milli_gpus for j in jobs), dtype=np.int64, count=len(jobs))
    arrival = np.fromiter((j.arrival_s for j in jobs), dtype=float, count=len(jobs))
    service = np.fromiter((j.service_s for j in jobs), dtype=float, count=len(jobs))
    span = float((arrival + service).max() - arrival.min())
    gpu_seconds = np.bincount(owner, weights=milli * service, minlength=len(names)) / MILLI
    load = gpu_seconds / span if span > 0 else np.zeros(len(names))
    largest = np.zeros(len(names), dtype=np.int64)
    np.maximum.at(largest, owner, milli)
    gpus = np.maximum(np.ceil(load / target_utilization - _NOISE), -(-largest // MILLI)).astype(np.int64)
    return [str(n) for n in names], -(-gpus // gpus_per_node) * gpus_per_node


def _check(jobs: Sequence[Job], gpus_per_node: int, target_utilization: float) -> None:
    if not jobs:
        raise InputError("cannot size a cluster for a workload with no jobs", field="jobs")
    if gpus_per_node <= 0:
        raise InputError(f"must be > 0, got {gpus_per_node}", field="gpus_per_node")
    if not 0 < target_utilization <= 1:
        raise InputError(f"must be in (0, 1], got {target_utilization}", field="target_utilization")
