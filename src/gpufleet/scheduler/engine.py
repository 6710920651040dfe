"""The scheduler engine: applies a policy's decisions to the cluster state, driven by a kernel.

One code path serves a simulation (a :class:`~gpufleet.scheduler.kernel.SimClock`, arrivals
fed from a trace) and a live scheduler (a :class:`~gpufleet.scheduler.kernel.WallClock`, jobs
submitted as they come). Whenever something changes at an instant (a job arrives, finishes
or gives back its GPUs, a quota changes), the policy decides once, after everything else at
that instant, on a snapshot; the engine then applies the decision: preemptions first, then starts.

Preemption: a preempted job keeps its GPUs for ``reclaim_grace_s`` (Kubernetes' termination
grace period, 30 s by default) and then requeues with its original arrival time. It keeps the
work saved at its last checkpoint; the rest of the run, the grace period and any restart
overhead are lost work. Its quota is released at once, its capacity after the grace period.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import count
from typing import Callable, Iterable, Iterator

from gpufleet.errors import InputError
from gpufleet.scheduler.kernel import ARRIVAL, DECIDE, QUOTA, RELEASE, Kernel
from gpufleet.scheduler.model import MILLI, Cluster, Job, QuotaChange, Tenant
from gpufleet.scheduler.policies import Policy
from gpufleet.scheduler.state import Admission, ClusterState, Run

LogLine = tuple[float, str, str, str]  # (time_s, what, job or tenant, detail)


@dataclass
class JobRecords:
    """Per-job outcomes, index = the order jobs were submitted. Times in s, work in milli-GPU-s."""

    first_start_s: list[float] = field(default_factory=list)
    finish_s: list[float] = field(default_factory=list)
    busy_milli_s: list[float] = field(default_factory=list)      # capacity held, all runs
    lost_milli_s: list[float] = field(default_factory=list)      # held without lasting progress
    preempted_milli_s: list[float] = field(default_factory=list)  # held by runs that were preempted
    guarantee_wait_s: list[float] = field(default_factory=list)  # longest wait while within its quota
    model: list[int] = field(default_factory=list)  # the model of its latest run (-1: it never started)
    # One per run that has ended, in the order they ended: (job, start_s, end_s), end_s when its
    # capacity came or comes back (a preempted run holds it for the grace period)
    runs: list[tuple[int, float, float]] = field(default_factory=list)

    def add(self) -> None:
        for column in (self.first_start_s, self.finish_s):
            column.append(math.nan)
        for column in (self.busy_milli_s, self.lost_milli_s, self.preempted_milli_s, self.guarantee_wait_s):
            column.append(0.0)
        self.model.append(-1)


class Scheduler:
    def __init__(self, cluster: Cluster, tenants: list[Tenant], policy: Policy, kernel: Kernel | None = None,
                 *, reclaim_grace_s: float = 30.0, log: list[LogLine] | None = None):
        if reclaim_grace_s < 0:
            raise InputError(f"must be >= 0, got {reclaim_grace_s}", field="reclaim_grace_s")
        self.state = ClusterState(cluster, tenants)
        self.policy, self.kernel, self.grace_s = policy, kernel or Kernel(), reclaim_grace_s
        self.records = JobRecords()
        self.log = log
        self.decisions = 0
        self.busy_integral_milli_s = 0.0  # integral of GPUs held over time, measured independently of jobs
        self.violation_s = [0.0] * len(tenants)
        self.violation_max_s = [0.0] * len(tenants)
        self.applied_quota_changes: list[QuotaChange] = []
        self._held_milli, self._last_s = 0, 0.0
        self._violated_since: list[float | None] = [None] * len(tenants)
        self._entitled_since: list[float] = []  # per job: since when it waits within its quota (NaN: not)
        self._entitled: list[list[int]] = [[] for _ in tenants]  # the jobs of each tenant marked so
        self._changed: set[int] = set()  # tenants whose queue, usage, preempted jobs or quota changed since
        self._deciding = False
        self._tokens = count()
        self._nominations = count()
        self._feed: Iterator[Job] | None = None

    # -- inputs ----------------------------------------------------------------------------
    def submit(self, job: Job) -> int:
        """Queue ``job`` at its arrival time (or now, if that has passed); returns its index."""
        j = self.state.add_job(job)
        self.records.add()
        self._entitled_since.append(math.nan)
        self.kernel.schedule(max(job.arrival_s, self.kernel.now), ARRIVAL, self._arrive, j)
        return j

    def feed(self, jobs: Iterable[Job]) -> None:
        """Submit jobs sorted by arrival one at a time, so the event heap stays small."""
        self._feed = iter(jobs)
        self._submit_next()

    def change_quota(self, change: QuotaChange) -> None:
        self.kernel.schedule(change.at_s, QUOTA, self._set_quota, change)

    # -- event handlers --------------------------------------------------------------------
    def _submit_next(self) -> None:
        job = next(self._feed, None) if self._feed else None
        if job is not None:
            self.submit(job)

    def _arrive(self, j: int) -> None:
        t = self.state.job_tenant[j]
        head = self.state.heads[t]
        self.state.enqueue(j)
        self._changed.add(t)
        self._emit("arrive", j, lambda: f"{self.state.jobs[j].gpus:g} GPUs")
        if self.state.heads[t] != head or self.policy.decides_on_every_arrival:
            self._wake()
        if self._feed:
            self._submit_next()

    def _set_quota(self, change: QuotaChange) -> None:
        state = self.state
        t, m = state.tenant_index[change.tenant], state.model_index[change.model]
        state.set_nominal(t, m, int(round(change.nominal_gpus * MILLI)))
        self._changed.add(t)
        self.applied_quota_changes.append(change)
        self._log(change.tenant, "quota", f"{change.model} nominal {change.nominal_gpus:g}")
        self._wake()

    def _wake(self) -> None:
        if not self._deciding:
            self._deciding = True
            self.kernel.schedule(self.kernel.now, DECIDE, self._decide)

    def _decide(self) -> None:
        self._deciding = False
        self.decisions += 1
        decision = self.policy.decide(self.state.snapshot(self.kernel.now))
        for j in decision.preempt:
            self._preempt(j)
        for admission in decision.admit:
            self._start(admission)
        for j in decision.nominate:  # first come, first served
            self.state.nominated.setdefault(j, next(self._nominations))
        for j, where in decision.reserve.items():
            self._reserve(j, where, j in decision.revocable)
        for j in decision.denominate:
            self.state.nominated.pop(j, None)
            self._reserve(j, None)
        if decision.recheck:
            self._wake()
        self._track_guarantees()

    def _start(self, a: Admission) -> None:
        state, now, j = self.state, self.kernel.now, a.job
        job, t = state.jobs[j], state.job_tenant[j]
        state.dequeue(j)
        state.changes += 1
        self._changed.add(t)
        state.nominated.pop(j, None)
        self._reserve(j, None)
        self._hold(a.placement, +1)
        for node, milli in a.placement:
            state.running_on[t, node] += milli
        state.count_run(t, a.model, job.milli_gpus, +1)
        overhead_s = job.restart_s if state.preemptions[j] else 0.0
        run = Run(j, t, a.model, a.placement, now, overhead_s, now + overhead_s + state.remaining_s[j],
                  next(self._tokens), (job.priority, -now, -j))
        state.running[j] = state.running_of[t][j] = run
        if math.isnan(self.records.first_start_s[j]):
            self.records.first_start_s[j] = now
        self.records.model[j] = a.model
        if not math.isnan(since := self._entitled_since[j]):
            self.records.guarantee_wait_s[j] = max(self.records.guarantee_wait_s[j], now - since)
            self._entitled_since[j] = math.nan
        self.kernel.schedule(run.end_s, RELEASE, self._finish, j, run.token)
        self._emit("start", j, lambda: f"{state.models[a.model]} nodes {','.join(str(n) for n, _ in a.placement)}")

    def _finish(self, j: int, token: int) -> None:
        state, now = self.state, self.kernel.now
        run = state.running.get(j)
        if run is None or run.token != token:
            return  # this run was preempted; its finish is void
        self._stop(run)
        self._hold(run.placement, -1)
        milli = state.jobs[j].milli_gpus
        self.records.busy_milli_s[j] += (now - run.start_s) * milli
        self.records.lost_milli_s[j] += run.overhead_s * milli
        self.records.runs.append((j, run.start_s, now))
        state.remaining_s[j] = 0.0
        self.records.finish_s[j] = now
        self._emit("finish", j)
        self._wake()

    def _preempt(self, j: int) -> None:
        state, now = self.state, self.kernel.now
        run, job = state.running[j], state.jobs[j]
        self._stop(run)
        for node, milli in run.placement:
            state.releasing[node] += milli
        state.releasing_total[run.model] += job.milli_gpus
        useful_s = max(0.0, now - run.start_s - run.overhead_s)
        saved_s = min(state.remaining_s[j], math.floor(useful_s / job.checkpoint_s) * job.checkpoint_s
                      if job.checkpoint_s else 0.0)
        state.remaining_s[j] -= saved_s
        state.preemptions[j] += 1
        held_milli_s = (now + self.grace_s - run.start_s) * job.milli_gpus
        self.records.busy_milli_s[j] += held_milli_s
        self.records.preempted_milli_s[j] += held_milli_s
        self.records.lost_milli_s[j] += held_milli_s - saved_s * job.milli_gpus
        self.records.runs.append((j, run.start_s, now + self.grace_s))
        state.terminating[j] = run
        self.kernel.schedule(now + self.grace_s, RELEASE, self._release, j)
        self._emit("preempt", j, lambda: f"kept {saved_s:g}s of work")

    def _release(self, j: int) -> None:
        state = self.state
        run = state.terminating.pop(j)
        state.version += 1
        state.changes += 1
        for node, milli in run.placement:
            state.releasing[node] -= milli
        state.releasing_total[run.model] -= state.jobs[j].milli_gpus
        self._hold(run.placement, -1)
        state.enqueue(j)
        self._changed.add(run.tenant)
        self._emit("requeue", j)
        self._wake()

    # -- bookkeeping -----------------------------------------------------------------------
    def _stop(self, run: Run) -> None:
        state = self.state
        state.version += 1
        state.tenant_version[run.tenant] += 1
        state.changes += 1
        self._changed.add(run.tenant)
        del state.running[run.job], state.running_of[run.tenant][run.job]
        for node, milli in run.placement:
            state.running_on[run.tenant, node] -= milli
        state.count_run(run.tenant, run.model, state.jobs[run.job].milli_gpus, -1)

    def _reserve(self, j: int, where: tuple | None, revocable: bool = False) -> None:
        """Set capacity aside for nominated job ``j`` (None: no longer; ``revocable``: an owner within
        its quota may take it back). Capacity no longer set aside can unblock others: a change of
        state for the heads that wait (``state.version``)."""
        state = self.state
        old, was_revocable = state.reserved.pop(j, None), j in state.revocable
        state.revocable.discard(j)
        if where is not None:
            state.reserved[j] = where
            if revocable:
                state.revocable.add(j)
        if old != where or was_revocable != (j in state.revocable):
            state.changes += 1
            if old is not None and old != where:
                state.version += 1

    def _hold(self, placement, sign: int) -> None:
        """Take (+1) or give back (-1) capacity on nodes, integrating GPUs held over time."""
        now, state = self.kernel.now, self.state
        self.busy_integral_milli_s += self._held_milli * (now - self._last_s)
        self._last_s = now
        for node, milli in placement:
            state.free[node] -= sign * milli
            state.free_total[state.node_model[node]] -= sign * milli
            self._held_milli += sign * milli

    def _track_guarantees(self) -> None:
        """After each decision: integrate, per tenant, the time it waits while its head job would fit
        in its nominal quota; and mark since when each queued job has been within its tenant's quota
        (its usage, its preempted jobs that will requeue, the jobs queued ahead and the job itself fit
        the nominal quota). Only tenants with a change since the last decision are looked at again."""
        if not self._changed:
            return
        state, now, since = self.state, self.kernel.now, self._entitled_since
        returning = [0] * len(state.tenants)  # preempted jobs: they requeue, ahead of any later job
        for run in state.terminating.values():
            returning[run.tenant] += state.jobs[run.job].milli_gpus
        for t in self._changed:
            queue, marked = state.queues[t], []
            if queue:
                usage, nominal, ahead = state.usage[t], state.nominal[t], returning[t]
                for i in range(len(queue)):  # strict FIFO: a prefix of the queue
                    j = queue[i][2]
                    milli = state.jobs[j].milli_gpus
                    for m in state.models_for(j):
                        if usage[m] + ahead + milli <= nominal[m]:
                            break
                    else:
                        break  # on no model within the quota
                    ahead += milli
                    marked.append(j)
                    if math.isnan(since[j]):
                        since[j] = now
            if self._entitled[t]:
                for j in set(self._entitled[t]).difference(marked):
                    since[j] = math.nan  # out of its quota again (a quota cut, a job of higher priority ahead)
            self._entitled[t] = marked
            violated, started = bool(marked), self._violated_since[t]
            if violated and started is None:
                self._violated_since[t] = now
            elif not violated and started is not None:
                self._close_violation(t, now)
        self._changed.clear()

    def _close_violation(self, t: int, now: float) -> None:
        length = now - self._violated_since[t]
        self.violation_s[t] += length
        self.violation_max_s[t] = max(self.violation_max_s[t], length)
        self._violated_since[t] = None

    def close(self) -> None:
        """End of the run: close open violation intervals and the busy integral at the current time."""
        now = self.kernel.now
        for t, since in enumerate(self._violated_since):
            if since is not None:
                self._close_violation(t, now)
        self._hold([], 0)

    # -- event log -------------------------------------------------------------------------
    def _emit(self, what: str, j: int, detail: Callable[[], str] | None = None) -> None:
        """Log an event of job ``j`` (``detail`` is only worked out when there is a log to write)."""
        if self.log is not None:
            job = self.state.jobs[j]
            self.log.append((self.kernel.now, what, job.id, f"{job.tenant} {detail() if detail else ''}".rstrip()))

    def _log(self, who: str, what: str, detail: str) -> None:
        if self.log is not None:
            self.log.append((self.kernel.now, what, who, detail))


def run_to_end(scheduler: Scheduler, progress: Callable[[int], None] | None = None, every: int = 20_000) -> None:
    """Step the kernel until no event is left, calling ``progress(steps)`` every ``every`` steps."""
    kernel = scheduler.kernel
    while kernel.pending:
        kernel.run(max_steps=every)
        if progress:
            progress(kernel.steps)
    scheduler.close()
