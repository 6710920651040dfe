"""Loans and swaps: a Gantt chart of loans, swaps, reclaims and notice periods, linked to events and approvals."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from gpufleet.domain import access
from gpufleet.web import common
from gpufleet.web.views import loans as builder

router = APIRouter(prefix="/ui", include_in_schema=False)


@router.get("/loans")
def loans_page(request: Request, who: common.Viewer, time: common.Time) -> Response:
    """Every loan and swap the principal may read (its entities' either side, or all for an auditor): the
    latest ``MAX_TRANSACTIONS`` of them, kept per head, principal and time control (a fold and every reclaim)."""
    with who.fleet.reading_head() as head:
        def readable(parties: set[str]) -> bool:
            return access.may_read(head.state, who.principal.id, parties)

        def build() -> tuple:
            state = who.fleet.state(time.on(), time.known_at)
            reclaims = [e for e in who.fleet.events(types=["loan_reclaimed"]) if e.effective_date <= time.on()]
            found, total = builder.latest(builder.bars(state, reclaims, readable))
            return found, total, builder.figure(found)

        key = ("ui-loans", head.seq, head.hash, who.principal.id, time.on(), time.known_at)
        found, total, page_chart = who.fleet.kept(key, build).data
    return common.render(request, "loans.html", who, time, bars=found, chart=page_chart, page_title="Loans and swaps",
                         charts=page_chart is not None, total=total, limit=builder.MAX_TRANSACTIONS)
