"""Fleet: GPUs per entity and state over time, idle highlighted, the holdings table; operators record failures."""

from __future__ import annotations

import urllib.parse
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from gpufleet.domain import access
from gpufleet.domain.state import FleetState
from gpufleet.domain.types import AccessRole
from gpufleet.errors import InputError
from gpufleet.services.fleet import make_payload, parse_date
from gpufleet.web import common
from gpufleet.web.views import fleet as builder

router = APIRouter(prefix="/ui", include_in_schema=False)
Entity = Annotated[str | None, Query(max_length=80)]


@router.get("/fleet")
def fleet_page(request: Request, who: common.Viewer, time: common.Time, entity: Entity = None) -> Response:
    """The fleet of the entities the principal reads (or of ``entity``), as of the time control."""
    with who.fleet.reading_head() as head:
        shown = common.visible_entities(head.state, who, entity)
        can_record = _recording_entities(head.state, who, shown)
        models, sites = sorted(head.state.models), _sites(head.state, can_record)
        key = ("ui-fleet", head.seq, head.hash, tuple(shown), time.on(), time.known_at, date.today())
        # the series read the ledger from its first event: kept per head, and its days reused after a write
        page = who.fleet.kept(key, lambda: builder.build(who.fleet, shown, time.on(), time.known_at, head)).data
    return common.render(request, "fleet.html", who, time, page=page, page_title="Fleet", entity=entity,
                         charts=page.chart is not None, can_record=can_record, models=models, sites=sites,
                         states=builder.STATES, notice=request.query_params.get("notice"))


@router.post("/fleet/failures")
async def record_failure(request: Request, who: common.Viewer) -> Response:
    """Record ``gpus_failed`` through the same gate as ``POST /v1/events/gpus_failed``."""
    fields = await common.form_of(request)
    common.check_csrf(request, who, fields)
    on = parse_date(fields.get("on") or None, "on")
    data = {"owner": fields.get("owner", ""), "model": fields.get("model", ""), "gpus": _count(fields.get("gpus")),
            "site": fields.get("site") or None}
    payload = make_payload("gpus_failed", data)

    def record():
        return who.fleet.record(payload, on, policy=request.app.state.policy, principal=who.principal)

    event = await run_in_threadpool(record)
    notice = f"Recorded event {event.seq}: {payload.gpus:,} {payload.model} GPUs of {payload.owner} failed"
    query = urllib.parse.urlencode({"entity": fields.get("return_entity") or "", "notice": notice})
    return RedirectResponse(f"/ui/fleet?{query}", 303)


def _count(text: str | None) -> int:
    """A form's whole number (a form sends text; the event wants an integer)."""
    try:
        return int((text or "").replace(",", "").strip())
    except ValueError:
        raise InputError(f"GPUs must be a whole number, not '{text}'", field="gpus") from None


def _recording_entities(state: FleetState, who: common.Viewing, shown: list[str]) -> list[str]:
    """The shown entities where the principal may record fleet events (operator, write credential, not admin)."""
    if not who.principal.can_write() or access.is_admin(state, who.principal.id):
        return []
    return [e for e in shown if who.has(AccessRole.OPERATOR, e)]


def _sites(state: FleetState, owners: list[str]) -> list[tuple[str, str]]:
    """(site, owner) of the entities' sites, for the failure form."""
    return [(name, site.owner) for name, site in sorted(state.sites.items()) if site.owner in owners]
