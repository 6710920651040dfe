"""The scheduler's bookkeeping (free capacity, quotas, usage, queues, running jobs) and its snapshot.

:class:`ClusterState` is written only by the engine, when it applies a :class:`Decision`.
Policies read a :class:`Snapshot`: a copy of the mutable counters on which they may try
what-if admissions and removals without touching the state (as Kueue's scheduling cycle does).
All amounts are milli-GPUs, all times seconds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter

import numpy as np
from sortedcontainers import SortedList

from gpufleet.errors import InputError
from gpufleet.scheduler import quota
from gpufleet.scheduler.model import MILLI, Cluster, Job, Tenant
from gpufleet.scheduler.placement import Placement, place


@dataclass(slots=True)
class Run:
    """A job holding capacity: from ``start_s``; progress starts after ``overhead_s`` (a restart)."""

    job: int
    tenant: int
    model: int
    placement: Placement
    start_s: float
    overhead_s: float
    end_s: float  # when it will finish if nothing preempts it
    token: int
    victim_rank: tuple  # Kueue's order among victims: (priority, -start_s, -job), lowest priority and newest first


@dataclass(slots=True)
class Admission:
    job: int
    model: int
    placement: Placement


@dataclass(slots=True)
class Decision:
    """What a policy wants done now: preempt these running jobs, then start these pending ones.

    A job that waits for capacity reclaimed or coming back is nominated: until it starts it is
    considered before every pending job that is not, and after the jobs nominated before it,
    so the capacity coming back goes to it and not to whoever asks first. A job preempted only
    to move it to other nodes (see ``Borrow.consolidate``) is nominated too, right after the job
    it made room for."""

    admit: list[Admission] = field(default_factory=list)
    preempt: list[int] = field(default_factory=list)
    nominate: list[int] = field(default_factory=list)  # jobs waiting for capacity reclaimed or coming back
    reserve: dict[int, tuple[int, Placement]] = field(default_factory=dict)  # their model and nodes
    denominate: list[int] = field(default_factory=list)  # nominated jobs that no longer wait for room
    revocable: set[int] = field(default_factory=set)  # of those in reserve: borrowers' holds an owner may take back
    recheck: bool = False  # decide again at this instant (see Policy.rechecks_passed_over)



def _milli(gpus: float | None) -> int | None:
    return None if gpus is None else int(round(gpus * MILLI))


class ClusterState:
    """Capacity, quotas and work of one cluster (tenants and models are indexed in the given order)."""

    def __init__(self, cluster: Cluster, tenants: list[Tenant]):
        self.cluster, self.tenants = cluster, tenants
        self.models = cluster.models
        self.model_index = {m: i for i, m in enumerate(self.models)}
        self.tenant_index = {t.name: i for i, t in enumerate(tenants)}
        if len(self.tenant_index) != len(tenants):
            raise InputError("tenant names must be unique", field="tenants")
        self._init_nodes(cluster)
        self.usage = [[0] * len(self.models) for _ in tenants]  # tenant x model: milli-GPUs held by running jobs
        self._init_quotas(tenants)
        self.queues = [SortedList() for _ in tenants]  # keys (-priority, arrival_s, job)
        self.heads: list[int | None] = [None] * len(tenants)  # each queue's first job (None: empty)
        self.running: dict[int, Run] = {}
        self.running_of: list[dict[int, Run]] = [{} for _ in tenants]  # admission order
        self.terminating: dict[int, Run] = {}
        self.version = 0  # bumped whenever quota or capacity is given back, or a quota changes
        self.tenant_version = [0] * len(tenants)  # bumped when that tenant gives back quota or its quota changes
        self.changes = 0  # bumped on any change of usage, capacity held or given back, quotas or nodes set aside
        # Pending jobs that go first until they start, in the order they were nominated (job -> rank)
        self.nominated: dict[int, int] = {}
        self.reserved: dict[int, tuple[int, Placement]] = {}  # nominated job -> the model and nodes it waits for
        self.revocable: set[int] = set()  # reserved for a borrower's fair share: an owner within its quota may take it
        self.releasing = np.zeros_like(self.free)  # capacity preempted jobs hold until their grace period ends
        self.releasing_total = [0] * len(self.models)  # the same per model
        self.running_on = np.zeros((len(tenants), len(self.free)), dtype=np.int64)  # tenant x node: milli-GPUs running
        # tenant x model: how many jobs of each size (milli-GPUs) run
        self.running_sizes = [[Counter() for _ in self.models] for _ in tenants]
        self.jobs: list[Job] = []
        self.job_tenant: list[int] = []
        self.job_models: list[tuple[int, ...]] = []  # the models each job may run on, in pool order
        self.job_picks_model: list[bool] = []  # whether a job chooses among the models it names (best fit)
        self.remaining_s: list[float] = []
        self.preemptions: list[int] = []

    def _init_nodes(self, cluster: Cluster) -> None:
        sizes = [p.gpus_per_node * MILLI for p in cluster.pools for _ in range(p.nodes)]
        self.free = np.array(sizes, dtype=np.int64)
        bounds = np.cumsum([0] + [p.nodes for p in cluster.pools])
        self.pool_lo, self.pool_hi = bounds[:-1].tolist(), bounds[1:].tolist()
        self.node_milli = [p.gpus_per_node * MILLI for p in cluster.pools]
        self.capacity = [p.gpus * MILLI for p in cluster.pools]
        self.free_total = self.capacity[:]  # per model, kept by the engine as capacity is taken and given back
        self.node_model = [m for m, p in enumerate(cluster.pools) for _ in range(p.nodes)]

    def _init_quotas(self, tenants: list[Tenant]) -> None:
        cohorts = sorted({t.cohort for t in tenants})
        self.cohort_of = [cohorts.index(t.cohort) for t in tenants]
        self.members = [[i for i, c in enumerate(self.cohort_of) if c == k] for k in range(len(cohorts))]
        self.weight = [t.weight for t in tenants]
        shape = [[None] * len(self.models) for _ in tenants]
        self.nominal = [[0] * len(self.models) for _ in tenants]
        self.borrowing_limit, self.lending_limit = [r[:] for r in shape], [r[:] for r in shape]
        for i, t in enumerate(tenants):
            for model, q in t.quotas.items():
                if model not in self.model_index:
                    raise InputError(f"tenant {t.name} has a quota on {model!r}, which the cluster "
                                     f"does not have (models: {', '.join(self.models)})", field="quotas")
                m = self.model_index[model]
                self.nominal[i][m] = _milli(q.nominal_gpus)
                self.borrowing_limit[i][m] = _milli(q.borrowing_limit_gpus)
                self.lending_limit[i][m] = _milli(q.lending_limit_gpus)
        self.refresh_pools()

    def set_nominal(self, t: int, m: int, milli: int) -> None:
        self.nominal[t][m] = milli
        self.version += 1
        self.changes += 1
        self.tenant_version[t] += 1
        self.refresh_pools()

    def refresh_pools(self) -> None:
        """Recompute each tenant's guaranteed part and each cohort's lendable pool (after a quota change)."""
        models = range(len(self.models))
        self.guaranteed = [[quota.guaranteed(n[m], lim[m]) for m in models]
                           for n, lim in zip(self.nominal, self.lending_limit)]
        self.pool = [[sum(self.nominal[t][m] - self.guaranteed[t][m] for t in members) for m in models]
                     for members in self.members]
        self.drawn = [[0] * len(self.models) for _ in self.members]  # per cohort and model: usage above guarantees
        for t, row in enumerate(self.usage):
            for m, used in enumerate(row):
                self.drawn[self.cohort_of[t]][m] += quota.drawn(used, self.guaranteed[t][m])

    def count_run(self, t: int, m: int, milli: int, sign: int) -> None:
        """A job of ``milli`` milli-GPUs of tenant ``t`` starts (``sign`` +1) or stops (-1) running on
        model ``m``: its usage, its cohort's draw on the pool and the sizes running follow."""
        used, keep = self.usage[t][m], self.guaranteed[t][m]
        self.drawn[self.cohort_of[t]][m] += quota.drawn(used + sign * milli, keep) - quota.drawn(used, keep)
        self.usage[t][m] = used + sign * milli
        sizes = self.running_sizes[t][m]
        sizes[milli] += sign
        if not sizes[milli]:
            del sizes[milli]

    # -- jobs ------------------------------------------------------------------------------
    def add_job(self, job: Job) -> int:
        self.check_job(job)
        self.jobs.append(job)
        self.job_tenant.append(self.tenant_index[job.tenant])
        self.job_models.append(self.model_indices(job))
        self.job_picks_model.append(len(job.models) > 1)
        self.remaining_s.append(job.service_s)
        self.preemptions.append(0)
        return len(self.jobs) - 1

    def check_job(self, job: Job) -> None:
        """Refuse a job of an unknown tenant or GPU model."""
        if job.tenant not in self.tenant_index:
            raise InputError(f"job {job.id} (line {job.line}) belongs to tenant {job.tenant!r}, "
                             "which has no quota", field="tenant")
        unknown = [m for m in job.models if m not in self.model_index]
        if unknown:
            raise InputError(f"job {job.id} (line {job.line}) asks for GPU model {', '.join(map(repr, unknown))}, "
                             "which the cluster does not have", field="model")

    def model_indices(self, job: Job) -> tuple[int, ...]:
        """The models ``job`` may run on, in pool order: those it names, or every model if it names none."""
        if not job.models:
            return tuple(range(len(self.models)))
        return tuple(sorted(self.model_index[m] for m in job.models))

    def models_for(self, j: int) -> tuple[int, ...]:
        """The models job ``j`` may run on, in pool order (the cluster's preference)."""
        return self.job_models[j]

    def enqueue(self, j: int) -> None:
        job, t = self.jobs[j], self.job_tenant[j]
        self.queues[t].add((-job.priority, job.arrival_s, j))
        self.heads[t] = self.queues[t][0][2]

    def dequeue(self, j: int) -> None:
        job, t = self.jobs[j], self.job_tenant[j]
        queue = self.queues[t]
        queue.remove((-job.priority, job.arrival_s, j))
        self.heads[t] = queue[0][2] if queue else None

    def invariant_errors(self, *, confined_to_nominal: bool = False) -> list[str]:
        """What is wrong with the bookkeeping, if anything (empty: all invariants hold):
        no node over- or under-committed; capacity held = usage + capacity being given back;
        every tenant within its borrowing limit (``confined_to_nominal``: within its nominal
        quota) and every cohort within its guarantees plus its lendable pool; nominations and
        nodes set aside only for jobs that do not run."""
        errors = [f"tenant {t.name}'s first queued job is not job {self.heads[i]}" for i, t in enumerate(self.tenants)
                  if self.heads[i] != (self.queues[i][0][2] if self.queues[i] else None)]
        errors += [f"job {j} runs but is still nominated" for j in self.nominated if j in self.running]
        sizes = [[Counter() for _ in self.models] for _ in self.tenants]
        for r in self.running.values():
            sizes[r.tenant][r.model][self.jobs[r.job].milli_gpus] += 1
        if sizes != self.running_sizes:
            errors.append("the sizes of running jobs per tenant and model disagree with the running jobs")
        errors += [f"job {j} has nodes set aside but is not nominated" for j in self.reserved
                   if j not in self.nominated]
        errors += [f"job {j} is revocable but has nothing set aside" for j in self.revocable if j not in self.reserved]
        caps = np.array([self.node_milli[m] for m in range(len(self.models))
                         for _ in range(self.pool_hi[m] - self.pool_lo[m])], dtype=np.int64)
        if (self.free < 0).any() or (self.free > caps).any():
            errors.append(f"node free capacity out of range: {self.free.tolist()}")
        for m, model in enumerate(self.models):
            lo, hi = self.pool_lo[m], self.pool_hi[m]
            if (self.free_total[m], self.releasing_total[m]) != (int(self.free[lo:hi].sum()), int(self.releasing[lo:hi].sum())):
                errors.append(f"the totals of free and returning capacity on {model} disagree with its nodes")
        held = int((caps - self.free).sum())
        accounted = sum(map(sum, self.usage)) + sum(self.jobs[j].milli_gpus for j in self.terminating)
        if held != accounted:
            errors.append(f"{held} milli-GPUs held on nodes, but usage and releases account for {accounted}")
        for t, name in enumerate(t.name for t in self.tenants):
            for m, used in enumerate(self.usage[t]):
                limit = 0 if confined_to_nominal else self.borrowing_limit[t][m]
                if limit is not None and used > self.nominal[t][m] + limit:
                    errors.append(f"tenant {name} uses {used} milli-GPUs of {self.models[m]}, over its "
                                  f"nominal {self.nominal[t][m]} + allowed borrowing {limit}")
        for c, members in enumerate(self.members):
            for m, model in enumerate(self.models):
                if not quota.cohort_fits([self.usage[t][m] for t in members], [self.nominal[t][m] for t in members],
                                         [self.lending_limit[t][m] for t in members]):
                    errors.append(f"cohort {c} uses more of {model} than its guarantees and lendable pool")
                if self.drawn[c][m] != sum(quota.drawn(self.usage[t][m], self.guaranteed[t][m]) for t in members):
                    errors.append(f"cohort {c}'s usage above guarantees of {model} is not its members' sum")
        return errors

    def snapshot(self, now_s: float) -> Snapshot:
        return Snapshot(self, now_s)


