"""Scheduling services: set up a simulation from files (and the ledger's loans), run it, export quotas.

The CLI and the benchmark call these; they own the file reading, the scheduler owns the deciding.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from gpufleet.domain.state import FleetState
from gpufleet.errors import InputError
from gpufleet.scheduler import (Cluster, PolicyOptions, QuotaChange, SimulationResult, Tenant, TenantQuota,
                                Workload,
                                make_policy, simulate)
from gpufleet.scheduler.fairness import alone_jct_s
from gpufleet.scheduler.limits import MAX_TIME_S, within
from gpufleet.scheduler.sizing import nominal_gpus, size_from_workload
from gpufleet.services import export, traces
from gpufleet.services.loan_quotas import loan_quota_changes

READERS: dict[str, Callable[..., Workload]] = {"philly": traces.read_philly, "alibaba": traces.read_alibaba}
DEFAULT_CHECKPOINT_S = 3600.0  # the traces record no checkpoints; hourly is common practice
DEFAULT_RESTART_S = 60.0       # reload a checkpoint and warm up


@dataclass(frozen=True)
class Setup:
    """Everything a simulation needs; ``sizing`` says how the cluster was chosen when it was not given."""

    workload: Workload
    cluster: Cluster
    tenants: list[Tenant]
    quota_changes: list[QuotaChange]
    sizing: str


def read_workload(trace: Path, trace_format: str, *, skip_bad_rows: bool = False,
                  checkpoint_s: float | None = DEFAULT_CHECKPOINT_S, restart_s: float = DEFAULT_RESTART_S) -> Workload:
    """A trace as jobs; jobs without a checkpoint interval or restart cost get the given defaults."""
    _check_seconds(checkpoint_s or 0.0, "checkpoint_s")
    _check_seconds(restart_s, "restart_s")
    try:
        reader = READERS[trace_format]
    except KeyError:
        raise InputError(f"unknown trace format {trace_format!r}; choose one of {', '.join(READERS)}",
                         field="trace-format") from None
    if not Path(trace).is_file():
        raise InputError(f"no such file: {trace}", field="trace")
    workload = reader(trace, skip_bad_rows=skip_bad_rows)
    jobs = tuple(dataclasses.replace(j, checkpoint_s=j.checkpoint_s or checkpoint_s,
                                     restart_s=j.restart_s or restart_s) for j in workload.jobs)
    return dataclasses.replace(workload, jobs=jobs)


def _check_seconds(value: float, field: str) -> None:
    if not within(value, 0.0, MAX_TIME_S):
        raise InputError(f"must be a finite number of seconds from 0 to {MAX_TIME_S:,.0f}, got {value}", field=field)


def prepare(workload: Workload, *, cluster_spec: str | None = None, quotas: Path | None = None,
            loans: FleetState | None = None, loan_models: dict[str, str | None] | None = None,
            skip_bad_rows: bool = False) -> Setup:
    """Cluster and quotas from the files given, or sized from the trace; the ledger's loans on top.
    The jobs' GPU models are matched to the cluster's (``traces.match_models``; ``skip_bad_rows``: a
    job the cluster has no model for is skipped and counted instead of refused)."""
    if quotas is not None and cluster_spec is None:
        raise InputError("a quotas file needs --cluster too (its quotas are per GPU model of that cluster)",
                         field="cluster")
    if cluster_spec is None:
        cluster, tenants = size_from_workload(workload.jobs)
        changes: list[QuotaChange] = []
        sizing = (f"sized from the trace: {cluster.gpus} GPUs = each tenant's offered load / 0.8, "
                  "at least its largest job, rounded up to 8-GPU nodes")
        workload = traces.match_models(workload, cluster, skip_bad_rows=skip_bad_rows,
                                       hint="; a cluster sized from the trace has one model: give --cluster "
                                            "(for Alibaba, the trace's node list)")
    else:
        cluster = traces.read_cluster(cluster_spec)
        workload = traces.match_models(workload, cluster, skip_bad_rows=skip_bad_rows)
        tenants, changes = (traces.read_quotas(quotas, cluster, epoch=workload.epoch) if quotas
                            else _even_shares(workload, cluster))
        sizing = "given" if quotas else ("given cluster; each pool shared in proportion to the quotas the "
                                         "default rule would size (offered load / 0.8, at least the largest job)")
    if loans is not None:
        changes = _with_loans(loans, tenants, changes, workload.epoch, loan_models,
                              "this trace has relative times only; ledger loans need dated traces", "loans")
    return Setup(workload, cluster, tenants, changes, sizing)


def _even_shares(workload: Workload, cluster: Cluster) -> tuple[list[Tenant], list[QuotaChange]]:
    """Each pool's GPUs shared among the tenants in proportion to the quotas the default sizing rule
    gives them (offered load / 0.8, at least the largest job; largest remainder, whole GPUs), so every
    model's quotas add up to its pool."""
    names, nominal = nominal_gpus(workload.jobs, gpus_per_node=1)
    weights = [float(n) for n in nominal]
    quotas: list[dict[str, TenantQuota]] = [{} for _ in names]
    for pool in cluster.pools:
        for q, gpus in zip(quotas, _largest_remainder(weights, pool.gpus)):
            q[pool.model] = TenantQuota(gpus)
    return [Tenant(name, q) for name, q in zip(names, quotas)], []


