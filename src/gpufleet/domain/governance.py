"""Governance rules: related-party transactions, who may approve them, arm's-length prices.

A *transaction* moves value from a giver to a receiver: a delivery-slot swap (the party whose
shipped GPUs go to the other), a loan (the lender), a loan a plan proposes. It needs approval
when the two are related parties and its value exceeds the threshold (SEC Regulation S-K Item
404(a): USD 120,000), and always when it redirects a delivery lot. Approvers are the giver's
independent directors or audit committee members (Nasdaq Rule 5630); a person with any role in
the receiver, or family of one, is interested and can never approve. A quorum of approving
votes approves; one rejection by an eligible person rejects.

A *series* (Item 404(a) counts "any series of similar transactions" together): the related-party
transactions from the same giver to the same receiver dated in one fiscal year. A transaction
needs approval once the series up to and including it exceeds the threshold, and every event
that executes one passes :func:`approval_gate` before it is recorded. Many transactions each
just under the threshold are reported as *structuring* (:func:`structuring`).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, timedelta

from pydantic import BaseModel, ConfigDict, Field

from gpufleet.domain import events as ev
from gpufleet.domain.parties import related_parties
from gpufleet.domain.state import FleetState
from gpufleet.errors import InvariantViolation


class MarketPoint(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    since: date
    usd_per_gpu_hour: float = Field(gt=0)
    source: str


class GovernancePolicy(BaseModel):
    """Configurable in YAML (``gpufleet audit --policy FILE``); the defaults are sourced."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    threshold_usd: float = Field(default=120_000.0, ge=0, description="SEC S-K Item 404(a)")
    always_approve_lot_redirects: bool = True
    quorum: int = Field(default=2, ge=1)
    price_band: float = Field(default=0.25, ge=0, le=10, description="allowed deviation from the market price")
    proposal_expiry_days: int = Field(default=30, ge=1)
    fiscal_year_start_month: int = Field(default=1, ge=1, le=12,
                                         description="a series is aggregated over the fiscal year, from the 1st of "
                                                     "this month (1: the calendar year)")
    structuring_min_count: int = Field(default=3, ge=2, description="transactions in a series to report structuring")
    structuring_floor: float = Field(default=0.5, ge=0, le=1,
                                     description="the smallest fraction of the threshold that counts as just under it")
    require_signed_votes: bool = Field(default=False, description="refuse a vote that is not signed with the "
                                                                  "voter's registered key (docs/disclosure.md)")
    market: list[MarketPoint] = Field(default_factory=lambda: [
        MarketPoint(since=date(2023, 1, 1), usd_per_gpu_hour=4.92,
                    source="AWS capacity blocks, late 2024 (facts [19]); the earliest figure given"),
        MarketPoint(since=date(2025, 1, 1), usd_per_gpu_hour=2.35,
                    source="1-year contracts, upper end, 2025-2026 (facts [19])"),
    ])

    def market_price(self, on: date) -> MarketPoint:
        """The reference price of one H100-hour in force on ``on``."""
        points = sorted(self.market, key=lambda p: p.since)
        i = bisect_right([p.since for p in points], on) - 1
        return points[max(i, 0)]


@dataclass(frozen=True)
class Transaction:
    kind: str  # slot_swap | loan | loan_proposal
    id: str
    subject: str  # how approvals refer to it: "swap:ID", "loan:ID", "proposal:ID"
    giver: str
    receiver: str
    on: date
    value_usd: float
    related_basis: str | None  # why the parties are related, or None
    fee_usd_per_gpu_hour: float | None = None
    gpu_hours: float = 0.0
    series_usd: float = 0.0  # the value of its series up to and including it (see with_series)
    series: tuple[str, ...] = ()  # the subjects of the earlier transactions of that series


@dataclass
class ApprovalStatus:
    status: str  # not_required | proposed | approved | rejected | waived | executed_unapproved | expired
    approvals: list[str] = field(default_factory=list)  # persons who approved
    rejections: list[str] = field(default_factory=list)
    waivers: list[str] = field(default_factory=list)