_VICTIM_RANK = attrgetter("victim_rank")


class Snapshot:
    """A policy's view of the state at ``now_s``: usage and free capacity may be changed what-if."""

    def __init__(self, state: ClusterState, now_s: float):
        self.state, self.now_s = state, now_s
        self.free_total = state.free_total[:]
        self.usage = [row[:] for row in state.usage]
        self.evicting: set[int] = set()
        self.holds = 0  # capacity holds made in this cycle
        self.moved: list[int] = []  # running jobs evicted in this cycle only to restart them on other nodes
        self.held: dict[int, tuple[int, Placement]] = {}  # job -> the model and nodes held for it in this cycle
        self.revocable: set[int] = set()  # jobs held in this cycle that an owner may take back (see hold)
        self.edits = 0  # what-if changes made in this cycle (0: the snapshot still equals the state)
        self._shares: dict[int, float] = {}  # tenant -> share at the current what-if usage
        self._borrowers: dict[tuple, dict[int, float]] = {}  # see borrowers_shares
        self.drawn = [row[:] for row in state.drawn]  # per cohort and model: usage above guarantees
        self._free = self._coming = None  # copied on first use
        self._coming_total: list[int] = []
        # Capacity set aside for nominated jobs (job -> (node, from free, from coming) per node): only
        # their tenant may use it (kube-scheduler's nominated node). Not a what-if change: it is the state's.
        self._set_aside = {j: self._take_capacity(m, where) for j, (m, where) in state.reserved.items()}

    @property
    def free(self) -> np.ndarray:
        """Free milli-GPUs per node (the state's array until the first what-if change copies it)."""
        return self.state.free if self._free is None else self._free

    def _writable_free(self) -> np.ndarray:
        if self._free is None:
            self._free = self.state.free.copy()
        return self._free

    @property
    def coming(self) -> np.ndarray:
        """Capacity that preempted jobs are giving back, per node."""
        if self._coming is None:
            self._copy_coming()
        return self._coming

    @property
    def coming_total(self) -> list[int]:
        """Capacity coming back, per model (as ``free_total`` is free capacity per model)."""
        if self._coming is None:
            self._copy_coming()
        return self._coming_total

    def _copy_coming(self) -> None:
        self._coming = self.state.releasing.copy()
        self._coming_total = self.state.releasing_total[:]

    # -- reading -----------------------------------------------------------------------------
    def pending(self, t: int):
        """Tenant ``t``'s pending jobs in queue order (priority, then arrival, then trace order)."""
        return (key[2] for key in self.state.queues[t])

    def milli(self, j: int) -> int:
        return self.state.jobs[j].milli_gpus

    def borrowing(self, t: int, m: int) -> bool:
        return self.usage[t][m] > self.state.nominal[t][m]

    def within_nominal(self, t: int, m: int, extra: int) -> bool:
        return self.usage[t][m] + extra <= self.state.nominal[t][m]

    def fits_nominal(self, t: int, j: int) -> bool:
        """Whether job ``j`` fits within tenant ``t``'s nominal quota on one of the models it may use."""
        s = self.state
        usage, nominal, milli = self.usage[t], s.nominal[t], s.jobs[j].milli_gpus
        for m in s.job_models[j]:
            if usage[m] + milli <= nominal[m]:
                return True
        return False

    def quota_fits(self, t: int, m: int, extra: int) -> bool:
        """Whether ``t`` may use ``extra`` more on model ``m`` under its borrowing limit and its cohort's pool."""
        s = self.state
        if not quota.within_borrowing_limit(self.usage[t][m] + extra, s.nominal[t][m], s.borrowing_limit[t][m]):
            return False
        return self.pool_excess(t, m, extra) <= 0

    def pool_excess(self, t: int, m: int, extra: int) -> int:
        """By how much ``extra`` more for ``t`` on model ``m`` would overdraw its cohort's pool (<= 0: it fits)."""
        s, used = self.state, self.usage[t][m]
        keep, c = s.guaranteed[t][m], s.cohort_of[t]
        return self.drawn[c][m] - quota.drawn(used, keep) + quota.drawn(used + extra, keep) - s.pool[c][m]

    def placement_for(self, j: int, m: int) -> Placement | None:
        """Where job ``j`` can start on model ``m`` now: on the nodes held for it, if they are free."""
        return self._reserved_placement(j, m, self.free) or self.placement(m, self.milli(j))

    def _reserved_placement(self, j: int, m: int, free: np.ndarray) -> Placement | None:
        reserved = self.state.reserved.get(j)
        if reserved and reserved[0] == m and all(free[node] >= amount for node, amount in reserved[1]):
            return reserved[1]
        return None

    def fit_key(self, j: int, m: int, where: Placement) -> tuple[bool, int, int]:
        """How well ``where`` on model ``m`` suits job ``j``, lowest best: the nodes set aside for it
        first, then the fewest nodes, then the least free capacity left on them (best fit across pools)."""
        free = self.free
        return (self.state.reserved.get(j) != (m, where), len(where), sum(int(free[n]) - a for n, a in where))

    def placement(self, m: int, milli: int, free: np.ndarray | None = None) -> Placement | None:
        s = self.state
        if free is None and milli > self.free_total[m]:
            return None
        return place(self.free if free is None else free, s.pool_lo[m], s.pool_hi[m], s.node_milli[m], milli)

    def share(self, t: int, m_extra: int = 0, extra: int = 0) -> float:
        """Weighted dominant share: max over models of borrowed / the cohort's lendable pool, / weight
        (with ``extra`` milli-GPUs more on model ``m_extra``)."""
        if not extra and (cached := self._shares.get(t)) is not None:
            return cached
        s = self.state
        over = self.usage[t][m_extra] + extra - s.nominal[t][m_extra]
        worst = over / max(s.pool[s.cohort_of[t]][m_extra], 1) if over > 0 else 0.0
        if len(s.models) > 1:
            worst = max(worst, self.share_except(t, m_extra))
        if not extra:
            self._shares[t] = worst / s.weight[t]
        return worst / s.weight[t]

    def borrowers_shares(self, c: int, m: int) -> dict[int, float]:
        """The members of cohort ``c`` that borrow on model ``m``, with their shares (kept until the
        next what-if change: every head of a cycle asks)."""
        key = (self.edits, c, m)
        if key not in self._borrowers:
            usage, nominal = self.usage, self.state.nominal
            self._borrowers = {key: {k: self.share(k) for k in self.state.members[c] if usage[k][m] > nominal[k][m]}}
        return self._borrowers[key]

    def share_except(self, t: int, m: int) -> float:
        """``t``'s dominant share before the weight, over its models other than ``m``."""
        s = self.state
        pools, nominal, worst = s.pool[s.cohort_of[t]], s.nominal[t], 0.0
        for k, used in enumerate(self.usage[t]):
            if k != m and used > nominal[k]:
                worst = max(worst, (used - nominal[k]) / max(pools[k], 1))
        return worst

    def victims_of(self, tenants: list[int], m: int, max_preemptions: int | None, milli: int,
                   smaller_than: dict[int, int | None] | None = None) -> list[Run]:
        """Running jobs of ``tenants`` on model ``m`` that may be preempted to place ``milli`` milli-GPUs.

        Kueue's order is lowest priority, then newest first. Placement adds one rule in front:
        victims on nodes that can give back enough for the job come first and, for a job of a
        whole node or more, grouped by node, the nodes with the most already free or coming back
        (the fewest to preempt) first. ``smaller_than``: per tenant, the size (milli-GPUs) its
        victims must stay under (None: any), for a caller that considers no others."""
        s, jobs = self.state, self.state.jobs
        ready = self.free + self.coming
        potential = (ready + s.running_on[tenants].sum(axis=0)).tolist()  # then less what may not be taken
        runs = []
        for t in tenants:
            limit = smaller_than.get(t) if smaller_than else None
            for r in s.running_of[t].values():
                if r.model != m:
                    continue
                if r.job in self.evicting or (max_preemptions is not None and s.preemptions[r.job] >= max_preemptions):
                    for node, amount in r.placement:
                        potential[node] -= amount
                elif limit is None or jobs[r.job].milli_gpus < limit:
                    runs.append(r)
        need = min(milli, s.node_milli[m])
        if milli >= s.node_milli[m]:  # whole nodes: grouped by node
            ready = ready.tolist()
            runs.sort(key=lambda r: (potential[r.placement[0][0]] < need, -ready[r.placement[0][0]],
                                     r.placement[0][0], *r.victim_rank))
            return runs
        enough = [r for r in runs if potential[r.placement[0][0]] >= need]
        short = [r for r in runs if potential[r.placement[0][0]] < need]
        return sorted(enough, key=_VICTIM_RANK) + sorted(short, key=_VICTIM_RANK)

    # -- what-if -----------------------------------------------------------------------------
    def _use(self, t: int, m: int, delta: int) -> None:
        used, keep = self.usage[t][m], self.state.guaranteed[t][m]
        self.drawn[self.state.cohort_of[t]][m] += quota.drawn(used + delta, keep) - quota.drawn(used, keep)
        self.usage[t][m] = used + delta
        self._shares.pop(t, None)

    def take(self, t: int, j: int, m: int, where: Placement) -> Admission:
        self.edits += 1
        free = self._writable_free()
        for node, milli in where:
            free[node] -= milli
        self.free_total[m] -= self.milli(j)
        self._use(t, m, self.milli(j))
        return Admission(j, m, where)

    def evict(self, run: Run) -> None:
        """Count ``run`` as gone for quotas; its capacity comes back only when the engine releases it."""
        self.edits += 1
        self.evicting.add(run.job)
        self._use(run.tenant, run.model, -self.milli(run.job))
        for node, milli in run.placement:
            self.coming[node] += milli
        self.coming_total[run.model] += self.milli(run.job)

    def hold(self, j: int, m: int, where: Placement | None = None, revocable: bool = False) -> None:
        """Reserve for pending job ``j`` the quota and a placement on model ``m`` (``where``, by default
        one found on free and returning capacity) while its capacity comes back from preempted jobs.
        For the rest of this cycle later heads can neither take the free part nor count on the part
        coming back; in later cycles ``j`` goes first (it is nominated) and starts on these nodes.
        ``revocable``: a borrower's hold, which a head within its tenant's nominal quota may take back."""
        self.holds += 1
        self.edits += 1
        milli = self.milli(j)
        self._use(self.state.job_tenant[j], m, milli)
        if where is None:
            ready = self.free + self.coming
            where = self._reserved_placement(j, m, ready) or self.placement(m, milli, ready)
        if where:
            self.held[j] = (m, where)
        if revocable:
            self.revocable.add(j)
        else:
            self.revocable.discard(j)
        self._take_capacity(m, where or ())

    def _take_capacity(self, m: int, where: Placement) -> list[tuple[int, int, int]]:
        """Take ``where`` out of free capacity and, where not free, out of capacity coming back."""
        free, coming, taken = self._writable_free(), self.coming, []
        for node, amount in where:
            from_free = min(int(free[node]), amount)
            from_coming = min(int(coming[node]), amount - from_free)
            free[node] -= from_free
            coming[node] -= from_coming
            self.free_total[m] -= from_free
            self._coming_total[m] -= from_coming
            taken.append((node, from_free, from_coming))
        return taken

    def release_set_aside(self, t: int) -> None:
        """Give tenant ``t`` back the capacity set aside for its jobs, before the first of them is
        tried (its queue is strict FIFO: what its later jobs hold does not keep an earlier one waiting;
        a job being moved keeps its capacity, as it is not in the queue until it is back)."""
        if not self._set_aside:
            return
        for j in [j for j in self._set_aside if self.state.job_tenant[j] == t and j not in self.state.terminating]:
            self._give_back(j)

    def _give_back(self, j: int) -> None:
        """Return the capacity set aside for job ``j`` to free and returning capacity."""
        for node, from_free, from_coming in self._set_aside.pop(j):
            self._free[node] += from_free
            self._coming[node] += from_coming
            model = self.state.node_model[node]
            self.free_total[model] += from_free
            self._coming_total[model] += from_coming

    def release_revocable_set_asides(self, t: int, m: int, enough: Callable[[], bool]) -> bool:
        """For a head of ``t`` within its nominal quota: give back capacity on model ``m`` set aside for
        other tenants' borrowers that wait for their fair share (revocable nominations, the newest
        first) until ``enough()``; whether it then is. It was borrowed capacity, and taking it back
        loses no work. What is given back stays given back for the rest of the cycle."""
        s = self.state
        for k in sorted((k for k in self._set_aside if k in s.revocable), key=lambda k: -s.nominated[k]):
            if s.job_tenant[k] == t or s.reserved[k][0] != m:
                continue
            self._give_back(k)
            if enough():
                return True
        return False

    def unevict(self, run: Run) -> None:
        self.evicting.discard(run.job)
        self._use(run.tenant, run.model, self.milli(run.job))
        for node, milli in run.placement:
            self.coming[node] -= milli
        self.coming_total[run.model] -= self.milli(run.job)
