"""Public claims against the record: what the ledger holds at each claim's deadline, and what it supported
by the deadline as known the day the claim was made.

Each claim needs the fleet on two (as-of, known-at) points, and a large ledger has hundreds of claims:
folding the ledger once per point is a minute per claim at a million events. Instead:

- **Recorded** ("actual"): the claimed metric on the claim's deadline (or the day asked, if earlier),
  as known at one time. Every claim's day is read from one fold in effective-date order
  (:meth:`Ledger.states_on`).
- **Supported when stated**: the GPUs active, in warehouse and due by the deadline (or the value of the
  lots planned by then), as known at the end of the day the claim was made: the prefix 1..K of the chain.
  Claims are taken in the order of K; one fold of the prefix at every date is carried forward over the
  events recorded between two claim days, and is the fold as of the deadline whenever no event of the
  prefix is effective after it. An event recorded effective before what the fold already holds, a void
  of an event in it, or an event dated after a deadline makes that point be folded on its own.

A long-lived process keeps its readings (:meth:`FleetService.keeper`), each with the prefix it was read
from, and reuses them only after checking the chain still holds that prefix:

- a recorded reading of day D over the prefix 1..S holds over 1..K (K >= S) when no event S+1..K is
  effective on or before D (a void carries the date of the event it voids): after a write dated today
  only today's and later readings are read again;
- a supported reading is a fact about the prefix of its claim day: it holds while that prefix does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import select

from gpufleet.domain import views
from gpufleet.domain.chain import end_of_day
from gpufleet.domain.events import EventVoided
from gpufleet.domain.fold import fold, voided_seqs
from gpufleet.domain.state import Claim, FleetState
from gpufleet.domain.types import ClaimMetric
from gpufleet.ledger.schema import events
from gpufleet.ledger.store import Ledger
from gpufleet.services.fleet import FleetService, known_at_instant
from gpufleet.services.head_state import HeadFold
from gpufleet.services.readings import PrefixTable, prefix_of, unchanged_before

# what a reading depends on: metric, claimant, model, period start, and the day (recorded) or deadline
Reading = tuple[str, str, str | None, date | None, date]

KEPT_PREFIXES = 8  # recorded readings: the prefixes kept (the head's, and a few "as known at")
KEPT_CLAIM_DAYS = 4096  # supported readings: the claim days' prefixes kept
CLAIMS = "claims"  # what the tables keep (one kind each)


@dataclass
class ClaimReadings:
    """The readings one service has made, by the ledger prefix they were read from."""

    recorded: PrefixTable[Reading, float] = field(default_factory=lambda: PrefixTable(KEPT_PREFIXES))
    supported: PrefixTable[Reading, float] = field(default_factory=lambda: PrefixTable(KEPT_CLAIM_DAYS))


def recorded_reading(c: Claim, on: date) -> Reading:
    """The recorded reading a claim needs on ``on``: its metric on its deadline, or ``on`` if earlier."""
    return str(c.metric), c.claimant, c.model, c.period_start, min(on, c.deadline)


def supported_reading(c: Claim) -> Reading:
    return str(c.metric), c.claimant, c.model, c.period_start, c.deadline


def claim_forecasts(service: FleetService, state: FleetState, on: date, known_at: str | None = None,
                    head: HeadFold | None = None) -> list[dict]:
    """Each claim in ``state`` made by ``on``, against the record at its deadline (or ``on``, if earlier;
    as recorded by ``known_at``) and against what the ledger supported by the deadline as known at the
    end of the day it was made (:func:`supported_when_stated`). ``head``: the head's fold, if the caller
    holds it: with no ``known_at``, the claims are read at its seq, and days from its last date from it."""
    made = [(k, c) for k, c in sorted(state.claims.items()) if c.stated_on <= on]
    memo = service.keeper("claims", ClaimReadings)
    whole = head.state if head is not None and known_at is None else None
    with service.reader.connect() as conn:
        ledger = Ledger(conn)
        known = head.seq if whole is not None else ledger.known_seq(known_at_instant(known_at))
        recorded = _recorded(ledger, memo, known, {recorded_reading(c, on): c for _k, c in made}, whole)
        supported = _supported(ledger, memo, [c for _k, c in made])
    rows = []
    for claim_id, c in made:
        actual, most = recorded[recorded_reading(c, on)], supported[(c.stated_on, supported_reading(c))]
        rows.append({"claim": claim_id, "claimant": c.claimant, "metric": c.metric, "target": c.target,
                     "stated_on": c.stated_on.isoformat(), "deadline": c.deadline.isoformat(), "actual": actual,
                     "supported_when_stated": most, "achievable_when_stated": most >= c.target,
                     "status": "open" if on < c.deadline else ("met" if actual >= c.target else "missed")})
    return rows


def supported_when_stated(known: FleetState, c: Claim) -> float:
    """The most ``known`` (the record as known when the claim was made, as of its deadline) supports by
    the deadline: GPUs of the model active, in warehouse or due by then (``active_gpus``), or the value
    of the claimant's lots planned from the period start to the deadline (``gpu_spend_usd``)."""
    if c.metric != ClaimMetric.ACTIVE_GPUS:
        return sum(lot.gpus * lot.unit_price_usd for lot in known.lots.values()
                   if lot.owner == c.claimant and (c.period_start or date.min) <= lot.planned_date <= c.deadline
                   and (c.model is None or lot.model == c.model))
    rows = [h for h in views.holdings(known, c.deadline, c.claimant) if c.model is None or h.model == c.model]
    return float(sum(h.active + h.in_warehouse + h.due_by_as_of for h in rows))


