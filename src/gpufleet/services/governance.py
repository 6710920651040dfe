"""Governance over the ledger: approvals, arm's-length checks, claims and audit findings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import yaml
from pydantic import ValidationError
from sqlalchemy import select

from gpufleet.domain import vote_signing
from gpufleet.domain.access import Principal
from gpufleet.domain.governance import (
    GovernancePolicy,
    needs_approval,
    off_market,
    status_of,
    structuring,
    swap_delay_cost,
    transactions,
)
from gpufleet.domain.parties import related_parties
from gpufleet.domain.state import FleetState
from gpufleet.errors import ConflictError, InputError, InvariantViolation
from gpufleet.ledger.schema import events
from gpufleet.ledger.store import VerifyReport
from gpufleet.services.claims import claim_forecasts
from gpufleet.services.fleet import FleetService, make_payload
from gpufleet.services.head_state import HeadFold

SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}
_CREATORS = {"delivery_slot_swap": ("swap", "swap"), "loan_opened": ("loan", "loan"),
             "loan_proposed": ("proposal", "loan"), "claim_recorded": ("claim", "claim")}


def load_policy(path: Path | None) -> GovernancePolicy:
    """The approval policy from a YAML file, or the sourced defaults."""
    if path is None:
        return GovernancePolicy()
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return GovernancePolicy.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read the policy: {exc}", field="policy") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(f"{path}: {err['msg']}", field=".".join(map(str, err["loc"]))) from None


def evidence(service: FleetService) -> dict[str, list[int]]:
    """Sequence numbers of the events behind each transaction, claim and vote (by subject). Only the
    sequence number, type and payload of each are read: tens of thousands of events at scale."""
    found: dict[str, list[int]] = {}
    kinds = [*_CREATORS, "approval_recorded", "loan_reclaimed", "loan_closed"]
    with service.reader.connect() as conn:
        rows = conn.execute(select(events.c.seq, events.c.type, events.c.payload).where(events.c.type.in_(kinds))
                            .order_by(events.c.seq)).all()
    for seq, event_type, text in rows:
        payload = json.loads(text)
        if event_type in _CREATORS:
            prefix, key = _CREATORS[event_type]
            found.setdefault(f"{prefix}:{payload[key]}", []).append(seq)
        elif event_type == "approval_recorded":
            found.setdefault(payload["subject"], []).append(seq)
        else:
            found.setdefault(f"loan:{payload['loan']}", []).append(seq)
    return found


def recording_order(seqs: dict[str, list[int]]) -> dict[str, int]:
    """Each transaction's first sequence number: it orders a series within one date."""
    return {subject: found[0] for subject, found in seqs.items() if found}


def approvals(service: FleetService, policy: GovernancePolicy, on: date | None = None, *,
              with_terms: bool = False, state: FleetState | None = None) -> list[dict]:
    """Every transaction that needs approval, with its status, its votes (each with its signature's
    status: :func:`gpufleet.domain.vote_signing.vote_signature_status`) and the hash of its terms that
    a signed vote signs; ``with_terms``: the terms themselves too (what a voter reads and signs).
    ``state``: the fold of every event at the head, when the caller holds it (else folded here)."""
    state = state if state is not None else service.state()
    on = on or datetime.now(UTC).date()
    rows = []
    for t in transactions(state, policy, on, recording_order(evidence(service))):
        if not needs_approval(t, policy):
            continue
        st = status_of(state, t, policy, on)
        terms = vote_signing.transaction_terms(state, t, policy)
        rows.append({"subject": t.subject, "kind": t.kind, "giver": t.giver, "receiver": t.receiver,
                     "on": t.on.isoformat(), "value_usd": round(t.value_usd, 2),
                     "series_usd": round(t.series_usd, 2), "status": st.status,
                     "approvals": st.approvals, "rejections": st.rejections, "waivers": st.waivers,
                     "related_basis": t.related_basis, "content_sha256": vote_signing.content_sha256(terms),
                     "votes": votes_of(state, t, terms, policy, on)}
                    | ({"terms": terms} if with_terms else {}))
    return rows


def votes_of(state: FleetState, t, terms: dict, policy: GovernancePolicy, on: date) -> list[dict]:
    """Each vote on ``t`` (a loan's also on its proposal) with its signature's status, recomputed from the
    ledger: the terms a vote on the proposal signed are the proposal's."""
    subjects = {t.subject, f"proposal:{t.id}"} if t.kind == "loan" else {t.subject}
    out = []
    for a in state.approvals.values():
        if a.subject not in subjects:
            continue
        signed_terms = terms if a.subject == t.subject else vote_signing.terms_of(state, policy, a.subject, on)
        sig = vote_signing.vote_signature_status(state, a, signed_terms)
        out.append({"subject": a.subject, "person": a.person, "decision": a.decision, "on": a.on.isoformat(),
                    "signature": sig.status, "key_id": sig.key_id, "detail": sig.detail})
    return out