def transactions(state: FleetState, policy: GovernancePolicy, on: date,
                 order: Mapping[str, int] | None = None) -> list[Transaction]:
    """Every transfer of value between two entities recorded in ``state``, valued on ``on``, each
    with its series; ``order`` (subject -> sequence number) orders those of the same date."""
    return with_series(_transactions(state, policy, on), policy, order)


def _transactions(state: FleetState, policy: GovernancePolicy, on: date) -> list[Transaction]:
    related = related_parties(state)
    out = []
    for swap_id, s in sorted(state.swaps.items()):
        out.append(Transaction("slot_swap", swap_id, f"swap:{swap_id}", s.party_a, s.party_b, s.on, s.value_a_usd,
                               related.get(frozenset((s.party_a, s.party_b)))))
    for loan_id, loan in sorted(state.loans.items()):
        until = loan.closed_on or max(on, loan.end_date)
        hours = loan.gpus_opened * 24.0 * (loan.end_date - loan.start).days if not loan.closed_on else \
            loan.gpu_hours_through(until)
        price = policy.market_price(loan.start).usd_per_gpu_hour
        out.append(Transaction("loan", loan_id, f"loan:{loan_id}", loan.lender, loan.borrower, loan.start,
                               hours * price, related.get(frozenset((loan.lender, loan.borrower))),
                               loan.fee_usd_per_gpu_hour, hours))
    for key, p in sorted(state.proposals.items()):
        if p.kind != "loan":
            continue
        hours = p.gpus * 24.0 * (p.end_date - p.start).days
        price = policy.market_price(p.start).usd_per_gpu_hour
        out.append(Transaction("loan_proposal", key.split(":", 1)[1], f"proposal:{key.split(':', 1)[1]}", p.owner,
                               p.user, p.proposed_on, hours * price, related.get(frozenset((p.owner, p.user))),
                               p.fee_usd_per_gpu_hour, hours))
    return out


def fiscal_year(on: date, policy: GovernancePolicy) -> tuple[date, date]:
    """The window a transaction dated ``on`` is aggregated in: [its fiscal year's first day, the next's)."""
    month = policy.fiscal_year_start_month
    year = on.year if on.month >= month else on.year - 1
    return date(year, month, 1), date(year + 1, month, 1)


def _series_key(t: Transaction, policy: GovernancePolicy) -> tuple[str, str, date]:
    return t.giver, t.receiver, fiscal_year(t.on, policy)[0]


def _executes(t: Transaction) -> bool:
    """A proposal moves nothing: it counts towards no series until its loan is opened."""
    return t.related_basis is not None and t.kind != "loan_proposal"


def with_series(txs: list[Transaction], policy: GovernancePolicy,
                order: Mapping[str, int] | None = None) -> list[Transaction]:
    """Each transaction with its series: the executed related-party transactions from the same giver
    to the same receiver in its fiscal year that come before it, by date, then ``order`` (sequence
    numbers; the subject where none is given). A proposal is preceded by every one dated on or
    before it but the loan it proposes."""
    rank = order or {}

    def key(t: Transaction) -> tuple:
        return t.on, rank.get(t.subject, math.inf) if t.kind != "loan_proposal" else math.inf, t.subject

    groups: dict[tuple[str, str, date], list[Transaction]] = {}
    for t in sorted(filter(_executes, txs), key=key):
        groups.setdefault(_series_key(t, policy), []).append(t)
    keys = {group: [key(u) for u in members] for group, members in groups.items()}  # ascending, as the members
    out = []
    for t in txs:
        if t.related_basis is None:
            out.append(replace(t, series_usd=t.value_usd))
            continue
        group = _series_key(t, policy)
        before = groups[group][:bisect_left(keys[group], key(t))] if group in groups else []  # key(u) < key(t)
        earlier = [u for u in before if u.subject != t.subject
                   and not (t.kind == "loan_proposal" and u.kind == "loan" and u.id == t.id)]
        out.append(replace(t, series_usd=t.value_usd + sum(u.value_usd for u in earlier),
                           series=tuple(u.subject for u in earlier)))
    return out