def _recorded(ledger: Ledger, memo: ClaimReadings, known: int, wanted: dict[Reading, Claim],
              whole: FleetState | None) -> dict[Reading, float]:
    """Each wanted reading over the prefix 1..``known``: kept ones that still hold, the rest from one pass
    (``whole``: the fold of that prefix at every date, if the caller holds it)."""
    got: dict[Reading, float] = {}
    base = memo.recorded.longest(CLAIMS, known)
    if base is not None:
        before = unchanged_before(ledger, base[0], known)
        got = {r: v for r, v in base[1].items() if r in wanted and r[-1] < before}
    missing = {r: c for r, c in wanted.items() if r not in got}
    active = {r: c for r, c in missing.items() if c.metric == ClaimMetric.ACTIVE_GPUS}
    spend = {r: c for r, c in missing.items() if r not in active}
    by_day: dict[date, list[Reading]] = defaultdict(list)
    for r in active:
        by_day[r[-1]].append(r)
    days = set(by_day) | ({max(r[-1] for r in spend)} if spend else set())
    fleet = None
    for day, fleet in ledger.states_on(sorted(days), known, whole):
        if day in by_day:
            got.update(zip(by_day[day], views.claim_values(fleet, day, [active[r] for r in by_day[day]])))
    if spend:  # from the fold past every spend day: delivered lots never change (views.delivered_values)
        got.update(zip(spend, views.delivered_values(fleet, [(c, r[-1]) for r, c in spend.items()])))
    memo.recorded.keep(CLAIMS, prefix_of(ledger, known), got)
    return got


def _supported(ledger: Ledger, memo: ClaimReadings, claims: Sequence[Claim]) -> dict[tuple[date, Reading], float]:
    """Each claim's supported reading, by (stated on, reading): kept ones for the same claim-day prefix,
    the rest folded as the module says, claim days in recording order."""
    by_day: dict[date, dict[Reading, Claim]] = defaultdict(dict)
    for c in claims:
        by_day[c.stated_on][supported_reading(c)] = c
    prefixes = {day: ledger.known_seq(end_of_day(day)) for day in by_day}
    out: dict[tuple[date, Reading], float] = {}
    carried = _Carried(ledger)
    for day in sorted(by_day, key=lambda d: (prefixes[d], d)):
        known = prefixes[day]
        prefix = prefix_of(ledger, known)
        have = memo.supported.of(CLAIMS, prefix)
        missing = {r: c for r, c in by_day[day].items() if r not in have}
        if missing:
            have.update(carried.readings(known, missing))
            memo.supported.keep(CLAIMS, prefix, have)
        out.update({(day, r): have[r] for r in by_day[day]})
    return out


class _Carried:
    """The fold of the prefix 1..seq at every date, carried forward as the prefix grows."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.seq: int | None = None
        self.state = FleetState()
        self.voided: set[int] = set()

    def readings(self, known: int, wanted: dict[Reading, Claim]) -> dict[Reading, float]:
        """Each wanted supported reading over the prefix 1..``known`` (not before the last one asked)."""
        self._advance(known)
        last = self.state.as_of  # the latest effective date in the prefix (None: nothing yet)
        out = {r: supported_when_stated(self.state, c) for r, c in wanted.items() if last is None or last <= r[-1]}
        later = {r: c for r, c in wanted.items() if r not in out}  # an event of the prefix is dated after r
        deadlines = sorted({r[-1] for r in later})
        for day, fleet in self.ledger.states_on(deadlines, known):
            out.update({r: supported_when_stated(fleet, c) for r, c in later.items() if r[-1] == day})
        return out

    def _advance(self, known: int) -> None:
        if self.seq is not None and known == self.seq:
            return
        if self.seq is not None and known > self.seq:
            rows = self.ledger.conn.execute(
                select(events.c.seq, events.c.effective_date, events.c.type, events.c.payload)
                .where(events.c.seq > self.seq, events.c.seq <= known)
                .order_by(events.c.effective_date, events.c.seq)).all()
            rows = [(seq, date.fromisoformat(eff), kind, payload) for seq, eff, kind, payload in rows]
            voids = voided_seqs(p for _s, _e, kind, p in rows if kind == EventVoided.event_type)
            in_order = not rows or self.state.as_of is None or rows[0][1] >= self.state.as_of
            if in_order and all(v > self.seq for v in voids):  # nothing already folded is voided or passed
                self.voided |= voids
                fold(self.state, rows, self.voided)
                self.seq = known
                return
        self.state, self.seq = self.ledger.state_at(known), known
        self.voided = set()  # a refold reads every void of the prefix itself; later ones are all new
