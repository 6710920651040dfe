"""Events: the ledger, filterable and paginated; each event's actor, hash and what it changed."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from gpufleet.domain.events import EVENT_TYPES, payload_class
from gpufleet.domain.types import MAX_SEQ
from gpufleet.errors import InputError
from gpufleet.web import common
from gpufleet.web.views import events as builder

router = APIRouter(prefix="/ui", include_in_schema=False)
SeqQ = Annotated[int | None, Query(ge=1, le=MAX_SEQ)]


def _day(text: str | None, name: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{name} '{text}' is not a date (YYYY-MM-DD)", field=name) from None


@router.get("/events")
def events_page(request: Request, who: common.Viewer, time: common.Time,
                type: Annotated[list[str] | None, Query(max_length=40)] = None,
                entity: Annotated[str | None, Query(max_length=80)] = None,
                subject: Annotated[str | None, Query(max_length=200)] = None,
                seq: Annotated[list[int] | None, Query()] = None,
                seq_from: SeqQ = None, seq_to: SeqQ = None,
                date_from: Annotated[str | None, Query(max_length=10)] = None,
                date_to: Annotated[str | None, Query(max_length=10)] = None,
                since: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0) -> Response:
    """The events the principal may read that pass the filters, 50 a page."""
    types = [t for t in (type or []) if t]
    for name in types:
        payload_class(name)  # an unknown type is a 422 page naming the known ones
    f = builder.Filters(types, entity or None, subject or None, seq or [], seq_from, seq_to,
                        _day(date_from, "date_from"), _day(date_to, "date_to"), since)
    with who.fleet.reading_head() as head:
        if f.entity:
            common.visible_entities(head.state, who, f.entity)  # 403/404 for an entity it may not read
        rows, next_since = builder.page(who.fleet, head.state, who.principal, f, time.as_of, time.known_at)
        entities = who.readable(head.state)
        entities = sorted(head.state.entities) if entities is None else entities
    return common.render(request, "events.html", who, time, rows=rows, f=f, next_since=next_since,
                         types=sorted(EVENT_TYPES), entities=entities, page_title="Events")