@dataclass(frozen=True)
class SignedVote:
    """What a voter signed on their own machine: the content hash of the terms, the key, the signature
    (base64); ``terms``: the terms they read, if sent, so a refusal names the terms that changed."""

    content_sha256: str
    key_id: str
    signature: str
    terms: dict | None = None


def vote(service: FleetService, subject: str, person: str, decision: str, reason: str, policy: GovernancePolicy,
         on: date | None = None, actor: str | None = None, *, principal: Principal | None = None,
         idempotency_key: str | None = None, signed: SignedVote | None = None):
    """Record one person's vote. Approving re-checks the price and the fleet at that moment. Through
    the service, ``principal`` is the voter (its access is checked in the append's transaction). A
    ``signed`` vote must sign the terms the ledger has now (the append's gate checks it again)."""
    on = on or datetime.now(UTC).date()
    if decision == "waived" and not reason.strip():
        raise InputError("a waiver needs a written reason", field="reason")
    state = service.state()
    if decision == "approved":
        _recheck(state, subject, policy, on)
    if signed is not None:
        _check_signed_terms(service, state, subject, policy, on, signed)
    existing = sum(1 for a in state.approvals.values() if a.subject == subject)
    data = {"approval": f"{subject}.{existing + 1}", "subject": subject, "decision": decision, "person": person,
            "reason": reason}
    if signed is not None:
        data |= {"content_sha256": signed.content_sha256, "key_id": signed.key_id, "signature": signed.signature}
    payload = make_payload("approval_recorded", data)
    return service.record(payload, on, actor, idempotency_key, principal=principal, policy=policy)


def current_terms(service: FleetService, state: FleetState, subject: str, policy: GovernancePolicy,
                  on: date) -> dict | None:
    """The terms of ``subject`` as the ledger has them now (what a signed vote signs); None if none."""
    return vote_signing.terms_of(state, policy, subject, on, recording_order(evidence(service)))


def _check_signed_terms(service: FleetService, state: FleetState, subject: str, policy: GovernancePolicy,
                        on: date, signed: SignedVote) -> None:
    """Refuse, naming the fields, a signature over terms the ledger no longer has."""
    terms = current_terms(service, state, subject, policy, on)
    if terms is None or vote_signing.content_sha256(terms) == signed.content_sha256:
        return
    if signed.terms is not None and vote_signing.content_sha256(signed.terms) == signed.content_sha256:
        changed = ", ".join(f"{k} ({signed.terms.get(k)} -> {terms.get(k)})"
                            for k in vote_signing.changed_fields(signed.terms, terms))
        raise ConflictError(f"the terms changed since you signed: {changed}; read them again and sign what they "
                            "are now", field="content_sha256")
    raise ConflictError(f"the terms changed since you signed: {subject}'s terms now hash to "
                        f"{vote_signing.content_sha256(terms)}, not {signed.content_sha256}; read them again and "
                        "sign what they are now", field="content_sha256")


def open_loan(service: FleetService, payload, on: date, actor: str | None, key: str | None,
              policy: GovernancePolicy, after_the_fact: bool = False):
    """Open a loan: through the approval gate of every write (a related-party loan that needs
    approval must have it, from its proposal of the same id), unless it is history recorded after
    the fact, which the audit then flags."""
    return service.record(payload, on, actor, key, policy=policy, after_the_fact=after_the_fact)


def _recheck(state: FleetState, subject: str, policy: GovernancePolicy, on: date) -> None:
    """Refuse an approval whose price is off the market now, or that the fleet can no longer honour."""
    kind, _, ident = subject.partition(":")
    if kind != "proposal":
        return
    p = state.proposals.get(f"loan:{ident}")
    if p is None:
        return
    market = policy.market_price(on).usd_per_gpu_hour
    if abs(p.fee_usd_per_gpu_hour - market) > policy.price_band * market:
        raise InvariantViolation(
            f"the price of {subject} is stale: its fee is USD {p.fee_usd_per_gpu_hour:.2f}/GPU-hour but the market "
            f"reference on {on} is USD {market:.2f} (band ±{policy.price_band:.0%}); propose it again",
            field="fee_usd_per_gpu_hour")
    held = state.warehouse[(p.owner, p.model)] + state.installed_owned[(p.owner, p.model)] + sum(
        lot.gpus for lot in state.lots.values()
        if lot.owner == p.owner and lot.model == p.model and lot.delivered_on is None and lot.planned_date <= p.start)
    if held < p.gpus:
        raise InvariantViolation(f"{p.owner} holds {held} {p.model} now (with lots due by {p.start}); "
                                 f"it cannot lend the {p.gpus} of {subject}", field="gpus")


