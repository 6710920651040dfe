"""Scheduling policies: one interface (``decide(snapshot) -> Decision``) and a registry.

Every policy runs the same cycle on a snapshot: take the heads of the tenants' queues in the
policy's order; start a head if its quota and a placement allow; otherwise try to make room
by preemption (the policy's rule), optionally backfill behind it, and move on to the next
tenant. A tenant's queue is strict FIFO: nothing passes a blocked head except a backfill.

- ``static``: a tenant never uses more than its nominal quota; no preemption.
- ``borrow``: Kueue's cohort borrowing (borrowing and lending limits). A tenant below its
  nominal quota reclaims by preempting borrowed work of its cohort, lowest priority and
  newest first (Kueue's ``reclaimWithinCohort: Any``), and the set of victims is minimal.
- ``fair``: ``borrow`` plus weighted dominant-resource fair sharing: heads are taken in order
  of the tenant's share after admission, and a borrowing tenant may preempt the work of a
  tenant whose share stays above its own (Kueue's fair sharing, ``LessThanOrEqualToFinalShare``
  made strict so two tenants cannot preempt each other back and forth).
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from dataclasses import dataclass
from itertools import islice
from typing import ClassVar

import numpy as np

from gpufleet.errors import InputError
from gpufleet.scheduler import quota
from gpufleet.scheduler.placement import place
from gpufleet.scheduler.state import Admission, Decision, Run, Snapshot


EPSILON = 1e-12  # shares closer than this are equal


@dataclass(frozen=True, slots=True)
class PolicyOptions:
    """``backfill``: start later jobs of a blocked queue that finish before its head could start
    (EASY backfill at the quota level, with the trace's run times as estimates), looking at most
    ``backfill_depth`` jobs deep. ``max_preemptions``: a job preempted this often is never preempted again."""

    backfill: bool = False
    backfill_depth: int = 64
    max_preemptions: int | None = None


class Policy(ABC):
    name: ClassVar[str]
    # Whether one tenant's admission can unblock another's head that could do nothing: if so, stuck
    # heads are not left out up front.
    admissions_unblock_others: ClassVar[bool] = False
    # Whether a head within its tenant's nominal quota that failed in a cycle where jobs started gets
    # another cycle at the same instant: jobs started in a cycle cannot be preempted in it, and a
    # borrower that started before or after the head may be one it can take back from.
    rechecks_passed_over: ClassVar[bool] = False
    # Whether a job that arrives behind a waiting head needs a decision. Under static without backfill it
    # cannot change one (only heads are read, and nothing else changed); reclaiming policies also use
    # every cycle to renew holds and nominations, and taking those cycles away changes their runs.
    decides_on_every_arrival: ClassVar[bool] = True

    def __init__(self, options: PolicyOptions = PolicyOptions()):
        self.options = options
        self._inadmissible: dict[int, int] = {}  # blocked head -> retry_key when it could do nothing

    def decide(self, snap: Snapshot) -> Decision:
        decision, queues = Decision(), {}  # queues: see _behind
        tried = [(t, j) for t, j in enumerate(snap.state.heads) if j is not None]
        if not self.options.backfill:  # (a stuck head still lets jobs behind it backfill)
            # Heads known to be stuck are left out up front, unless others' admissions in this cycle
            # could unblock them; there are none when every head is stuck.
            stuck = [self._stuck(snap, t, j) for t, j in tried]
            if not self.admissions_unblock_others or all(stuck):
                tried = [head for head, known in zip(tried, stuck) if not known]
        heads = [self._entry(snap, t, j) for t, j in tried]
        heapq.heapify(heads)
        waiting = set()  # tenants whose head waits for room made in this cycle
        while heads:
            *_, t, j = heapq.heappop(heads)
            holds, moved = snap.holds, len(snap.moved)
            snap.release_set_aside(t)
            if t in waiting:  # strict FIFO: a job behind a waiting head may not start, only make room
                victims = self.make_room_behind(snap, t, j)
                admission = None
            else:
                admission, victims = self._try(snap, t, j)
            decision.preempt += victims
            if admission or victims or snap.holds != holds:
                if admission:
                    decision.admit.append(admission)
                else:  # it waits for capacity reclaimed or coming back: it goes first until it starts
                    decision.nominate += [j, *snap.moved[moved:]]  # then the jobs moved to make room for it
                    waiting.add(t)
                if (k := next(self._behind(queues, snap, t), None)) is not None:
                    heapq.heappush(heads, self._entry(snap, t, k))
            elif t in waiting:
                continue
            elif decision.admit and self.rechecks_passed_over and snap.fits_nominal(t, j):
                decision.recheck = True  # within its quota, passed over for jobs started in this cycle
            elif self.options.backfill:  # the head can do nothing: later jobs that end before it could start
                decision.admit += self.backfill(snap, t, j, self._behind(queues, snap, t))
        decision.reserve = snap.held
        decision.revocable = snap.revocable & snap.held.keys()
        # A nomination lasts while its job waits for room (or, moved, for its own capacity to come
        # back): not once it can do nothing, or is not even tried, so that it keeps nothing from others.
        decision.denominate = [j for j in snap.state.nominated
                               if j not in snap.held and j not in snap.state.terminating]
        return decision

    @staticmethod
    def _behind(queues: dict, snap: Snapshot, t: int):
        """Tenant ``t``'s queued jobs behind its head: one iterator for the whole cycle, made when first needed."""
        if (behind := queues.get(t)) is None:
            behind = queues[t] = islice(snap.pending(t), 1, None)
        return behind

    def _try(self, snap: Snapshot, t: int, j: int) -> tuple[Admission | None, list[int]]:
        """Start head ``j``, or make room for it. A head that could do neither waits, untried, until
        something it depends on changes (``retry_key``): as Kueue keeps inadmissible workloads aside."""
        memo, holds, untouched = self._inadmissible.get(j), snap.holds, snap.edits == 0
        key = self.retry_key(snap, t, j) if memo is not None or untouched else None
        if memo is not None and memo == key:
            return None, []
        admission = self.admit(snap, t, j)
        victims = [] if admission else self.make_room(snap, t, j)
        if admission or victims or snap.holds != holds:
            self._inadmissible.pop(j, None)  # not a dead end: a capacity hold has to be renewed next cycle
        elif untouched:  # a failure on the state itself, not on this cycle's what-if changes
            self._inadmissible[j] = key
        return admission, victims

    def retry_key(self, snap: Snapshot, t: int, j: int):
        """What the chances of head ``j`` of tenant ``t`` depend on. By default only giving back
        quota or capacity (a finish, an eviction, a release) or a quota change can help it;
        arrivals and other admissions cannot (Kueue requeues inadmissible workloads on the same events)."""
        return snap.state.version

    def _stuck(self, snap: Snapshot, t: int, j: int) -> bool:
        """Whether head ``j`` could do nothing last time and nothing it depends on has changed since."""
        memo = self._inadmissible.get(j)
        return memo is not None and memo == self.retry_key(snap, t, j)

    def _entry(self, snap: Snapshot, t: int, j: int) -> tuple:
        """Head ``j``'s place in the cycle: the policy's precedence, then its rank, priority and
        arrival; its tenant and itself last."""
        job = snap.state.jobs[j]
        return (*self.precedence(snap, t, j), *self.rank(snap, t, j), -job.priority, job.arrival_s, j, t, j)

    def precedence(self, snap: Snapshot, t: int, j: int) -> tuple:
        """What orders heads before the policy's rank: nominated jobs first, first nominated first served."""
        nominated = snap.state.nominated.get(j)
        return (0, nominated) if nominated is not None else (1, 0)

    def rank(self, snap: Snapshot, t: int, j: int) -> tuple:
        """What orders the heads of different tenants before priority and arrival."""
        return ()

    def ceiling(self, state, peak: list[list[int]], t: int, m: int) -> int:
        """The most milli-GPUs tenant ``t`` could ever hold on model ``m`` (``peak``: highest nominal quotas)."""
        return min(peak[t][m], state.capacity[m])

    @abstractmethod
    def quota_allows(self, snap: Snapshot, t: int, m: int, milli: int) -> bool: ...

    def admit(self, snap: Snapshot, t: int, j: int) -> Admission | None:
        """Start ``j`` where its tenant's quota allows and it can be placed: a job that names no model
        (or one) on the first of its models in pool order; a job that names several on the best fit
        among them (``Snapshot.fit_key``; ties: pool order), so that they act as one set of nodes."""
        milli, picks, best = snap.milli(j), snap.state.job_picks_model[j], None
        for m in snap.state.models_for(j):
            if milli <= snap.free_total[m] and self.quota_allows(snap, t, m, milli) and (where := snap.placement_for(j, m)):
                if not picks:
                    return snap.take(t, j, m, where)
                key = snap.fit_key(j, m, where)
                if best is None or key < best[0]:
                    best = (key, m, where)
        return None if best is None else snap.take(t, j, best[1], best[2])

    def make_room(self, snap: Snapshot, t: int, j: int) -> list[int]:
        """Jobs to preempt so that ``j`` can start once they are gone (none: it waits)."""
        return []

    def make_room_behind(self, snap: Snapshot, t: int, j: int) -> list[int]:
        """Like ``make_room``, for a job queued behind a head that waits for room made in this cycle,
        so that a burst of jobs within its tenant's quota is reclaimed for at once, not one grace
        period after another. None by default."""
        return []

    def backfill(self, snap: Snapshot, t: int, j: int, queue) -> list[Admission]:
        shadow_s = self._shadow_s(snap, t, j)
        started = []
        for k in islice(queue, self.options.backfill_depth):
            state = snap.state
            run_s = state.remaining_s[k] + (state.jobs[k].restart_s if state.preemptions[k] else 0.0)
            if snap.now_s + run_s <= shadow_s and (admission := self.admit(snap, t, k)):
                started.append(admission)
        return started

    def _shadow_s(self, snap: Snapshot, t: int, j: int) -> float:
        """When the blocked head ``j`` could start at the earliest: once enough of its tenant's own
        work ends to bring it under its nominal quota, or else when anything on its model ends."""
        state, milli = snap.state, snap.milli(j)
        m = next(iter(state.models_for(j)))
        need = snap.usage[t][m] + milli - state.nominal[t][m]
        runs = sorted((r.end_s, snap.milli(r.job)) for r in
                      (state.running_of[t].values() if need > 0 else state.running.values()) if r.model == m)
        freed = 0
        for end_s, run_milli in runs:
            freed += run_milli
            if freed >= need:
                return end_s
        return runs[-1][0] if runs else snap.now_s

    def _evict_until(self, snap: Snapshot, candidates: list[Run], fits, may_take) -> list[int]:
        """Evict candidates in order (where ``may_take`` allows) until ``fits()``; then put back
        every victim that is not needed (newest choice first). Nothing is evicted if it never fits."""
        victims = []
        for run in candidates:
            if not may_take(run):
                continue
            snap.evict(run)
            victims.append(run)
            if fits():
                for back in reversed(victims[:-1]):
                    snap.unevict(back)
                    if fits():
                        victims.remove(back)
                    else:
                        snap.evict(back)
                return [r.job for r in victims]
        for run in victims:
            snap.unevict(run)
        return []

    @staticmethod
    def _fits_when_released(snap: Snapshot, t: int, m: int, milli: int):
        return lambda: (milli <= snap.free_total[m] + snap.coming_total[m] and snap.quota_fits(t, m, milli)
                        and snap.placement(m, milli, snap.free + snap.coming) is not None)


POLICIES: dict[str, type[Policy]] = {}


def register(cls: type[Policy]) -> type[Policy]:
    POLICIES[cls.name] = cls
    return cls


def make_policy(name: str, options: PolicyOptions = PolicyOptions()) -> Policy:
    try:
        return POLICIES[name](options)
    except KeyError:
        raise InputError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}", field="policy") from None


