"""The fleet: record events, load a scenario, status as-of / known-at, events, the ledger's head."""


import json
import tempfile
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse, Response

from gpufleet.api.deps import (
    Caller, Fleet, HeadState, IdempotencyKey, Remember, body_digest, idempotent, ledger_key,
)
from gpufleet.api.problems import PROBLEM
from gpufleet.domain import access
from gpufleet.domain.access import Capability, Forbidden, Principal
from gpufleet.domain.chain import Event
from gpufleet.domain.events import EVENT_TYPES, Payload, payload_class
from gpufleet.domain.state import FleetState
from gpufleet.domain.types import FIRST_DAY, LAST_DAY, MAX_SEQ
from gpufleet.errors import GpufleetError
from gpufleet.services.fleet import FleetService, KeptAnswer, parse_date

router = APIRouter(prefix="/v1", tags=["fleet"])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {PROBLEM: {}}}
    for code, text in [(401, "no valid credential"), (403, "the caller's roles do not allow it"),
                       (409, "refused by the ledger's invariants or an idempotency conflict"),
                       (413, "request body too large"), (422, "invalid input, field by field")]}
# Votes have their own route (with If-Match); voids are the custodian's (local CLI) only.
RECORDABLE = {name: cls for name, cls in EVENT_TYPES.items() if name not in ("approval_recorded", "event_voided")}
MAX_SCAN = 20_000  # events one page of GET /v1/events reads, at most
OnQuery = Annotated[date | None, Query(description="effective date (default: today)", ge=FIRST_DAY, le=LAST_DAY)]


class EventOut(BaseModel):
    seq: int
    recorded_at: str
    effective_date: date
    actor: str
    event_type: str
    idempotency_key: str | None
    prev_hash: str
    hash: str
    payload: dict[str, Any]


class EventsPage(BaseModel):
    events: list[EventOut]
    next_since_seq: int | None = Field(description="pass as since_seq for the next page; null at the end")


class LoadOut(BaseModel):
    events: int
    first_seq: int | None
    last_seq: int | None
    head_hash: str


class HeadOut(BaseModel):
    seq: int
    hash: str
    recorded_at: str


def event_out(e: Event) -> dict:
    return asdict(e) | {"effective_date": e.effective_date.isoformat(), "payload": json.loads(e.payload)}


def _record_route(event_type: str, cls: type[Payload]):
    async def record(request: Request, fleet: Fleet, who: Caller, payload: Annotated[cls, Body()],  # type: ignore
                     on: OnQuery = None, key: IdempotencyKey = None) -> Any:
        digest = await body_digest(request)

        def run(remember: Remember) -> tuple[int, dict]:
            event = fleet.record(payload, on or datetime.now(UTC).date(), idempotency_key=ledger_key(who, key),
                                 policy=request.app.state.policy, principal=who,
                                 then=lambda conn, written: remember(conn, 201, event_out(written[0])))
            return 201, event_out(event)

        return await idempotent(fleet, who, key, digest, run, with_answer=True)

    record.__name__ = f"record_{event_type}"
    return record


for _name, _cls in RECORDABLE.items():
    router.add_api_route(
        f"/events/{_name}", _record_route(_name, _cls), methods=["POST"], status_code=201, response_model=EventOut,
        responses=ERRORS, summary=f"Record {_name.replace('_', ' ')}",
        description=(_cls.__doc__ or "").strip() + "\n\nThe actor is the authenticated principal; its access roles "
        "at the ledger's head must allow the event (docs/service.md, the role table).")


@router.post("/scenario", status_code=201, response_model=LoadOut, responses=ERRORS,
             summary="Load a scenario (YAML) in one transaction",
             openapi_extra={"requestBody": {"required": True, "content": {"application/yaml": {
                 "schema": {"type": "string"}}}}})
async def load_scenario(request: Request, fleet: Fleet, who: Caller, key: IdempotencyKey = None) -> Any:
    """Every event of the file passes the caller's access roles and the approval rules, in order; all of
    it is written, or nothing."""
    body = await request.body()
    digest = await body_digest(request)

    def run() -> tuple[int, dict]:
        from gpufleet.services.scenario_io import read_scenario

        with tempfile.TemporaryDirectory(prefix="gpufleet-load-") as tmp:
            path = Path(tmp) / "scenario.yaml"
            path.write_bytes(body)
            try:
                result = fleet.load(path, parsed=read_scenario(path), principal=who)
            except GpufleetError as exc:  # "body:LINE: ...", not the server's temporary file
                exc.message = exc.message.replace(str(path), "body")
                exc.location = exc.location and exc.location.replace(str(path), "body")
                exc.args = (str(exc),)
                raise
        return 201, {"events": result.events, "first_seq": result.first_seq, "last_seq": result.last_seq,
                     "head_hash": result.head_hash}

    return await idempotent(fleet, who, key, digest, run)


