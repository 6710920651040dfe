"""What became of each job in a finished run: one row per job, numpy columns (``simulate --jobs-out``).

Units: GPUs, seconds from the trace's epoch, GPU-seconds. Rows are in the order jobs were submitted
(the trace's, by arrival). A time that never came (a job that never started or never finished) is NaN.

- ``wait_s``: first start - arrival, the wait before its first run;
- ``queue_s``: finish - arrival - the time it held GPUs (all its runs and grace periods): the time it
  held none, as ``queue_mean_s`` of the figures counts it (NaN if unfinished);
- ``guarantee_wait_s``: its longest wait while within its tenant's nominal quota;
- ``busy_gpu_s``: GPU-seconds held by all its runs; ``lost_gpu_s``: the part not saved by a
  checkpoint, plus the grace periods and restart overheads (``lost_gpu_hours`` x 3600, summed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpufleet.scheduler.engine import Scheduler
from gpufleet.scheduler.model import MILLI


@dataclass(frozen=True, eq=False)
class JobOutcomes:
    job: np.ndarray  # ids (str objects)
    tenant: np.ndarray  # names (str objects)
    gpus: np.ndarray
    model: np.ndarray  # the GPU model of its latest run (None: it never started)
    arrival_s: np.ndarray
    first_start_s: np.ndarray
    finish_s: np.ndarray
    guarantee_wait_s: np.ndarray
    preemptions: np.ndarray
    busy_gpu_s: np.ndarray
    lost_gpu_s: np.ndarray

    def __len__(self) -> int:
        return len(self.job)

    @property
    def wait_s(self) -> np.ndarray:
        return self.first_start_s - self.arrival_s

    @property
    def queue_s(self) -> np.ndarray:
        return self.finish_s - self.arrival_s - self.busy_gpu_s / self.gpus

    def columns(self) -> dict[str, np.ndarray]:
        """The columns in their documented order (docs/scheduling.md, ``--jobs-out``)."""
        return {"job": self.job, "tenant": self.tenant, "gpus": self.gpus, "model": self.model,
                "arrival_s": self.arrival_s, "first_start_s": self.first_start_s, "finish_s": self.finish_s,
                "wait_s": self.wait_s, "queue_s": self.queue_s, "guarantee_wait_s": self.guarantee_wait_s,
                "preemptions": self.preemptions, "busy_gpu_s": self.busy_gpu_s, "lost_gpu_s": self.lost_gpu_s}


def job_outcomes(scheduler: Scheduler) -> JobOutcomes:
    """The per-job rows of a run that has ended, from the scheduler's records."""
    state, rec = scheduler.state, scheduler.records
    names = np.array([*state.models, None], dtype=object)  # index -1: never started
    tenants = np.array([t.name for t in state.tenants], dtype=object)
    return JobOutcomes(
        job=np.array([j.id for j in state.jobs], dtype=object),
        tenant=tenants[np.array(state.job_tenant, dtype=np.int64)],
        gpus=np.array([j.milli_gpus for j in state.jobs], dtype=float) / MILLI,
        model=names[np.array(rec.model, dtype=np.int64)],
        arrival_s=np.array([j.arrival_s for j in state.jobs], dtype=float),
        first_start_s=np.array(rec.first_start_s, dtype=float),
        finish_s=np.array(rec.finish_s, dtype=float),
        guarantee_wait_s=np.array(rec.guarantee_wait_s, dtype=float),
        preemptions=np.array(state.preemptions, dtype=np.int64),
        busy_gpu_s=np.array(rec.busy_milli_s, dtype=float) / MILLI,
        lost_gpu_s=np.array(rec.lost_milli_s, dtype=float) / MILLI)
