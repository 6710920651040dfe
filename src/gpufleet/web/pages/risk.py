"""Risk: a supply sweep (``gpufleet sweep supply``) run as a job from the page's as-of date, as known at its
time, with its progress; then the fan of active GPUs against each claim and each claim's probability of being
met, for the entities the signed-in principal may read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from gpufleet.domain.types import AccessRole
from gpufleet.planner.problem import MAX_HORIZON_WEEKS
from gpufleet.reports import sweeps as sweep_figures
from gpufleet.web import common
from gpufleet.web.pages.plans import form_params, job_context, job_of, job_view, submit

MAX_SAMPLES = 5_000  # a page's sweep runs serially in one job process: keep it to minutes


class SweepIn(BaseModel):
    """The sweep job's parameters (as the form sends them; the time control gives the dates)."""

    as_of: Annotated[str | None, Field(max_length=10)] = None
    known_at: Annotated[str | None, Field(max_length=40)] = None
    samples: Annotated[int, Field(ge=1, le=MAX_SAMPLES)] = 200
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] = 0
    horizon_weeks: Annotated[int, Field(ge=1, le=MAX_HORIZON_WEEKS)] = 52
    policy: Annotated[str, Field(pattern="^(owner-first|max-value|hold)$")] = "owner-first"


def results(job: dict) -> dict:
    """The charts and rows a succeeded sweep job shows."""
    body = job["result"]
    claims = body["claims"]
    charts = []
    if body["entities"]:
        fan = sweep_figures.fan_chart(body, [c for c in claims if c["metric"] == "active_gpus"])
        charts.append({"id": "risk-fan", "json": common.figure_json(fan),
                       "label": "Active GPUs per entity by week: the P10-P90 band and the P50 line over the samples; "
                                "each active-GPU claim a star at its deadline, labelled with its probability"})
    if claims:
        charts.append({"id": "risk-claims", "json": common.figure_json(sweep_figures.claim_chart(claims)),
                       "label": "Each claim's probability of being met, with its 95% Wilson interval"})
    return {"sweep": body, "claims": claims, "charts": charts, "whole": body.get("visible_entities") is None}


def _may_run(who: common.Viewing) -> bool:
    """Planners (with a read-write credential) and auditors run sweeps."""
    return (who.has(AccessRole.PLANNER) and who.principal.can_write()) or who.has(AccessRole.AUDITOR)


router = APIRouter(prefix="/ui", include_in_schema=False)


@router.get("/risk")
def page(request: Request, who: common.Viewer, time: common.Time) -> Response:
    """The form (samples, seed) and the sweep job named by ``job``."""
    job = None
    if request.query_params.get("job"):
        job = job_of(request, who.principal, request.query_params["job"], "sweep")
    context = {"runner": _may_run(who), "charts": True, "page_title": "Risk", "max_samples": MAX_SAMPLES,
               "max_weeks": MAX_HORIZON_WEEKS} | job_context(job, "/ui/risk", results)
    return common.render(request, "risk.html", who, time, **context)


@router.post("/risk")
async def run(request: Request, who: common.Viewer, time: common.Time) -> Response:
    """Submit a sweep job from the page's as-of date, as known at its time."""
    fields = await common.form_of(request)
    common.check_csrf(request, who, fields)
    dates = {"as_of": (time.as_of or "") and time.as_of.isoformat(), "known_at": time.known_at or ""}
    params = form_params(fields | dates, SweepIn, ())
    job_id = await run_in_threadpool(submit, request, who.principal, "sweep", params)
    return RedirectResponse(common.url_with(request, job=job_id), 303)


@router.get("/risk/jobs/{job_id}")
def progress(request: Request, job_id: str, who: common.Viewer) -> Response:
    """The job's partial, polled by the page until the job is final."""
    job = job_of(request, who.principal, job_id, "sweep")
    return job_view(request, who, job, "/ui/risk", results, "_risk_job.html")