def _largest_remainder(weights: list[float], total: int) -> list[int]:
    exact = [w * total / sum(weights) for w in weights]
    shares = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: shares[i] - exact[i])[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _with_loans(loans: FleetState, tenants: list[Tenant], changes: list[QuotaChange], epoch: str | None,
                model_map: dict[str, str | None] | None, no_epoch: str, field: str) -> list[QuotaChange]:
    """``changes`` with the ledger's loans on top, as quota transfers from ``epoch`` (InputError without one)."""
    if epoch is None:
        raise InputError(no_epoch, field=field)
    return loan_quota_changes(loans, tenants, epoch=epoch, model_map=model_map, base_changes=changes)


def prepare_quotas(cluster_spec: str, quotas: Path, *, epoch: str | None = None,
                   loans: FleetState | None = None) -> Setup:
    """Cluster and quotas (and the ledger's loans from ``epoch``) without a trace, for an export."""
    cluster = traces.read_cluster(cluster_spec)
    tenants, changes = traces.read_quotas(quotas, cluster, epoch=epoch)
    if loans is not None:
        changes = _with_loans(loans, tenants, changes, epoch, None, "ledger loans need --epoch, the time of second 0",
                              "epoch")
    return Setup(Workload(jobs=(), epoch=epoch), cluster, tenants, changes, "given")


def run(setup: Setup, policies: Sequence[str], *, options: PolicyOptions = PolicyOptions(),
        reclaim_grace_s: float = 30.0, keep_log: bool = False,
        progress: Callable[[str], Callable[[int], None]] | None = None) -> list[SimulationResult]:
    """Replay the workload under each policy; ``progress(policy)`` gives a per-step callback.

    Each tenant's jobs alone on its entitlement (for finish-time fairness) are replayed once for
    all the policies first, with ``progress("alone")``."""
    _check_seconds(reclaim_grace_s, "reclaim_grace_s")
    alone = alone_jct_s(setup.workload, setup.cluster, setup.tenants, quota_changes=setup.quota_changes,
                        options=options, reclaim_grace_s=reclaim_grace_s,
                        progress=progress("alone") if progress else None)
    return [simulate(setup.workload, setup.cluster, setup.tenants, make_policy(name, options),
                     quota_changes=setup.quota_changes, reclaim_grace_s=reclaim_grace_s, keep_log=keep_log,
                     progress=progress(name) if progress else None, alone_jct_s=alone)
            for name in policies]


def summary(setup: Setup, results: list[SimulationResult]) -> dict:
    """A simulation as JSON: the trace, the cluster, and each policy's results (``simulate --format json``)."""
    return {"trace": {"jobs": len(setup.workload.jobs), "skipped_rows": setup.workload.skipped,
                      "epoch": setup.workload.epoch},
            "cluster": {"gpus": setup.cluster.gpus, "sizing": setup.sizing,
                        "pools": [{"model": p.model, "nodes": p.nodes, "gpus_per_node": p.gpus_per_node}
                                  for p in setup.cluster.pools]},
            "policies": [r.to_dict() for r in results]}


def export_quotas(setup: Setup, engine: str, *, at_s: float = 0.0, namespace: str = "default") -> str:
    """The quotas in force at ``at_s`` as Kueue manifests (YAML) or Slurm ``sacctmgr`` commands."""
    _check_seconds(at_s, "at_s")
    tenants = export.quotas_at(setup.tenants, setup.quota_changes, at_s)
    if engine == "kueue":
        return export.kueue_yaml(export.kueue_manifests(setup.cluster, tenants, namespace=namespace))
    if engine == "slurm":
        return "\n".join(export.slurm_commands(setup.cluster, tenants)) + "\n"
    raise InputError(f"unknown engine {engine!r}; choose kueue or slurm", field="engine")