def needs_approval(t: Transaction, policy: GovernancePolicy) -> bool:
    """A lot redirect always (by default); a related-party transaction once its series, it included,
    exceeds the threshold."""
    if t.kind == "slot_swap" and policy.always_approve_lot_redirects:
        return True
    return t.related_basis is not None and max(t.value_usd, t.series_usd) > policy.threshold_usd


def status_of(state: FleetState, t: Transaction, policy: GovernancePolicy, on: date) -> ApprovalStatus:
    subjects = {t.subject, f"proposal:{t.id}"} if t.kind == "loan" else {t.subject}
    votes = [a for a in state.approvals.values() if a.subject in subjects]
    st = ApprovalStatus("not_required",
                        [a.person for a in votes if a.decision == "approved"],
                        [a.person for a in votes if a.decision == "rejected"],
                        [a.person for a in votes if a.decision == "waived"])
    if not needs_approval(t, policy):
        return st
    if st.rejections:
        st.status = "rejected"
    elif st.waivers:
        st.status = "waived"
    elif len(st.approvals) >= policy.quorum:
        st.status = "executed" if t.kind == "loan_proposal" and t.id in state.loans else "approved"
    elif t.kind != "loan_proposal":
        st.status = "executed_unapproved"  # it happened; the record shows no approval
    elif on > t.on + timedelta(days=policy.proposal_expiry_days):
        st.status = "expired"
    else:
        st.status = "proposed"
    return st


def approval_gate(state: FleetState, payload: ev.Payload, on: date, policy: GovernancePolicy,
                  after_the_fact: bool = False) -> None:
    """The one check every event passes before it is recorded, whatever the path: an event that
    executes a transaction needing approval (a loan, a delivery-slot swap) is refused unless a
    quorum approved it or it was waived, judged on ``state``, the ledger before the event. History
    recorded after the fact passes, as it happened: the audit reports it as ``executed_unapproved``.
    """
    t = None if after_the_fact else _executed_by(state, payload, on, policy)
    if t is None:
        return
    group = [u for u in _transactions(state, policy, on)
             if _executes(u) and _series_key(u, policy) == _series_key(t, policy) and u.on <= t.on]
    t = replace(t, series_usd=t.value_usd + sum(u.value_usd for u in group), series=tuple(u.subject for u in group))
    if not needs_approval(t, policy):
        return
    st = status_of(state, t, policy, on)
    if st.status not in ("approved", "waived"):
        raise InvariantViolation(_unapproved(t, st, policy), field=t.subject.split(":")[0])


def _executed_by(state: FleetState, payload: ev.Payload, on: date, policy: GovernancePolicy) -> Transaction | None:
    """The transaction ``payload`` executes on ``on``, valued as :func:`transactions` values it; None
    when it executes none, or names parties the ledger does not know (its own checks refuse it then)."""
    related = related_parties(state)
    if isinstance(payload, ev.LoanOpened):
        if not {payload.lender, payload.borrower} <= state.entities.keys():
            return None
        hours = payload.gpus * 24.0 * max(0, (payload.end_date - on).days)
        return Transaction("loan", payload.loan, f"loan:{payload.loan}", payload.lender, payload.borrower, on,
                           hours * policy.market_price(on).usd_per_gpu_hour,
                           related.get(frozenset((payload.lender, payload.borrower))),
                           payload.fee_usd_per_gpu_hour, hours)
    if isinstance(payload, ev.DeliverySlotSwap):
        if not set(payload.lots_a + payload.lots_b) <= state.lots.keys():
            return None
        givers = {state.lots[x].owner for x in payload.lots_a}
        receivers = {state.lots[x].owner for x in payload.lots_b}
        if len(givers) != 1 or len(receivers) != 1 or givers == receivers:
            return None
        giver, receiver = givers.pop(), receivers.pop()
        value = sum(state.lots[x].gpus * state.lots[x].unit_price_usd for x in payload.lots_a)
        return Transaction("slot_swap", payload.swap, f"swap:{payload.swap}", giver, receiver, on, value,
                           related.get(frozenset((giver, receiver))))
    return None


