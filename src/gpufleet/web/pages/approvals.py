"""The approvals inbox: what awaits the signed-in person's vote, and why they may not cast one.

Each row is a related-party transaction that needs approval (``governance.approvals``), with its
related-party basis, its fee against the market band, the value it moves and what it costs the giver.
A vote goes through the same path as ``POST /v1/approvals/{subject}/votes``: the voter is the signed-in
person, and the version read with the page (the API's ETag) is sent back, so a vote on a transaction
that changed since is refused with the reason.
"""

from __future__ import annotations

import re
import urllib.parse
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from gpufleet.api.problems import PreconditionFailed
from gpufleet.api.routes.governance import version
from gpufleet.domain import access
from gpufleet.domain.access import Capability, Forbidden, Principal
from gpufleet.domain.approvals import check_voter
from gpufleet.domain.governance import GovernancePolicy, Transaction, swap_delay_cost, transactions
from gpufleet.domain.state import FleetState
from gpufleet.errors import GpufleetError, InputError
from gpufleet.services import governance, governance_kept
from gpufleet.services.fleet import make_payload
from gpufleet.services.head_state import HeadFold
from gpufleet.web import common

OPEN = ("proposed", "executed_unapproved")  # states in which a vote still counts
PAGE_ROWS = 50  # transactions per page of the inbox
DECISIONS = ("approved", "rejected", "waived")


@dataclass(frozen=True)
class Price:
    """A loan's fee against the market band on the day it is judged (None fee: a swap, no fee)."""

    fee: float | None
    market: float
    low: float
    high: float
    verdict: str  # "within the band" | "below the band" | "above the band" | "no fee (a slot swap)"


@dataclass(frozen=True)
class InboxRow:
    subject: str
    kind: str
    giver: str
    receiver: str
    on: str
    status: str
    related_basis: str
    terms: str  # the terms in one line
    value_usd: float
    series_usd: float
    price: Price
    cost_usd: float  # what the transaction costs the giver (see :func:`cost_to_giver`)
    cost_note: str
    votes: tuple[str, ...]  # "person decision on date"
    standing: str  # vote | voted | interested | not_approver | closed | cannot_vote
    reason: str  # why the person cannot vote (or how they voted); empty when they may vote
    version: str  # the API's ETag of the transaction: a vote names it
    can_open: bool  # an approved proposal that the person, an operator of the lender, may open as a loan


def price_against_band(fee: float | None, policy: GovernancePolicy, on: date) -> Price:
    """The fee against the market reference on ``on`` and the policy's band around it."""
    market = policy.market_price(on).usd_per_gpu_hour
    low, high = market * (1 - policy.price_band), market * (1 + policy.price_band)
    if fee is None:
        verdict = "no fee (a slot swap)"
    elif fee < low:
        verdict = "below the band"
    elif fee > high:
        verdict = "above the band"
    else:
        verdict = "within the band"
    return Price(fee, market, low, high, verdict)


def cost_to_giver(state: FleetState, t: Transaction | None, row: dict, policy: GovernancePolicy) -> tuple[float, str]:
    """What the giver gives up, in USD, with how it is counted: a loan's GPU-hours at the market price
    less the fees it is paid; a swap's delay to the giver (GPU-weeks at the market rate)."""
    if row["kind"] == "slot_swap":
        swap_id = row["subject"].partition(":")[2]
        if swap_id not in state.swaps:
            return 0.0, "the swap is not in the record as of this date"
        weeks, usd = swap_delay_cost(state, swap_id, policy)
        return usd, f"{row['giver']} waits {weeks:,.0f} GPU-weeks for the lots it got back, at the market rate"
    if t is None or t.fee_usd_per_gpu_hour is None:
        return 0.0, "not valued"
    fees = t.gpu_hours * t.fee_usd_per_gpu_hour
    return t.value_usd - fees, (f"{t.gpu_hours:,.0f} GPU-hours lent, worth USD {t.value_usd:,.0f} at the market, "
                                f"for USD {fees:,.0f} in fees")


