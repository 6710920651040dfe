"""Governance rules: related-party transactions, who may approve them, arm's-length prices.

A *transaction* moves value from a giver to a receiver: a delivery-slot swap (the party whose
shipped GPUs go to the other), a loan (the lender), a loan a plan proposes. It needs approval
when the two are related parties and its value exceeds the threshold (SEC Regulation S-K Item
404(a): USD 120,000), and always when it redirects a delivery lot. Approvers are the giver's
independent directors or audit committee members (Nasdaq Rule 5630); a person with any role in
the receiver, or family of one, is interested and can never approve. A quorum of approving
votes approves; one rejection by an eligible person rejects.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import date, timedelta

from pydantic import BaseModel, ConfigDict, Field

from gpufleet.domain.parties import related_parties
from gpufleet.domain.state import FleetState



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


@dataclass
class ApprovalStatus:
    status: str  # not_required | proposed | approved | rejected | waived | executed_unapproved | expired
    approvals: list[str] = field(default_factory=list)  # persons who approved
    rejections: list[str] = field(default_factory=list)
    waivers: list[str] = field(default_factory=list)


def transactions(state: FleetState, policy: GovernancePolicy, on: date) -> list[Transaction]:
    """Every transfer of value between two entities recorded in ``state``, valued on ``on``."""
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


def needs_approval(t: Transaction, policy: GovernancePolicy) -> bool:
    if t.kind == "slot_swap" and policy.always_approve_lot_redirects:
        return True
    return t.related_basis is not None and t.value_usd > policy.threshold_usd


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