def audit(service: FleetService, policy: GovernancePolicy, on: date | None = None, *,
          head: HeadFold | None = None, verified: tuple[VerifyReport, str] | None = None) -> list[dict]:
    """Findings with severity and evidence (event sequence numbers), most severe first: the record's
    (:func:`record_findings`), then the hash chain's (:func:`verification_finding`). ``head``: the fold
    of every event at the head, when the caller holds it; ``verified``: the chain's verification and how
    it was checked, when the caller keeps one (else the whole chain is verified here)."""
    found = record_findings(service, policy, on, head=head)
    report, how = verified if verified is not None else (service.verify(), "")
    return sorted([*found, verification_finding(report, how)], key=lambda f: SEVERITY_ORDER[f["severity"]])


def verification_finding(report: VerifyReport, how: str = "") -> dict:
    """The audit's finding on the hash chain: it verifies (info), or where it does not (critical); ``how``:
    what was checked and when, if not the whole chain just now."""
    note = f"; {how}" if how else ""
    if report.ok:
        return {"severity": "info", "kind": "ledger_verified", "title": f"the ledger verifies: "
                f"{report.events_checked:,} events", "detail": f"head {report.head_hash}{note}", "value_usd": None,
                "evidence_seqs": []}
    return {"severity": "critical", "kind": "ledger_tampered", "title": f"the ledger does not verify at event "
            f"{report.first_bad_seq}", "detail": (report.reason or "") + note, "value_usd": None, "evidence_seqs": []}


def record_findings(service: FleetService, policy: GovernancePolicy, on: date | None = None, *,
                    head: HeadFold | None = None) -> list[dict]:
    """The audit's findings on the record (all but the hash chain's), most severe first; ``head``: the
    fold of every event at the head, when the caller holds it (else folded here)."""
    on = on or datetime.now(UTC).date()
    state = head.state if head is not None else service.state()
    seqs = evidence(service)
    findings: list[dict] = []

    def finding(severity: str, kind: str, title: str, detail: str, subject: str | None = None,
                value_usd: float | None = None, evidence_seqs: list[int] | None = None) -> None:
        findings.append({"severity": severity, "kind": kind, "title": title, "detail": detail,
                         "value_usd": None if value_usd is None else round(value_usd, 2),
                         "evidence_seqs": evidence_seqs or (seqs.get(subject, []) if subject else [])})

    order = recording_order(seqs)
    txs = transactions(state, policy, on, order)
    for t in txs:
        st = status_of(state, t, policy, on)
        basis = t.related_basis or "not related parties"
        if st.status == "executed_unapproved":
            series = f" It makes USD {t.series_usd:,.0f} with {len(t.series)} earlier from {t.giver} to " \
                f"{t.receiver} in its fiscal year ({', '.join(t.series)}), a series SEC S-K Item 404(a) " \
                "counts together." if t.series else ""
            finding("high", "unapproved_related_party_transaction",
                    f"{t.kind} {t.id}: {t.giver} -> {t.receiver}, USD {t.value_usd:,.0f}, no recorded approval",
                    f"{basis}. Needs approval by {t.giver}'s independent directors or audit committee "
                    f"(quorum {policy.quorum}); none is recorded.{series}", t.subject, t.value_usd)
        elif st.status == "waived":
            finding("low", "waiver", f"{t.kind} {t.id} was waived", f"waived by {', '.join(st.waivers)}",
                    t.subject, t.value_usd)
        if (moved := off_market(t, policy)) is not None:
            market, usd = moved
            finding("medium", "off_market_price",
                    f"{t.kind} {t.id}: fee USD {t.fee_usd_per_gpu_hour:.2f}/GPU-hour against a market of "
                    f"USD {market:.2f}", f"moves USD {usd:,.0f} from {t.giver} to {t.receiver} "
                    f"({policy.market_price(t.on).source}); {basis}", t.subject, usd)
        if t.kind == "slot_swap":
            weeks, usd = swap_delay_cost(state, t.id, policy)
            finding("high", "delay_imposed",
                    f"swap {t.id} delayed {t.giver} by {weeks:,.0f} GPU-weeks (USD {usd:,.0f} at market rates)",
                    f"{t.giver} gave up GPUs already shipped and received later delivery slots", t.subject, usd)
    _signature_findings(state, txs, policy, on, seqs, finding)
    _structuring_findings(txs, policy, order, seqs, finding)
    _claim_findings(service, state, on, seqs, finding, head)
    _idle_while_borrowing(state, seqs, finding)
    return sorted(findings, key=lambda f: SEVERITY_ORDER[f["severity"]])