def standing(state: FleetState, row: dict, who: Principal) -> tuple[str, str]:
    """Whether ``who`` may vote on ``row`` now, and if not, why (the ledger's own words)."""
    mine = [v for v in row["votes"] if v["person"] == who.id]
    if mine:
        return "voted", f"you voted {mine[-1]['decision']} on {mine[-1]['on']}"
    if row["status"] not in OPEN:
        return "closed", f"it is {row['status'].replace('_', ' ')}: no vote is open"
    try:
        access.require_vote(state, who, who.id)
        check_voter(state, row["subject"], who.id)
    except Forbidden as exc:
        return "cannot_vote", exc.message
    except GpufleetError as exc:
        kind = "interested" if " is interested in " in exc.message else "not_approver"
        return kind, exc.message
    return "vote", ""


def may_open(state: FleetState, row: dict, who: Principal) -> bool:
    """An approved proposal not yet opened, that ``who`` (an operator of the lender) may open."""
    if row["kind"] != "loan_proposal" or row["status"] != "approved" or access.is_admin(state, who.id):
        return False
    try:
        access.require(state, who, Capability.RECORD, [row["giver"]], writes=True)
    except Forbidden:
        return False
    return True


def terms_line(row: dict) -> str:
    """The terms a voter reads, in one line."""
    terms = row.get("terms") or {}
    if row["kind"] == "slot_swap":
        return (f"{terms.get('gpus', 0):,} {terms.get('model', '')} of lots {', '.join(terms.get('lots_given') or [])} "
                f"for lots {', '.join(terms.get('lots_received') or [])}")
    fee = terms.get("fee_usd_per_gpu_hour")
    fee_text = f", USD {float(fee):,.2f}/GPU-hour" if fee is not None else ""
    return (f"{terms.get('gpus', 0):,} {terms.get('model', '')} at {terms.get('site', '')}, "
            f"{terms.get('start', '')} to {terms.get('end', '')}{fee_text}")


def inbox_rows(rows: list[dict], state: FleetState, policy: GovernancePolicy, who: Principal,
               on: date, txs: Mapping[str, Transaction] | None = None) -> list[InboxRow]:
    """The rows ``who`` may see: those awaiting their vote first (proposals, newest first), then those they
    cannot vote on, then the rest; ``txs``: the transactions of ``state`` on ``on`` by subject, when the
    caller has them."""
    txs = txs if txs is not None else {t.subject: t for t in transactions(state, policy, on)}
    out = []
    for row in rows:
        if not access.may_read(state, who.id, {row["giver"], row["receiver"]}, row["giver"]):
            continue
        t = txs.get(row["subject"])
        fee = None if t is None else t.fee_usd_per_gpu_hour
        cost, note = cost_to_giver(state, t, row, policy)
        kind, reason = standing(state, row, who)
        out.append(InboxRow(
            row["subject"], row["kind"], row["giver"], row["receiver"], row["on"], row["status"],
            row["related_basis"] or "not related parties", terms_line(row), row["value_usd"], row["series_usd"],
            price_against_band(fee, policy, on), cost, note,
            tuple(f"{v['person']} {v['decision']} on {v['on']}" for v in row["votes"]), kind, reason,
            version(row), may_open(state, row, who)))
    order = {"vote": 0, "interested": 1, "voted": 2, "not_approver": 3, "cannot_vote": 3, "closed": 4}
    return sorted(out, key=lambda r: (order[r.standing], r.status != "proposed",
                                      -date.fromisoformat(r.on).toordinal(), r.subject))


# -- the page -------------------------------------------------------------------------------------

router = APIRouter(prefix="/ui", include_in_schema=False)
SUBJECT = re.compile(r"^(swap|loan|proposal):[A-Za-z0-9][A-Za-z0-9._:-]{0,79}$")


@router.get("/approvals")
def page(request: Request, who: common.Viewer, time: common.Time) -> Response:
    """The inbox of the signed-in person, judged on the as-of date (votes are cast on today's record), a page
    of ``PAGE_ROWS`` transactions at a time (``page``); the approvals and transactions are kept per head, the
    inbox per head, person (and credential scope) and date (an auditor's holds every transaction)."""
    fleet, policy, on = request.app.state.fleet, request.app.state.policy, time.on()
    with fleet.reading_head() as head:
        def build() -> list[InboxRow]:
            rows = governance_kept.approval_rows(fleet, policy, on, head, with_terms=True)
            txs = governance_kept.transactions_by_subject(fleet, policy, on, head)
            return inbox_rows(rows, head.state, policy, who.principal, on, txs)

        key = ("ui-inbox", head.seq, head.hash, who.principal.id, who.principal.scope, on, policy.model_dump_json())
        found = fleet.kept(key, build).data
    today = datetime.now(UTC).date()
    standings = Counter(r.standing for r in found)
    return common.render(request, "approvals.html", who, time, page_title="Approvals",
                         rows=common.paged(request, found, size=PAGE_ROWS), standings=standings,
                         voting=time.as_of in (None, today) and time.known_at is None,
                         done=request.query_params.get("done", "")[:200], policy=policy)