@register
class Static(Policy):
    name = "static"

    @property
    def decides_on_every_arrival(self) -> bool:
        return self.options.backfill

    def quota_allows(self, snap, t, m, milli):
        return snap.within_nominal(t, m, milli)

    def retry_key(self, snap, t, j):
        """A head over its tenant's nominal quota waits for that tenant's own work to end (or its
        quota to change): others' finishes cannot help it."""
        return snap.state.version if snap.fits_nominal(t, j) else ("own", snap.state.tenant_version[t])


@register
class Borrow(Policy):
    name = "borrow"

    rechecks_passed_over = True

    def rank(self, snap, t, j):
        return (not snap.fits_nominal(t, j),)  # Kueue: heads that need no borrowing (on some model) first

    def admit(self, snap, t, j):
        """As any policy; and a head within its tenant's nominal quota may also start on capacity set
        aside for another tenant's borrower that waits for its fair share (a revocable nomination)."""
        admission = super().admit(snap, t, j)
        if admission or not snap.state.revocable:
            return admission
        milli = snap.milli(j)
        for m in snap.state.models_for(j):
            if snap.within_nominal(t, m, milli) and snap.release_revocable_set_asides(
                    t, m, lambda m=m: self.quota_allows(snap, t, m, milli) and snap.placement_for(j, m) is not None):
                return super().admit(snap, t, j)
        return None

    def quota_allows(self, snap, t, m, milli):
        return snap.quota_fits(t, m, milli)

    def ceiling(self, state, peak, t, m):
        members = state.members[state.cohort_of[t]]
        pool = sum(quota.lendable(peak[k][m], state.lending_limit[k][m]) for k in members)
        most = min(state.capacity[m], quota.guaranteed(peak[t][m], state.lending_limit[t][m]) + pool)
        limit = state.borrowing_limit[t][m]
        return most if limit is None else min(most, peak[t][m] + limit)

    def reclaim(self, snap: Snapshot, t: int, j: int) -> list[int]:
        """A tenant within its nominal quota takes back what its cohort borrowed from it."""
        state, milli = snap.state, snap.milli(j)
        for m in state.models_for(j):
            if not snap.within_nominal(t, m, milli):
                continue
            fits = self._fits_when_released(snap, t, m, milli)
            if fits() or snap.release_revocable_set_asides(t, m, fits):
                snap.hold(j, m)
                return []  # what it needs is already on its way back, or was only set aside for a borrower
            borrowers = [k for k in state.members[state.cohort_of[t]] if k != t and snap.borrowing(k, m)]
            if borrowers and (victims := self._evict_until(
                    snap, snap.victims_of(borrowers, m, self.options.max_preemptions, milli), fits,
                    lambda run: snap.borrowing(run.tenant, run.model))):
                snap.hold(j, m)
                return victims
            if victims := self.consolidate(snap, t, j, m, borrowers):
                return victims  # the room is there, but only with jobs moved to other nodes
        return []

    make_room = make_room_behind = reclaim  # borrowing makes room only by reclaiming

    consolidate_tries = 8  # target nodes tried first, cheapest first, before a head gives up for the cycle

    def consolidate(self, snap: Snapshot, t: int, j: int, m: int, borrowers: list[int]) -> list[int]:
        """Make room for head ``j``, within its tenant's nominal quota, where no set of borrowed jobs
        can: the nodes that borrowed work would free also hold guaranteed work. Clear target nodes
        (evict their borrowed jobs, then move single-node jobs off them) and give each moved job
        room on another node (free, returning, or reclaimed from borrowed work there). A moved job
        is preempted like any other (it keeps its last checkpoint) and restarts first, right after
        ``j``. Returns the victims, moved jobs included (none: nothing changed)."""
        state = snap.state
        potential = snap.free + snap.coming
        need = self._next_need(potential[state.pool_lo[m]:state.pool_hi[m]], state.node_milli[m], snap.milli(j))
        runs_on = self._runs_on(snap, m)
        for first in self._targets(snap, potential, runs_on, m, need, set(borrowers))[
                :self.consolidate_tries]:
            if victims := self._consolidate_from(snap, t, j, m, borrowers, first, dict(runs_on)):
                return victims
        return []

    def _consolidate_from(self, snap: Snapshot, t: int, j: int, m: int, borrowers: list[int],
                          first: int, runs_on: dict[int, list[Run]]) -> list[int]:
        """One try of ``consolidate`` from target node ``first`` (``runs_on``: a copy this try may consume)."""
        state, milli = snap.state, snap.milli(j)
        lo, hi, size = state.pool_lo[m], state.pool_hi[m], state.node_milli[m]
        limit, borrowing = self.options.max_preemptions, set(borrowers)
        before = set(snap.evicting)
        claimed = np.zeros_like(snap.free)  # capacity promised to the head and to moved jobs

        def potential() -> np.ndarray:
            return snap.free + snap.coming - claimed

        def undo() -> list[int]:
            for job in snap.evicting - before:
                snap.unevict(state.running[job])
            return []

        def may_take(run: Run) -> bool:
            return run.tenant in borrowing and snap.borrowing(run.tenant, run.model)

        moved, node = [], first
        while (where := place(potential(), lo, hi, size, milli)) is None:
            need = self._next_need(potential()[lo:hi], size, milli)
            if node is None:
                node = next(iter(self._targets(snap, potential(), runs_on, m, need, borrowing)), None)
                if node is None:
                    return undo()
            here = [r for r in runs_on.pop(node) if r.job not in snap.evicting]
            here.sort(key=lambda r: r.victim_rank)
            for r in here:  # borrowed work first: lowest priority, newest first
                if potential()[node] < need and may_take(r):
                    snap.evict(r)
            movers = []
            for r in sorted((r for r in here if r.job not in snap.evicting and len(r.placement) == 1),
                            key=lambda r: snap.milli(r.job)):  # then move jobs, the smallest (easiest to place) first
                if potential()[node] < need:
                    snap.evict(r)
                    movers.append(r)
            for r in reversed(movers[:-1]):  # keep in place what turned out not to be needed
                snap.unevict(r)
                if potential()[node] < need:
                    snap.evict(r)
                else:
                    movers.remove(r)
            moved += movers
            node = None
        for node, amount in where:
            claimed[node] += amount
        spots = []
        for r in sorted(moved, key=lambda r: -snap.milli(r.job)):  # the largest first: the hardest to place
            r_milli = snap.milli(r.job)

            def fits() -> bool:
                return place(potential(), lo, hi, size, r_milli) is not None

            if not fits() and not self._evict_until(snap, snap.victims_of(borrowers, m, limit, r_milli), fits, may_take):
                return undo()
            spot = place(potential(), lo, hi, size, r_milli)
            for node, amount in spot:
                claimed[node] += amount
            spots.append((r, spot))
        if not snap.quota_fits(t, m, milli):
            return undo()
        snap.hold(j, m, where)
        for r, spot in spots:
            snap.hold(r.job, m, spot)
        snap.moved += [r.job for r in moved]
        return sorted(snap.evicting - before)

    def _runs_on(self, snap: Snapshot, m: int) -> dict[int, list[Run]]:
        """Node -> the running jobs on model ``m`` that are not being preempted and may be."""
        state, limit, out = snap.state, self.options.max_preemptions, {}
        for runs in state.running_of:
            for r in runs.values():
                if r.model == m and r.job not in snap.evicting and (limit is None or state.preemptions[r.job] < limit):
                    for node, _ in r.placement:
                        out.setdefault(node, []).append(r)
        return out

    @staticmethod
    def _next_need(pool: np.ndarray, size: int, milli: int) -> int:
        """How much free capacity the next target node must have for a placement of ``milli``."""
        if milli <= size:
            return milli
        whole, rest = divmod(milli, size)
        return size if int((pool == size).sum()) < whole else rest

    @staticmethod
    def _targets(snap: Snapshot, potential: np.ndarray, runs_on: dict[int, list[Run]], m: int, need: int,
                 borrowing: set[int]) -> list[int]:
        """Nodes that can be brought to ``need`` by evicting borrowed work and moving single-node jobs,
        the fewest milli-GPUs to move first (then the most potential, then the lowest index)."""
        keys = []
        for node in range(snap.state.pool_lo[m], snap.state.pool_hi[m]):
            if node not in runs_on or potential[node] >= need:
                continue
            runs = [r for r in runs_on[node] if r.job not in snap.evicting]
            taken = [r.tenant in borrowing and snap.borrowing(r.tenant, r.model) for r in runs]
            borrowed = sum(a for r, b in zip(runs, taken) if b for n, a in r.placement if n == node)
            movable = sum(snap.milli(r.job) for r, b in zip(runs, taken) if not b and len(r.placement) == 1)
            to_move = need - int(potential[node]) - borrowed
            if to_move <= movable:
                keys.append((max(0, to_move), -int(potential[node]), node))
        return [node for *_, node in sorted(keys)]