def _unapproved(t: Transaction, st: ApprovalStatus, policy: GovernancePolicy) -> str:
    what = "redirects delivery lots" if t.kind == "slot_swap" else "is a related-party transaction"
    why = f" ({t.related_basis})" if t.related_basis else ""
    text = f"{t.subject.replace(':', ' ')} {what} of USD {t.value_usd:,.0f}{why}"
    if t.series:
        first, after = fiscal_year(t.on, policy)
        text += (f", USD {t.series_usd:,.0f} together with {len(t.series)} earlier from {t.giver} to {t.receiver} "
                 f"in the fiscal year {first} to {after - timedelta(days=1)} (SEC S-K Item 404(a) counts a series "
                 "of similar transactions together)")
    text += f", without the approval of {policy.quorum} independent directors of {t.giver}"
    if st.rejections:
        text += f" (rejected by {', '.join(st.rejections)})"
    how = "propose it (plan apply) and get it approved, or record history with --after-the-fact" \
        if t.kind == "loan" else "it can be voted on only once recorded: record it with --after-the-fact " \
        "(reported as executed_unapproved until a quorum approves it)"
    return f"{text}; {how}"


@dataclass(frozen=True)
class Structuring:
    """A series split to stay under the threshold: see :func:`structuring`."""

    giver: str
    receiver: str
    fiscal_year: tuple[date, date]  # [first day, first day of the next)
    subjects: tuple[str, ...]
    total_usd: float
    smallest_usd: float
    largest_usd: float
    related_basis: str


def structuring(txs: list[Transaction], policy: GovernancePolicy,
                order: Mapping[str, int] | None = None) -> list[Structuring]:
    """Series that look split to stay under the threshold: at least ``structuring_min_count``
    executed related-party transactions from one giver to one receiver in a fiscal year, each
    between ``structuring_floor`` x the threshold and the threshold (none needs approval alone),
    together above it. Transactions above the threshold, or far below it, are not counted."""
    low, high = policy.structuring_floor * policy.threshold_usd, policy.threshold_usd
    rank = order or {}
    groups: dict[tuple[str, str, date], list[Transaction]] = {}
    for t in sorted(txs, key=lambda t: (t.on, rank.get(t.subject, math.inf), t.subject)):
        if _executes(t) and low <= t.value_usd <= high:
            groups.setdefault(_series_key(t, policy), []).append(t)
    found = []
    for (giver, receiver, first), group in groups.items():
        total = sum(t.value_usd for t in group)
        if len(group) >= policy.structuring_min_count and total > high:
            values = [t.value_usd for t in group]
            found.append(Structuring(giver, receiver, fiscal_year(first, policy), tuple(t.subject for t in group),
                                     total, min(values), max(values), group[0].related_basis or ""))
    return found


def off_market(t: Transaction, policy: GovernancePolicy) -> tuple[float, float] | None:
    """(market price, USD of value moved) when a loan fee is outside the band, else None."""
    if t.fee_usd_per_gpu_hour is None:
        return None
    market = policy.market_price(t.on).usd_per_gpu_hour
    if abs(t.fee_usd_per_gpu_hour - market) <= policy.price_band * market:
        return None
    return market, (market - t.fee_usd_per_gpu_hour) * t.gpu_hours


def swap_delay_cost(state: FleetState, swap_id: str, policy: GovernancePolicy) -> tuple[float, float]:
    """(GPU-weeks, USD) the party that receives later slots loses: each GPU it gave up arrives
    later by the gap between its delivery (or shipment) and the planned date of the lots it got."""
    s = state.swaps[swap_id]
    given = [state.lots[x] for x in s.lots_a]
    got = [state.lots[x] for x in s.lots_b]
    gave_on = min((lot.delivered_on or lot.shipped_on or lot.planned_date) for lot in given)
    gpu_weeks = sum(lot.gpus * max(0, ((lot.delivered_on or lot.planned_date) - gave_on).days) / 7 for lot in got)
    price = policy.market_price(s.on).usd_per_gpu_hour  # the delay is valued at the market rate
    return gpu_weeks, gpu_weeks * 168.0 * price
