"""How fairly a finished run treated its tenants: two measures from the literature, both read from
what the run did (who held which GPUs when, when each job finished), so they respond to the policy.

- **Jain's index over time** (Jain, Chiu and Hawe, "A Quantitative Measure of Fairness and
  Discrimination for Resource Allocation in Shared Computer Systems", DEC-TR-301, 1984). At each
  instant t, over the n(t) tenants that have work (a job arrived and not finished) and a nominal
  quota, x_i(t) = GPUs tenant i holds / its nominal GPUs (all models summed) and
  J(t) = (sum x)^2 / (n sum x^2), in [1/n, 1]; 1 when every such tenant holds the same multiple of
  its quota, and also when none of them holds anything. The figure is J's mean over the time when
  n(t) >= 2 (``overlap_s``), weighted by time; with one tenant there is nobody to compare with,
  and no such time gives None.
- **Finish-time fairness** (Mahajan et al., "Themis: Fair and Efficient GPU Cluster Scheduling",
  NSDI 2020): rho = T_shared / T_alone. Per tenant, T_shared is the sum of its jobs' completion
  times in the run and T_alone the same sum when the tenant runs alone on its entitlement: its jobs
  replayed by the same engine under ``static`` on the same nodes, with its own nominal quotas (and
  their changes) and no other tenant. Summed over the jobs that can run alone (one larger than
  anything its quota ever allows cannot, and counts in neither sum); None for a tenant with no such
  job. rho < 1: sharing served the tenant better than its quota alone would have.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from gpufleet.scheduler.engine import Scheduler, run_to_end
from gpufleet.scheduler.model import MILLI, Cluster, Job, QuotaChange, Tenant, Workload
from gpufleet.scheduler.policies import Policy, PolicyOptions, make_policy
from gpufleet.scheduler.state import ClusterState


@dataclass(frozen=True, slots=True)
class Intervals:
    """``amount[k]`` for tenant ``tenant[k]`` over the half-open time interval [``start_s[k]``, ``end_s[k]``)."""

    tenant: np.ndarray  # tenant index, int
    start_s: np.ndarray
    end_s: np.ndarray
    amount: np.ndarray  # int: milli-GPUs, or 1 per job

    @staticmethod
    def of(rows: Sequence[tuple[int, float, float, int]]) -> Intervals:
        """From ``(tenant, start_s, end_s, amount)`` rows."""
        t, start, end, amount = list(zip(*rows)) or [(), (), (), ()]
        return Intervals(np.asarray(t, dtype=np.int64), np.asarray(start, dtype=float),
                         np.asarray(end, dtype=float), np.asarray(amount, dtype=np.int64))


@dataclass(frozen=True, slots=True)
class Jain:
    index: float | None  # None: never two tenants with work and quota at once
    overlap_s: float  # the time it is averaged over: two tenants or more with work


@dataclass(frozen=True, slots=True)
class Fairness:
    """Both measures of one run; per tenant in the order of the quotas."""

    jain: Jain
    finish_time: dict[str, float | None]  # tenant -> rho (None: no job it could run alone)
    not_run_alone: dict[str, int]  # tenant -> jobs left out of rho: they could not run on its quota alone

    @property
    def finish_time_max(self) -> float | None:
        values = [v for v in self.finish_time.values() if v is not None]
        return max(values) if values else None

    @property
    def finish_time_mean(self) -> float | None:
        values = [v for v in self.finish_time.values() if v is not None]
        return sum(values) / len(values) if values else None

    def to_dict(self) -> dict:
        """The overall figures, as in ``gpufleet simulate --format json``."""
        return {"jain_over_time": _round(self.jain.index), "jain_overlap_s": round(self.jain.overlap_s, 6),
                "finish_time_fairness_max": _round(self.finish_time_max),
                "finish_time_fairness_mean": _round(self.finish_time_mean)}

    def tenant_dict(self, name: str) -> dict:
        return {"finish_time_fairness": _round(self.finish_time[name]),
                "jobs_not_run_alone": self.not_run_alone[name]}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


# -- Jain's index over time ---------------------------------------------------------------------
def jain_over_time(held: Intervals, present: Intervals, entitled: Intervals, tenants: int) -> Jain:
    """Jain's index of x_i(t) = held_i(t) / entitled_i(t) over the tenants with ``present_i(t) > 0``
    and ``entitled_i(t) > 0``, averaged over the time when there are at least two (module docstring).

    Each quantity is a sum of intervals, so it changes only at their ends: one sort of all changes,
    a cumulative sum per tenant, and a lookup of every tenant's state at every instant of change."""
    times, tenant, deltas = _changes(held, present, entitled)
    if not len(times):
        return Jain(None, 0.0)
    instants = np.unique(times)
    order = np.lexsort((times, tenant))
    times, tenant, deltas = times[order], tenant[order], deltas[order]
    bounds = np.searchsorted(tenant, np.arange(tenants + 1))
    n, s1, s2, holding = (np.zeros(len(instants)) for _ in range(4))
    for t in range(tenants):
        lo, hi = bounds[t], bounds[t + 1]
        if lo == hi:
            continue
        state = np.cumsum(deltas[lo:hi], axis=0)  # (held, present, entitled) after each change, exact integers
        at = np.searchsorted(times[lo:hi], instants, side="right") - 1  # the last change at or before
        h, p, e = (np.where(at >= 0, state[at, k], 0) for k in range(3))
        active = (p > 0) & (e > 0)
        x = np.where(active, h / np.where(e > 0, e, 1), 0.0)
        n += active
        s1 += x
        s2 += x * x
        holding += active & (h > 0)
    return _time_weighted(np.diff(instants), n[:-1], s1[:-1], s2[:-1], holding[:-1])