@register
class Fair(Borrow):
    name = "fair"

    def rank(self, snap, t, j):
        milli, models = snap.milli(j), snap.state.models_for(j)
        return (snap.share(t, models[0], milli) if len(models) == 1 else min(snap.share(t, m, milli) for m in models),)

    admissions_unblock_others = True  # another tenant's admission raises its share and can make it a victim

    def precedence(self, snap, t, j):
        """Nominated jobs first, first come, first served; but a borrower that only waits for its fair
        share (a revocable nomination) comes after every head within its tenant's nominal quota."""
        nominated = snap.state.nominated.get(j)
        if nominated is not None and j not in snap.state.revocable:
            return (0, nominated)
        if snap.fits_nominal(t, j):
            return (1, 0)
        return (2, nominated) if nominated is not None else (3, 0)

    def retry_key(self, snap, t, j):
        """Any change can help (another tenant's start raises its share, which can make it a victim):
        the state's change counter; none once this cycle has made what-if changes."""
        return None if snap.edits else snap.state.changes

    def make_room(self, snap, t, j):
        holds = snap.holds
        victims = self.reclaim(snap, t, j)
        if victims or snap.holds != holds:
            return victims  # reclaimed, or what it needs is already coming back
        state, milli = snap.state, snap.milli(j)
        for m in state.models_for(j):
            if not quota.within_borrowing_limit(snap.usage[t][m] + milli, state.nominal[t][m],
                                                state.borrowing_limit[t][m]):
                continue
            fits = self._fits_when_released(snap, t, m, milli)
            revocable = not snap.within_nominal(t, m, milli)  # an owner within its quota may take it back
            if fits():
                snap.hold(j, m, revocable=revocable)
                return []  # what it needs is already on its way back
            mine = snap.share(t, m, milli)
            shares = snap.borrowers_shares(state.cohort_of[t], m)
            richer = [k for k, share in shares.items() if share > mine + EPSILON and k != t]
            if not richer:
                continue
            gives, under = self._can_give(snap, richer, m, mine)
            if sum(gives) < self._shortfall(snap, t, m, milli) or snap.placement(
                    m, milli, snap.free + snap.coming + np.minimum(state.running_on[richer],
                                                                   np.array(gives, dtype=np.int64)[:, None]).sum(axis=0)) is None:
                continue  # even taking back all they may give would not make room
            candidates = snap.victims_of(richer, m, self.options.max_preemptions, milli, under)
            candidates.sort(key=lambda r: -shares[r.tenant])  # stable: keeps lowest priority, newest first
            victims = self._evict_until(snap, candidates, fits, self._stays_above(snap, richer, m, mine))
            if victims:
                snap.hold(j, m, revocable=revocable)
                return victims
        return []

    @staticmethod
    def _stays_above(snap: Snapshot, tenants: list[int], m: int, mine: float):
        """Whether a running job of one of ``tenants`` on ``m`` may be taken: its tenant borrows on
        ``m`` and its share without the job stays above ``mine``. (``Snapshot.share`` with the job
        removed, its other models' part computed once: this runs for every candidate victim.)"""
        state, usage, bar = snap.state, snap.usage, mine + EPSILON
        pool = max(state.pool[state.cohort_of[tenants[0]]][m], 1) if tenants else 1
        other = {k: snap.share_except(k, m) for k in tenants}

        def stays_above(run: Run) -> bool:
            k = run.tenant
            over = usage[k][m] - state.nominal[k][m]
            if over <= 0:
                return False
            left = over - state.jobs[run.job].milli_gpus
            return max(other[k], left / pool if left > 0 else 0.0) / state.weight[k] > bar

        return stays_above

    @staticmethod
    def _can_give(snap: Snapshot, tenants: list[int], m: int, mine: float) -> tuple[list[int], dict[int, int | None]]:
        """Upper bounds on what each of ``tenants`` can give back on ``m`` while its share stays above
        ``mine``, and the size each job it gives must stay under (None: any size, as its share on
        other models keeps it above: then all it runs there, as a job may take it below its quota)."""
        state, gives, under = snap.state, [], {}
        for k in tenants:
            borrowed = quota.borrowed(snap.usage[k][m], state.nominal[k][m])
            keep = mine * max(state.pool[state.cohort_of[k]][m], 1) * state.weight[k]
            if snap.share(k, m, -borrowed) > mine + EPSILON:
                gives.append(snap.usage[k][m])
                under[k] = None
            else:
                under[k] = max(0, borrowed - int(keep))
                sizes = state.running_sizes[k][m]
                gives.append(under[k] if sizes and min(sizes) < under[k] else 0)  # no job small enough: nothing
        return gives, under

    @staticmethod
    def _shortfall(snap: Snapshot, t: int, m: int, milli: int) -> int:
        """How much more than is free (or coming back) ``t`` needs, for placement or for the cohort's pool."""
        return max(snap.pool_excess(t, m, milli), milli - snap.free_total[m] - snap.coming_total[m])
