"""Governance: approvals and votes, audit findings, costs, claims."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request
from pydantic import BaseModel, Field, model_validator
from starlette.responses import JSONResponse, Response

from gpufleet.api.deps import Caller, Fleet, HeadState, IdempotencyKey, body_digest, idempotent, ledger_key
from gpufleet.api.problems import NotFound, PreconditionFailed, PreconditionRequired
from gpufleet.api.routes.fleet import ERRORS, EventOut, event_out, visible_entity
from gpufleet.domain import access
from gpufleet.domain.access import Capability
from gpufleet.domain.events import KeyId, Sha256, Signature
from gpufleet.domain.types import FIRST_DAY, LAST_DAY
from gpufleet.services import governance, governance_kept
from gpufleet.services.claims import claim_forecasts
from gpufleet.services.head_state import HeadFold

router = APIRouter(prefix="/v1", tags=["governance"])
Subject = Annotated[str, Path(pattern=r"^(swap|loan|proposal):[A-Za-z0-9][A-Za-z0-9._:-]{0,79}$",
                              description="swap:ID, loan:ID or proposal:ID")]


class VoteIn(BaseModel):
    """A vote; signed (docs/disclosure.md), it also carries the content hash of the terms the voter read,
    the voter's key ID and their Ed25519 signature of the vote message, made on their own machine."""

    decision: Literal["approved", "rejected", "waived"]
    reason: Annotated[str, Field(max_length=2000)] = ""
    content_sha256: Sha256 | None = None
    key_id: KeyId | None = None
    signature: Signature | None = None
    terms: Annotated[dict[str, Any] | None, Field(description="the terms signed, as read (optional): a refusal "
                                                              "then names the terms that changed")] = None

    @model_validator(mode="after")
    def _all_or_none(self) -> VoteIn:
        given = [self.content_sha256, self.key_id, self.signature]
        if any(v is not None for v in given) and any(v is None for v in given):
            raise ValueError("a signed vote needs content_sha256, key_id and signature")
        return self

    def signed(self) -> governance.SignedVote | None:
        if self.signature is None:
            return None
        return governance.SignedVote(self.content_sha256 or "", self.key_id or "", self.signature, self.terms)


def may_see_transaction(state, who, row: dict) -> bool:
    return access.may_read(state, who.id, {row["giver"], row["receiver"]}, row["giver"])


def version(row: dict) -> str:
    """The version of a transaction awaiting votes: its terms and status, not the other votes."""
    terms = {k: row[k] for k in ("subject", "kind", "giver", "receiver", "on", "value_usd", "series_usd", "status",
                                 "related_basis")} | {"proposal": row.get("proposal")}
    return '"' + hashlib.sha256(json.dumps(terms, sort_keys=True, default=str).encode()).hexdigest()[:32] + '"'


def _rows(request: Request, fleet, head: HeadFold, on: date | None = None, *,
          with_terms: bool = False) -> list[dict]:
    """The approvals rows (kept per head: shared, so each is copied), each with its proposal's terms from
    the head's state (a proposal's record does not change once recorded); ``with_terms``: also the terms
    a signed vote signs."""
    rows = governance_kept.approval_rows(fleet, request.app.state.policy, on, head, with_terms=with_terms)
    out = []
    for row in rows:
        kind, _, ident = row["subject"].partition(":")
        prop = head.state.proposals.get(f"loan:{ident}") if kind == "proposal" else None
        out.append(row | {"proposal": None if prop is None else {
            "gpus": prop.gpus, "model": prop.model, "site": prop.site, "start": prop.start.isoformat(),
            "end_date": prop.end_date.isoformat() if prop.end_date else None,
            "fee_usd_per_gpu_hour": prop.fee_usd_per_gpu_hour}})
    return out


@router.get("/approvals", responses=ERRORS, summary="Transactions that need approval, with status and votes")
def approvals(request: Request, fleet: Fleet, who: Caller, head: HeadState,
              on: Annotated[date | None, Query(ge=FIRST_DAY, le=LAST_DAY)] = None) -> list[dict]:
    """Those the caller may see: its entities' (either side), those it may approve, or all (auditors)."""
    return [r | {"version": version(r)} for r in _rows(request, fleet, head, on)
            if may_see_transaction(head.state, who, r)]


@router.get("/approvals/{subject}", responses=ERRORS | {404: {"description": "no such transaction"}},
            summary="One transaction awaiting votes; its ETag is the version a vote names in If-Match")
def approval(request: Request, subject: Subject, fleet: Fleet, who: Caller, head: HeadState) -> JSONResponse:
    """With its ``terms`` and their ``content_sha256``, what a signed vote signs (docs/disclosure.md)."""
    row = _find(request, fleet, who, head, subject, with_terms=True)
    return JSONResponse(row | {"version": version(row)}, headers={"ETag": version(row)})