def _claim_findings(service, state, on, seqs, finding, head: HeadFold | None) -> None:
    for row in claim_forecasts(service, state, on, head=head):
        subject = f"claim:{row['claim']}"
        if not row["achievable_when_stated"]:
            finding("high", "claim_unsupported_when_made",
                    f"claim {row['claim']}: {row['target']:,.0f} {row['metric']} by {row['deadline']}, stated "
                    f"{row['stated_on']}", f"the ledger as known on {row['stated_on']} supported at most "
                    f"{row['supported_when_stated']:,.0f}", subject)
        if row["status"] == "missed":
            finding("high", "claim_missed", f"claim {row['claim']} missed: {row['actual']:,.0f} against "
                    f"{row['target']:,.0f}", f"recorded on {row['deadline']}", subject)


def _signature_findings(state: FleetState, txs, policy: GovernancePolicy, on: date, seqs, finding) -> None:
    """For each transaction voted on, each vote's signature status (info), and a finding for each signed
    vote that does not verify against the ledger: a bad signature, a key not the person's then, or
    terms that changed since they were signed."""
    for t in txs:
        votes = votes_of(state, t, vote_signing.transaction_terms(state, t, policy), policy, on)
        if not votes:
            continue
        evidence_of = {subject: seqs.get(subject, []) for subject in {v["subject"] for v in votes}}
        finding("info", "vote_signatures", f"{t.kind} {t.id}: " + "; ".join(
            f"{v['person']} {v['decision']}: {v['signature']}" for v in votes),
            "whether each vote is signed with the voter's registered key over the transaction's terms",
            evidence_seqs=sorted({s for found in evidence_of.values() for s in found}))
        for v in votes:
            if v["signature"] == vote_signing.SIGNED_INVALID:
                finding("high", "vote_signature_invalid",
                        f"{v['person']}'s signed vote on {v['subject']} ({v['decision']}) does not verify",
                        v["detail"], v["subject"])


def _structuring_findings(txs, policy: GovernancePolicy, order, seqs, finding) -> None:
    """A series split into transactions each just under the threshold (see ``structuring``)."""
    for s in structuring(txs, policy, order):
        last = s.fiscal_year[1] - timedelta(days=1)
        finding("high", "structuring",
                f"{len(s.subjects)} transactions {s.giver} -> {s.receiver} from {s.fiscal_year[0]} to {last}, each "
                f"under USD {policy.threshold_usd:,.0f}, USD {s.total_usd:,.0f} together",
                f"{s.related_basis}. Each is USD {s.smallest_usd:,.0f} to {s.largest_usd:,.0f}, at least "
                f"{policy.structuring_floor:.0%} of the threshold: a series split so that no part needs approval "
                f"alone. SEC S-K Item 404(a) counts a series of similar transactions together.", value_usd=s.total_usd,
                evidence_seqs=[seqs[x][0] for x in s.subjects if seqs.get(x)])


def _idle_while_borrowing(state: FleetState, seqs, finding) -> None:
    """A loan taken while a related party of the borrower had GPUs of that model idle in a warehouse."""
    related = related_parties(state)
    for loan_id, loan in sorted(state.loans.items()):
        for pair, basis in related.items():
            if loan.borrower not in pair:
                continue
            (other,) = pair - {loan.borrower}
            idle = state.warehouse[(other, loan.model)]
            if other != loan.lender and idle:
                finding("medium", "idle_while_related_party_borrowed",
                        f"{loan.borrower} borrowed {loan.gpus_opened} {loan.model} ({loan_id}) while {other} "
                        f"holds {idle} idle", basis, f"loan:{loan_id}")


def swap_summary(service: FleetService, policy: GovernancePolicy, on: date) -> list[dict]:
    """For the demo: each swap as a related-party transaction, with its approval and its delay cost."""
    state = service.state()
    rows = []
    for t in transactions(state, policy, on):
        if t.kind != "slot_swap":
            continue
        weeks, usd = swap_delay_cost(state, t.id, policy)
        rows.append({"swap": t.id, "giver": t.giver, "receiver": t.receiver, "value_usd": t.value_usd,
                     "related_basis": t.related_basis, "approval": status_of(state, t, policy, on).status,
                     "delay_gpu_weeks": round(weeks), "delay_usd": round(usd, 2)})
    return rows
