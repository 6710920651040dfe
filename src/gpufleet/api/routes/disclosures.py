"""Disclosure bundles over HTTP (docs/disclosure.md, "Disclosure bundles"): the events the caller may read,
selected and proven against the latest recorded checkpoint, in the file format ``gpufleet verify-bundle``
checks offline."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from gpufleet.api.deps import Caller, Fleet, HeadState
from gpufleet.api.routes.fleet import ERRORS, may_read_event
from gpufleet.domain import access
from gpufleet.domain.access import Capability
from gpufleet.domain.disclosure import Bundle
from gpufleet.services import disclosure

router = APIRouter(prefix="/v1", tags=["disclosures"])
NO_CHECKPOINT = {409: {"description": "no checkpoint is recorded yet (create one: `gpufleet checkpoint create` or "
                                      "POST /v1/checkpoints)"}}


@router.get("/disclosures", response_model=Bundle, response_model_by_alias=True,
            responses=ERRORS | NO_CHECKPOINT,
            summary="A disclosure bundle of the events the caller may read, proven against the latest checkpoint")
def disclosures(
    request: Request, fleet: Fleet, who: Caller, head: HeadState,
    entity: Annotated[str | None, Query(description="only events where this entity is a party (the caller "
                                                    "must read it)")] = None,
    kind: Annotated[Literal["related-party", "claims", "loans", "all"], Query()] = "all",
    start: Annotated[date | None, Query(alias="from", description="effective on or after")] = None,
    end: Annotated[date | None, Query(alias="to", description="effective on or before")] = None,
) -> Any:
    """``gpufleet disclose``: an auditor's bundle has every selected event; another principal's only the
    events ``GET /v1/events`` shows it (the voters' key registrations of the votes shown come with them)."""
    state = head.state
    if entity is not None:
        access.require(state, who, Capability.READ, [entity])
    everything = access.readable_entities(state, who.id) is None
    readable = None if everything else (lambda e: may_read_event(state, who, e))
    signer = getattr(request.app.state, "checkpoint_signer", None)
    keys = [signer.vkey] if signer is not None else []
    note = disclosure.latest_note(fleet)
    keys = [k for k in keys if disclosure.signed_by(note, k)]
    return disclosure.build_bundle(fleet, kind, entity, start, end, note=note, keys=keys,
                                   policy=request.app.state.policy, readable=readable)
