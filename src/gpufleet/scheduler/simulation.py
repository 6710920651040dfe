"""Replay a workload under one policy and measure it: the entry point for the CLI and the benchmark."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from gpufleet.errors import InputError
from gpufleet.scheduler import fairness
from gpufleet.scheduler.engine import LogLine, Scheduler, run_to_end
from gpufleet.scheduler.fairness import Fairness, Intervals
from gpufleet.scheduler.kernel import Kernel
from gpufleet.scheduler.metrics import Figures, figures, nominal_gpu_s
from gpufleet.scheduler.model import MILLI, Cluster, QuotaChange, Tenant, Workload
from gpufleet.scheduler.outcomes import JobOutcomes, job_outcomes
from gpufleet.scheduler.policies import Policy
from gpufleet.scheduler.state import ClusterState


@dataclass(frozen=True)
class SimulationResult:
    policy: str
    overall: Figures
    tenants: dict[str, Figures]
    fairness: Fairness
    events: int
    decisions: int
    wall_s: float
    busy_integral_gpu_s: float  # GPUs held integrated over time, measured apart from the job records
    log: list[LogLine] = field(default_factory=list)
    jobs: JobOutcomes | None = None  # one row per job (scheduler/outcomes.py)

    def to_dict(self) -> dict:
        """The documented JSON form (docs/scheduling.md): overall figures at the top level."""
        return {"policy": self.policy, **self.overall.to_dict(), **self.fairness.to_dict(),
                "tenants": [{"tenant": name, **f.to_dict(), **self.fairness.tenant_dict(name)}
                            for name, f in self.tenants.items()],
                "run": {"events": self.events, "decisions": self.decisions, "wall_s": round(self.wall_s, 3),
                        "events_per_s": round(self.events / self.wall_s) if self.wall_s else None}}


def simulate(workload: Workload, cluster: Cluster, tenants: list[Tenant], policy: Policy, *,
             quota_changes: Sequence[QuotaChange] = (), reclaim_grace_s: float = 30.0, keep_log: bool = False,
             kernel: Kernel | None = None, progress: Callable[[int], None] | None = None,
             alone_jct_s: np.ndarray | None = None) -> SimulationResult:
    """Run every job of ``workload`` to completion under ``policy`` and return the figures.

    ``alone_jct_s``: each job's completion time with its tenant alone on its entitlement, for
    finish-time fairness (:func:`~gpufleet.scheduler.fairness.alone_jct_s`, run here when not
    given; a caller replaying one workload under several policies can work it out once)."""
    log: list[LogLine] | None = [] if keep_log else None
    scheduler = Scheduler(cluster, tenants, policy, kernel, reclaim_grace_s=reclaim_grace_s, log=log)
    _check_every_job_can_start(scheduler.state, policy, workload, quota_changes)
    for change in quota_changes:
        scheduler.change_quota(change)
    started = time.perf_counter()
    scheduler.feed(workload.jobs)
    run_to_end(scheduler, progress)
    wall_s = time.perf_counter() - started
    overall, per_tenant = _figures(scheduler)
    if alone_jct_s is None:
        alone_jct_s = fairness.alone_jct_s(workload, cluster, tenants, quota_changes=quota_changes,
                                           options=policy.options, reclaim_grace_s=reclaim_grace_s)
    return SimulationResult(policy.name, overall, per_tenant, _fairness(scheduler, alone_jct_s), scheduler.kernel.steps,
                            scheduler.decisions, wall_s, scheduler.busy_integral_milli_s / MILLI, log or [],
                            job_outcomes(scheduler))


def _check_every_job_can_start(state: ClusterState, policy: Policy, workload: Workload,
                               changes: Sequence[QuotaChange]) -> None:
    """Refuse a workload with a job larger than anything its tenant could ever be given."""
    peak = [row[:] for row in state.nominal]
    for c in changes:
        t, m = state.tenant_index.get(c.tenant), state.model_index.get(c.model)
        if t is None or m is None:
            raise InputError(f"a quota change names tenant {c.tenant!r} on {c.model!r}, which "
                             "the cluster and quotas do not have", field="quotas")
        peak[t][m] = max(peak[t][m], int(round(c.nominal_gpus * MILLI)))
    ceilings = {}
    for job in workload.jobs:
        state.check_job(job)
        t = state.tenant_index[job.tenant]
        key = (t, job.models)
        if key not in ceilings:
            ceilings[key] = max(policy.ceiling(state, peak, t, m) for m in state.model_indices(job))
        if job.milli_gpus > ceilings[key]:
            raise InputError(f"job {job.id} (line {job.line}) needs {job.gpus:g} GPUs, but under "
                             f"'{policy.name}' tenant {job.tenant} can never hold more than "
                             f"{ceilings[key] / MILLI:g}, so it could never start", field="gpus")


def _figures(scheduler: Scheduler) -> tuple[Figures, dict[str, Figures]]:
    state, rec = scheduler.state, scheduler.records
    arrival = np.array([j.arrival_s for j in state.jobs])
    milli = np.array([j.milli_gpus for j in state.jobs], dtype=float)
    tenant = np.array(state.job_tenant)
    cols = [np.array(c) for c in (rec.finish_s, rec.busy_milli_s, rec.lost_milli_s, rec.preempted_milli_s)]
    preemptions = np.array(state.preemptions)
    wait = np.array(rec.guarantee_wait_s)
    start_s = float(arrival.min()) if len(arrival) else 0.0
    end_s = float(np.nanmax(cols[0])) if len(arrival) and not np.all(np.isnan(cols[0])) else start_s
    span_s = end_s - start_s
    changes = _changes_by_tenant(scheduler)
    per_tenant = {}
    for t, spec in enumerate(state.tenants):
        mask = tenant == t
        quota_gpu_s = sum(nominal_gpu_s(_initial(spec, m), changes.get((t, m), []), start_s, end_s)
                          for m in state.models)
        per_tenant[spec.name] = figures(arrival[mask], cols[0][mask], milli[mask], *(c[mask] for c in cols[1:]),
                                        preemptions[mask], quota_gpu_s, scheduler.violation_s[t],
                                        scheduler.violation_max_s[t], span_s, wait[mask])
    overall = figures(arrival, cols[0], milli, *cols[1:], preemptions, state.cluster.gpus * span_s,
                      sum(scheduler.violation_s), max(scheduler.violation_max_s, default=0.0), span_s, wait)
    return overall, per_tenant


def _fairness(scheduler: Scheduler, alone_jct_s: np.ndarray) -> Fairness:
    """Jain's index over time from the runs the engine recorded, and finish-time fairness against
    ``alone_jct_s`` (see :mod:`gpufleet.scheduler.fairness`)."""
    state, rec = scheduler.state, scheduler.records
    tenant = np.array(state.job_tenant, dtype=np.int64)
    arrival = np.array([j.arrival_s for j in state.jobs])
    milli = np.array([j.milli_gpus for j in state.jobs], dtype=np.int64)
    finish = np.array(rec.finish_s)
    runs = np.array(rec.runs, dtype=float).reshape(-1, 3)
    job = runs[:, 0].astype(np.int64)
    start_s = float(arrival.min()) if len(arrival) else 0.0
    end_s = float(max(np.nanmax(finish, initial=start_s), runs[:, 2].max(initial=start_s)))
    held = Intervals(tenant[job], runs[:, 1], runs[:, 2], milli[job])
    present = Intervals(tenant, arrival, np.where(np.isnan(finish), end_s, finish), np.ones_like(tenant))
    entitled = fairness.entitlement_intervals(state.tenants, state.models, scheduler.applied_quota_changes,
                                              start_s, end_s)
    n = len(state.tenants)
    rho = fairness.finish_time_fairness(tenant, finish - arrival, alone_jct_s, n)
    not_alone = np.bincount(tenant[np.isnan(alone_jct_s)], minlength=n)
    names = [t.name for t in state.tenants]
    return Fairness(fairness.jain_over_time(held, present, entitled, n), dict(zip(names, rho)),
                    {name: int(k) for name, k in zip(names, not_alone)})


def _initial(spec: Tenant, model: str) -> int:
    q = spec.quotas.get(model)
    return 0 if q is None else int(round(q.nominal_gpus * MILLI))


def _changes_by_tenant(scheduler: Scheduler) -> dict[tuple[int, str], list[tuple[float, int]]]:
    out: dict[tuple[int, str], list[tuple[float, int]]] = {}
    for c in scheduler.applied_quota_changes:
        out.setdefault((scheduler.state.tenant_index[c.tenant], c.model), []).append(
            (c.at_s, int(round(c.nominal_gpus * MILLI))))
    return out