@router.get("/status", responses=ERRORS | {304: {"description": "not modified: the answer the client holds (ETag)"}},
            summary="Holdings, sites, loans, transfers and claims, as of a date")
def status(request: Request, fleet: Fleet, who: Caller, head: HeadState,
           as_of: Annotated[date | None, Query(ge=FIRST_DAY, le=LAST_DAY)] = None,
           known_at: Annotated[str | None, Query(max_length=40, description="as recorded by then (ISO)")] = None,
           entity: Annotated[str | None, Query(max_length=80)] = None) -> dict:
    """The same JSON as ``gpufleet status --format json``. A principal who is not an auditor sees one
    of its entities (its only one by default). Each answer carries an ETag; it is encoded once per ledger
    prefix, and sent gzip-compressed when the client accepts it."""
    entity = visible_entity(head.state, who, entity)
    if as_of is None and known_at is None:
        return kept_answer(request, fleet.head_status(entity, head))
    return kept_answer(request, fleet.status_answer(as_of, known_at, entity))


def kept_answer(request: Request, answer: KeptAnswer) -> Response:
    """A kept answer as encoded once: 304 when the client holds it (If-None-Match), gzip when accepted."""
    headers = {"ETag": answer.etag, "Vary": "Accept-Encoding", "Cache-Control": "private, no-cache"}
    if answer.etag in {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", "").lower():
        return Response(answer.gzip, media_type="application/json", headers=headers | {"Content-Encoding": "gzip"})
    return Response(answer.json, media_type="application/json", headers=headers)


def visible_entity(state: FleetState, who: Principal, entity: str | None) -> str | None:
    readable = access.readable_entities(state, who.id)
    if readable is None:
        return entity
    if entity is None:
        if len(readable) == 1:
            return next(iter(readable))
        names = ", ".join(sorted(readable)) or "none"
        raise Forbidden(f"'{who.id}' reads one entity at a time: pass entity= (yours: {names})")
    access.require(state, who, Capability.READ, [entity])
    return entity


@router.get("/events", response_model=EventsPage, responses=ERRORS, summary="Events in sequence order, by page")
def list_events(fleet: Fleet, who: Caller, head: HeadState,
                since_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                type: Annotated[list[str] | None, Query(max_length=40)] = None) -> dict:
    """Only the events whose entities the caller may read (an auditor: all). ``next_since_seq`` pages on;
    a page looks at no more than ``MAX_SCAN`` events, so it may hold fewer than ``limit`` (even none)
    with a ``next_since_seq`` to go on from."""
    for name in type or ():
        payload_class(name)  # an unknown type is a 422 naming the known ones
    everything = access.readable_entities(head.state, who.id) is None
    found: list[dict] = []
    cursor, scanned_to = since_seq, None
    while len(found) < limit and cursor - since_seq < MAX_SCAN:
        batch = fleet.events(cursor, None, type or (), 1000 if not everything else limit - len(found))
        if not batch:
            scanned_to = None
            break
        for e in batch:
            scanned_to = e.seq
            if everything or may_read_event(head.state, who, e):
                found.append(event_out(e))
                if len(found) == limit:
                    break
        cursor = scanned_to
        if len(found) == limit:
            break
    more = scanned_to is not None and scanned_to < head.seq
    return {"events": found, "next_since_seq": scanned_to if more else None}


def may_read_event(state: FleetState, who: Principal, e: Event) -> bool:
    try:
        payload = payload_class(e.event_type).model_validate_json(e.payload)
    except Exception:  # an event that no longer validates is the auditor's to see
        return False
    if isinstance(payload, access.ev.ApprovalRecorded) and payload.person == who.id:
        return True
    giver = None
    if isinstance(payload, access.ev.ApprovalRecorded):
        giver = access.subject_giver(state, payload.subject)
    return access.may_read(state, who.id, access.parties(state, payload), giver)


@router.get("/ledger/head", response_model=HeadOut, responses=ERRORS,
            summary="The head's sequence number and hash (publish it; check it later with verify)")
def ledger_head(fleet: Fleet, who: Caller) -> dict:
    h = fleet.head()
    return {"seq": h.seq, "hash": h.hash, "recorded_at": h.recorded_at}


@router.get("/me", responses=ERRORS, summary="Who the credential authenticates, and its access roles")
def me(who: Caller, head: HeadState) -> dict:
    grants = access.grants(head.state, who.id)
    return {"principal": who.id, "scope": who.scope.value, "via": who.via,
            "kind": "person" if who.id in head.state.persons else "service_account",
            "roles": {e: sorted(r.value for r in roles) for e, roles in sorted(grants.items())}}
