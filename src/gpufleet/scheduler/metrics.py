"""Figures of a finished run, per tenant and overall (numpy over the per-job records).

Definitions (times in seconds, work in GPU-hours):

- ``utilization``: GPU-hours held by jobs / GPU-hours available. Overall the available GPU-hours
  are the cluster's GPUs over the makespan; per tenant they are its nominal quota integrated
  over the same span, so a tenant that borrows can exceed 1.
- ``jct``: completion time, finish - arrival, of finished jobs (mean, p50, p99).
- ``queue``: the time a finished job spent holding no GPUs between arrival and finish.
- ``makespan_s``: last finish - first arrival.
- ``preempted_gpu_hours``: GPU-hours held by runs that were preempted; ``lost_gpu_hours``: the
  part of them not saved by a checkpoint, plus the grace periods and restart overheads.
- ``guarantee_violation_s``: time a tenant waited while its first queued job would have fit in
  its nominal quota (summed over tenants overall); ``guarantee_violation_max_s`` is the longest one.
- ``guarantee_wait_max_s``: the longest time one job waited while it was within its tenant's nominal
  quota (the tenant's usage, the jobs queued ahead of it and the job itself fit the quota). A tenant
  that keeps submitting during a reclaim stays in violation throughout, though each job waits only
  for its own reclaim: this figure tells the two apart.

Fairness between tenants is measured apart, in :mod:`gpufleet.scheduler.fairness`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from gpufleet.scheduler.model import MILLI

HOUR_S = 3600.0


@dataclass(frozen=True, slots=True)
class Figures:
    jobs: int
    finished: int
    utilization: float
    jct_mean_s: float
    jct_p50_s: float
    jct_p99_s: float
    queue_mean_s: float
    makespan_s: float
    preemptions: int
    preempted_gpu_hours: float
    lost_gpu_hours: float
    busy_gpu_hours: float
    guarantee_violation_s: float
    guarantee_violation_max_s: float
    guarantee_wait_max_s: float

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def figures(arrival_s, finish_s, milli, busy_milli_s, lost_milli_s, preempted_milli_s, preemptions,
            available_gpu_s: float, violation_s: float, violation_max_s: float, span_s: float,
            guarantee_wait_s) -> Figures:
    """Figures of one set of jobs; array arguments are per job, ``finish_s`` NaN where unfinished."""
    done = ~np.isnan(finish_s)
    jct = (finish_s - arrival_s)[done]
    queue = jct - (busy_milli_s / milli)[done]
    busy_gpu_s = float(busy_milli_s.sum()) / MILLI

    def stat(values, fn):
        return float(fn(values)) if len(values) else 0.0

    return Figures(
        jobs=len(arrival_s), finished=int(done.sum()),
        utilization=busy_gpu_s / available_gpu_s if available_gpu_s > 0 else 0.0,
        jct_mean_s=stat(jct, np.mean), jct_p50_s=stat(jct, lambda v: np.percentile(v, 50)),
        jct_p99_s=stat(jct, lambda v: np.percentile(v, 99)), queue_mean_s=stat(queue, np.mean),
        makespan_s=span_s, preemptions=int(preemptions.sum()),
        preempted_gpu_hours=float(preempted_milli_s.sum()) / MILLI / HOUR_S,
        lost_gpu_hours=float(lost_milli_s.sum()) / MILLI / HOUR_S, busy_gpu_hours=busy_gpu_s / HOUR_S,
        guarantee_violation_s=violation_s, guarantee_violation_max_s=violation_max_s,
        guarantee_wait_max_s=stat(guarantee_wait_s, np.max))


def nominal_gpu_s(initial_milli: list[int], changes: list[tuple[float, int]], start_s: float, end_s: float) -> float:
    """A piecewise-constant nominal quota (milli-GPUs, changes as ``(at_s, new_milli)``) integrated
    over ``[start_s, end_s]``, in GPU-seconds."""
    times = np.array([start_s] + [max(start_s, min(at, end_s)) for at, _ in changes] + [end_s])
    levels = np.array([initial_milli] + [value for _, value in changes], dtype=float)
    return float((np.diff(times) * levels).sum()) / MILLI
