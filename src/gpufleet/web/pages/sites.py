"""Sites: capacity against installed and planned GPUs over time, each readiness slip and what it left idle."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from gpufleet.web import common
from gpufleet.web.views import sites as builder

router = APIRouter(prefix="/ui", include_in_schema=False)


@router.get("/sites")
def sites_page(request: Request, who: common.Viewer, time: common.Time,
               entity: Annotated[str | None, Query(max_length=80)] = None) -> Response:
    """The sites of the entities the principal reads (or of ``entity``)."""
    with who.fleet.reading_head() as head:
        shown = common.visible_entities(head.state, who, entity)
        key = ("ui-sites", head.seq, head.hash, tuple(shown), time.on(), time.known_at, date.today())

        # reads the ledger from its first event: kept per head, and its days reused after a write
        page = who.fleet.kept(key, lambda: builder.build(who.fleet, shown, time.on(), time.known_at, head)).data
    return common.render(request, "sites.html", who, time, page=page, page_title="Sites", entity=entity,
                         entities=shown, charts=page.chart is not None)