def _row(request: Request, head: HeadFold, who: Principal, subject: str) -> dict:
    """The transaction ``subject`` as the API reads it today (visible to ``who``), or a not-found page."""
    if not SUBJECT.match(subject):
        raise InputError(f"'{subject[:100]}' is not a transaction (swap:ID, loan:ID or proposal:ID)", field="subject")
    rows = governance_kept.approval_rows(request.app.state.fleet, request.app.state.policy, None, head)
    for row in rows:
        if row["subject"] == subject and access.may_read(head.state, who.id, {row["giver"], row["receiver"]},
                                                         row["giver"]):
            return row
    raise common.NotFoundPage(f"no transaction '{subject}' that needs approval is visible to '{who.id}'")


def cast_vote(request: Request, who: Principal, fields: dict[str, str]) -> str:
    """The vote of the form, as ``POST /v1/approvals/{subject}/votes`` records it: the voter is ``who``,
    and the version the page was read at must still be the transaction's."""
    subject, decision = fields.get("subject", ""), fields.get("decision", "")
    if decision not in DECISIONS:
        raise InputError(f"decision must be one of {', '.join(DECISIONS)}", field="decision")
    fleet = request.app.state.fleet
    with fleet.reading_head() as head:
        access.require_vote(head.state, who, who.id)
        row = _row(request, head, who, subject)
    if fields.get("version") != version(row):
        raise PreconditionFailed(f"{subject} changed since you read it: it is now at version {version(row)} "
                                 f"({row['status']}); read it again before voting")
    governance.vote(fleet, subject, who.id, decision, fields.get("reason", "")[:2000], request.app.state.policy,
                    principal=who)
    return f"your vote ({decision}) on {subject} is recorded"


def open_loan(request: Request, who: Principal, fields: dict[str, str]) -> str:
    """Open the loan of an approved proposal, as ``POST /v1/events/loan_opened`` would (an operator of the
    lender): its terms are the proposal's, from its start (or today, if that has passed)."""
    subject = fields.get("subject", "")
    fleet = request.app.state.fleet
    with fleet.reading_head() as head:
        row = _row(request, head, who, subject)
        if not may_open(head.state, row, who):
            access.require(head.state, who, Capability.RECORD, [row["giver"]], writes=True)
            raise InputError(f"{subject} is {row['status']}: only an approved proposal opens as a loan",
                             field="subject")
        if fields.get("version") != version(row):
            raise PreconditionFailed(f"{subject} changed since you read it; read it again")
        ident = subject.partition(":")[2]
        p = head.state.proposals[f"loan:{ident}"]
    payload = make_payload("loan_opened", {
        "loan": ident, "lender": p.owner, "borrower": p.user, "model": p.model, "site": p.site, "gpus": p.gpus,
        "end_date": p.end_date.isoformat(), "fee_usd_per_gpu_hour": p.fee_usd_per_gpu_hour})
    on = max(p.start, datetime.now(UTC).date())
    fleet.record(payload, on, idempotency_key=f"ui:{who.id}:open:{subject}", policy=request.app.state.policy,
                 principal=who)
    return f"loan {ident} is open from {on}: {p.gpus:,} {p.model} from {p.owner} to {p.user}"


@router.post("/approvals/vote")
async def vote(request: Request, who: common.Viewer) -> Response:
    """Approve, reject or waive (with a reason) from the inbox; back to the inbox saying what was done."""
    fields = await common.form_of(request)
    common.check_csrf(request, who, fields)
    done = await run_in_threadpool(cast_vote, request, who.principal, fields)
    return RedirectResponse("/ui/approvals?" + urllib.parse.urlencode({"done": done}), 303)


@router.post("/approvals/open")
async def open_(request: Request, who: common.Viewer) -> Response:
    """Open an approved proposal's loan (operators of the lender)."""
    fields = await common.form_of(request)
    common.check_csrf(request, who, fields)
    done = await run_in_threadpool(open_loan, request, who.principal, fields)
    return RedirectResponse("/ui/approvals?" + urllib.parse.urlencode({"done": done}), 303)
