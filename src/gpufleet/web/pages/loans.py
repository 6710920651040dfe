"""Loans and swaps: a Gantt chart of loans, swaps, reclaims and notice periods, linked to events and approvals."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from gpufleet.domain import access
from gpufleet.web import common, series
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
            # the bars on the as-of date are a reading kept across writes that leave that date unchanged
            # (series.over_time); the reclaims are those of the same prefix, as recorded by known_at
            on, known = time.on(), series.known_seq(who.fleet, time.known_at, head)
            reclaims = [e for e in who.fleet.events(until_seq=known, types=["loan_reclaimed"])
                        if e.effective_date <= on]
            (every,) = series.over_time(who.fleet, [on], lambda s, _d: builder.bars(s, reclaims), time.known_at,
                                        ("loans", tuple(e.seq for e in reclaims)), head)
            found, total = builder.latest(builder.visible(every, readable))
            return found, total, builder.figure(found)

        key = ("ui-loans", head.seq, head.hash, who.principal.id, time.on(), time.known_at)
        found, total, page_chart = who.fleet.kept(key, build).data
    return common.render(request, "loans.html", who, time, bars=found, chart=page_chart, page_title="Loans and swaps",
                         charts=page_chart is not None, total=total, limit=builder.MAX_TRANSACTIONS)
