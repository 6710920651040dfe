"""Audit: findings with their evidence, verification, the latest checkpoint, vote signatures, a disclosure bundle."""

from __future__ import annotations

import urllib.parse
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from gpufleet.api.routes import disclosures as disclosure_route
from gpufleet.api.routes.governance import may_see_transaction
from gpufleet.domain import access
from gpufleet.domain.access import Capability
from gpufleet.services import governance
from gpufleet.web import common
from gpufleet.web.views import audit as builder

router = APIRouter(prefix="/ui", include_in_schema=False)
Kind = Literal["related-party", "claims", "loans", "all"]


@router.get("/audit")
def audit_page(request: Request, who: common.Viewer, time: common.Time,
               entity: Annotated[str | None, Query(max_length=80)] = None) -> Response:
    """Findings (auditors only: the server refuses the audit to others as the API does); for everyone the
    ledger's verification, its latest checkpoint and the votes of the approvals it may read."""
    policy = request.app.state.policy
    with who.fleet.reading_head() as head:
        if entity:
            common.visible_entities(head.state, who, entity)
        auditor = who.auditor
        if auditor:
            access.require(head.state, who.principal, Capability.AUDIT, None)
        rows = [r for r in governance.approvals(who.fleet, policy, time.as_of, state=head.state)
                if may_see_transaction(head.state, who.principal, r)
                and (not entity or entity in (r["giver"], r["receiver"]))]
    found = builder.findings(who.fleet, policy, time.as_of) if auditor else None
    download = "/ui/disclosure?" + urllib.parse.urlencode(
        {k: v for k, v in {"kind": "related-party", "entity": entity, "to": time.as_of}.items() if v})
    return common.render(request, "audit.html", who, time, findings=found, approvals=rows,
                         verification=builder.verification(who.fleet), checkpoint=builder.latest_checkpoint(who.fleet),
                         download=download, entity=entity, page_title="Audit")


@router.get("/disclosure")
async def disclosure(request: Request, who: common.Viewer,
                     kind: Kind = "all", entity: Annotated[str | None, Query(max_length=80)] = None,
                     start: Annotated[date | None, Query(alias="from")] = None,
                     end: Annotated[date | None, Query(alias="to")] = None) -> Response:
    """The bundle ``GET /v1/disclosures`` gives this principal (the same function), as a file to save."""
    def build() -> bytes:
        with who.fleet.reading_head() as head:
            bundle = disclosure_route.disclosures(request, who.fleet, who.principal, head, entity, kind, start, end)
        return bundle.model_dump_json(by_alias=True, indent=1).encode()

    body = await run_in_threadpool(build)
    name = f"disclosure-{kind}{'-' + entity if entity else ''}.json"
    return Response(body, media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})