def _find(request: Request, fleet, who, head, subject: str, *, with_terms: bool = False) -> dict:
    for row in _rows(request, fleet, head, with_terms=with_terms):
        if row["subject"] == subject and may_see_transaction(head.state, who, row):
            return row
    raise NotFound(f"no transaction '{subject}' that needs approval is visible to '{who.id}'")


@router.post("/approvals/{subject}/votes", status_code=201, response_model=EventOut,
             responses=ERRORS | {404: {"description": "no such transaction"},
                                 412: {"description": "the transaction changed since it was read"},
                                 428: {"description": "If-Match is required"}},
             summary="Vote as the authenticated person on a transaction, at the version read")
async def vote(request: Request, subject: Subject, body: VoteIn, fleet: Fleet, who: Caller, head: HeadState,
               if_match: Annotated[str | None, Header(alias="If-Match", max_length=100)] = None,
               key: IdempotencyKey = None) -> Any:
    """The voter is the caller: there is no way to vote as someone else. Whether the vote counts (an
    independent director or audit committee member of the giver, never an interested person) is the
    ledger's rule, and a refused vote says why. ``If-Match`` must carry the version (ETag) read."""
    digest = await body_digest(request)
    access.require_vote(head.state, who, who.id)

    def run() -> tuple[int, dict]:
        row = _find(request, fleet, who, head, subject)
        if if_match is None:
            raise PreconditionRequired(f"send If-Match with the version of {subject} you read ({version(row)})")
        if if_match.strip() not in (version(row), "*"):
            raise PreconditionFailed(f"{subject} changed since it was read: it is now at version {version(row)} "
                                     f"({row['status']}); read it again before voting")
        event = governance.vote(fleet, subject, who.id, body.decision, body.reason, request.app.state.policy,
                                principal=who, idempotency_key=ledger_key(who, key), signed=body.signed())
        return 201, event_out(event)

    return await idempotent(fleet, who, key, digest, run)


CHAIN_CHECKED = "Gpufleet-Chain-Checked"  # what was checked of the hash chain for an audit's answer, and when


@router.get("/audit", responses=ERRORS | {200: {"description": "the findings, most severe first", "headers": {
    CHAIN_CHECKED: {"description": "what was checked of the hash chain, and when: the events verified in full "
                                   "(by which verify job), those checked as appended since", "schema": {
                                       "type": "string"}}}}}, summary="Findings for the audit committee (auditors)")
def audit(request: Request, response: Response, fleet: Fleet, who: Caller, head: HeadState,
          on: Annotated[date | None, Query(ge=FIRST_DAY, le=LAST_DAY)] = None) -> list[dict]:
    """Every finding, as ``gpufleet audit`` gives them (the same JSON): those on the record kept per head;
    the hash chain's from the last full verification on record and the events checked as appended since
    (a full verification now only when some events are not checked), the header saying which."""
    access.require(head.state, who, Capability.AUDIT, None)
    found, how = governance_kept.audit(fleet, request.app.state.policy, on, head, request.app.state.checks)
    response.headers[CHAIN_CHECKED] = how
    return found


@router.get("/costs", responses=ERRORS, summary="Chargeback per entity per month (finance, auditors)")
def costs(fleet: Fleet, who: Caller, head: HeadState,
          month: Annotated[str | None, Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")] = None,
          entity: Annotated[str | None, Query(max_length=80)] = None,
          life_years: Annotated[float, Query(gt=0, le=100)] = 6.0,
          usd_per_kwh: Annotated[float, Query(ge=0, le=100)] = 0.08) -> list[dict]:
    from gpufleet.domain.costs import CostPolicy
    from gpufleet.services.costs import chargeback

    if not access.is_auditor(head.state, who.id):
        entity = visible_entity(head.state, who, entity)
        access.require(head.state, who, Capability.FINANCE, [entity])
    return chargeback(fleet, month, entity, CostPolicy(life_years=life_years, usd_per_kwh=usd_per_kwh))


@router.get("/claims", responses=ERRORS, summary="Public claims against the record")
def claims(fleet: Fleet, who: Caller, head: HeadState,
           on: Annotated[date | None, Query(ge=FIRST_DAY, le=LAST_DAY)] = None) -> list[dict]:
    on = on or datetime.now(UTC).date()
    # a fold per claim and date, seconds on a large ledger: kept per head (the answer is the head's)
    key = ("api-claims", head.seq, head.hash, on)
    rows = fleet.kept(key, lambda: claim_forecasts(fleet, head.state, on, head=head)).data
    return [r for r in rows if access.may_read(head.state, who.id, {r["claimant"]})]
