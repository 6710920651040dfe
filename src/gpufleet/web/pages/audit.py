"""Audit: findings with their evidence, verification, the latest checkpoint, vote signatures, a disclosure bundle."""

from __future__ import annotations

import urllib.parse
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from gpufleet.api.routes import disclosures as disclosure_route
from gpufleet.domain import access
from gpufleet.domain.access import Capability
from gpufleet.web import common
from gpufleet.web.pages import plans
from gpufleet.web.views import audit as builder

router = APIRouter(prefix="/ui", include_in_schema=False)
Kind = Literal["related-party", "claims", "loans", "all"]
Severity = Literal["critical", "high", "medium", "low", "info"]


@router.get("/audit")
def audit_page(request: Request, who: common.Viewer, time: common.Time,
               entity: Annotated[str | None, Query(max_length=80)] = None,
               severity: Severity | None = None, kind: Annotated[str | None, Query(max_length=80)] = None,
               job: Annotated[str | None, Query(max_length=40)] = None) -> Response:
    """Findings (auditors only: the server refuses the audit to others as the API does); for everyone the
    ledger's verification, its latest checkpoint and the votes of the approvals it may read. Long tables
    come a page at a time (``page``: findings of ``severity`` and ``kind``; ``apage``: approvals);
    ``job``: the principal's verify job, its progress or result."""
    policy, fleet = request.app.state.policy, who.fleet
    found = None
    with fleet.reading_head() as head:
        if entity:
            common.visible_entities(head.state, who, entity)
        if who.auditor:
            access.require(head.state, who.principal, Capability.AUDIT, None)
            found = builder.findings(fleet, policy, time.as_of, head)
        rows = builder.approvals(fleet, policy, time.as_of, head, who.principal, entity)
    status = request.app.state.checks.status()
    verify_job = plans.job_of(request, who.principal, job, "verify") if job else None
    context = {"entity": entity, "page_title": "Audit", "chain": status, "checkpoint": builder.latest_checkpoint(fleet),
               "approvals": common.paged(request, rows, "apage"), "approval_counts": builder.approval_counts(rows),
               "may_verify": who.auditor, "download": "/ui/disclosure?" + urllib.parse.urlencode(
                   {k: v for k, v in {"kind": "related-party", "entity": entity, "to": time.as_of}.items() if v})}
    if found is not None:
        shown = builder.chosen(builder.with_chain(found, status), severity, kind)
        context |= {"findings": common.paged(request, shown), "counts": found.counts, "severity": severity,
                    "kind": kind, "all_findings": len(found.rows)}
    else:
        context |= {"findings": None}
    context |= plans.job_context(verify_job, "/ui/audit", lambda j: {})
    return common.render(request, "audit.html", who, time, **context)


@router.post("/audit/verify")
async def verify(request: Request, who: common.Viewer) -> Response:
    """Verify the whole ledger now, as a verify job (``POST /v1/ledger/verify``, auditors); back to the page,
    which shows its progress and then the status it gives."""
    fields = await common.form_of(request)
    common.check_csrf(request, who, fields)
    job_id = await run_in_threadpool(plans.submit, request, who.principal, "verify", {"expect": [], "replay": False})
    return RedirectResponse("/ui/audit?" + urllib.parse.urlencode({"job": job_id}) + "#ledger", 303)


@router.get("/audit/jobs/{job_id}")
def progress(request: Request, job_id: str, who: common.Viewer) -> Response:
    """The verify job's partial, polled by the page until the job is final (then the page reloads)."""
    found = plans.job_of(request, who.principal, job_id, "verify")
    return plans.job_view(request, who, found, "/ui/audit", lambda j: {}, "_verify_job.html")


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