def _changes(held: Intervals, present: Intervals, entitled: Intervals):
    """Every interval as two changes (+ at its start, - at its end): times, tenants, and the change
    of (held, present, entitled) in the columns of an integer array."""
    parts = [(iv, column) for column, iv in enumerate((held, present, entitled))]
    times = np.concatenate([np.concatenate([iv.start_s, iv.end_s]) for iv, _ in parts])
    tenant = np.concatenate([np.concatenate([iv.tenant, iv.tenant]) for iv, _ in parts])
    deltas = np.zeros((len(times), 3), dtype=np.int64)
    row = 0
    for iv, column in parts:
        k = len(iv.amount)
        deltas[row:row + k, column] = iv.amount
        deltas[row + k:row + 2 * k, column] = -iv.amount
        row += 2 * k
    return times, tenant, deltas


def _time_weighted(dt, n, s1, s2, holding) -> Jain:
    """The time-weighted mean of J over the stretches with two tenants or more."""
    overlap = n >= 2
    dt, n, s1, s2, holding = dt[overlap], n[overlap], s1[overlap], s2[overlap], holding[overlap]
    total_s = float(dt.sum())
    if total_s <= 0:
        return Jain(None, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        j = np.where(holding > 0, s1 * s1 / (n * s2), 1.0)  # nobody holding anything: all equal
    j = np.clip(j, 1 / n, 1.0)  # the bounds, against rounding
    return Jain(float((j * dt).sum() / total_s), total_s)


def entitlement_intervals(tenants: Sequence[Tenant], models: Sequence[str], changes: Sequence[QuotaChange],
                          start_s: float, end_s: float) -> Intervals:
    """Each tenant's nominal quota (milli-GPUs, one interval per model and level) over [start_s, end_s),
    with its quota changes (each sets a tenant's nominal on one model from its time on)."""
    index = {t.name: i for i, t in enumerate(tenants)}
    steps: dict[tuple[int, str], list[tuple[float, int]]] = {}
    for i, spec in enumerate(tenants):
        for m in models:
            q = spec.quotas.get(m)
            steps[i, m] = [(start_s, 0 if q is None else round(q.nominal_gpus * MILLI))]
    for c in sorted(changes, key=lambda c: c.at_s):  # stable: same-time changes keep their order
        steps[index[c.tenant], c.model].append((min(max(c.at_s, start_s), end_s), round(c.nominal_gpus * MILLI)))
    rows = [(t, at, until, milli) for (t, _), levels in steps.items()
            for (at, milli), (until, _) in zip(levels, levels[1:] + [(end_s, 0)]) if milli and until > at]
    return Intervals.of(rows)


# -- finish-time fairness -----------------------------------------------------------------------
def finish_time_fairness(tenant: np.ndarray, shared_jct_s: np.ndarray, alone_jct_s: np.ndarray,
                         tenants: int) -> list[float | None]:
    """Per tenant: the sum of its jobs' completion times in the run / the same sum alone, over the jobs
    that finished both ways (NaN where not); None where that is no job, or the sum alone is 0."""
    both = ~np.isnan(shared_jct_s) & ~np.isnan(alone_jct_s)
    shared = np.bincount(tenant[both], shared_jct_s[both], minlength=tenants)
    alone = np.bincount(tenant[both], alone_jct_s[both], minlength=tenants)
    return [float(s / a) if a > 0 else None for s, a in zip(shared, alone)]


def alone_jct_s(workload: Workload, cluster: Cluster, tenants: Sequence[Tenant], *,
                quota_changes: Sequence[QuotaChange] = (), options: PolicyOptions = PolicyOptions(),
                reclaim_grace_s: float = 30.0, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Each job's completion time when its tenant runs alone on its entitlement (``static`` with
    ``options``, the same nodes, its own quotas and quota changes, no other tenant); NaN for a job
    larger than anything its tenant's nominal quota ever allows on the models it may use (it could
    never start). One replay per tenant: together about one ``static`` replay of the workload.
    ``progress(steps)``: the events processed so far, over all the replays."""
    out = np.full(len(workload.jobs), np.nan)
    tenant_of = np.array([j.tenant for j in workload.jobs], dtype=object)
    done_steps = 0
    for spec in tenants:
        idx = np.flatnonzero(tenant_of == spec.name)
        if not len(idx):
            continue
        policy = make_policy("static", options)
        changes = [c for c in quota_changes if c.tenant == spec.name]
        runnable = idx[_fits_alone(cluster, spec, policy, changes, [workload.jobs[i] for i in idx])]
        scheduler = Scheduler(cluster, [spec], policy, reclaim_grace_s=reclaim_grace_s)
        for change in changes:
            scheduler.change_quota(change)
        scheduler.feed(workload.jobs[i] for i in runnable)
        run_to_end(scheduler, None if progress is None else lambda steps, base=done_steps: progress(base + steps))
        done_steps += scheduler.kernel.steps
        arrival = np.array([workload.jobs[i].arrival_s for i in runnable])
        out[runnable] = np.array(scheduler.records.finish_s) - arrival
    return out


def _fits_alone(cluster: Cluster, spec: Tenant, policy: Policy, changes: list[QuotaChange], jobs: list[Job]) -> np.ndarray:
    """Which of ``jobs`` fit, on some model they may use, under the highest nominal quota ``spec`` ever has."""
    state = ClusterState(cluster, [spec])  # a scratch state, to read each job's models
    peak = [row[:] for row in state.nominal]
    for c in changes:
        m = state.model_index[c.model]
        peak[0][m] = max(peak[0][m], round(c.nominal_gpus * MILLI))
    most = [policy.ceiling(state, peak, 0, m) for m in range(len(state.models))]
    return np.array([job.milli_gpus <= max(most[m] for m in state.models_for(state.add_job(job))) for job in jobs],
                    dtype=bool)
