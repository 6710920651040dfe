"""Plans: run one policy or compare them all (a plan job, as ``POST /v1/plans``), see idle GPU-weeks,
value per entity, delayed demand and the proposed loans side by side, and apply a plan as proposals
(as ``POST /v1/plans/apply``)."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import plotly.graph_objects as go
from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from gpufleet.api.routes.work import PlanIn, may_run
from gpufleet.domain import access
from gpufleet.domain.access import Capability, Principal
from gpufleet.domain.types import AccessRole
from gpufleet.errors import InputError
from gpufleet.planner.problem import MAX_HORIZON_WEEKS
from gpufleet.services import planning
from gpufleet.services.plan_file import check_plan
from gpufleet.web import common

JOB_ID = re.compile(r"^[0-9a-f]{24}$")
POLICY_COLOURS = {"hold": "#616161", "max-value": "#1565c0", "owner-first": "#2e7d32", "fair": "#8e24aa"}


def entities_of(plans: list[dict]) -> list[str]:
    """The entities a comparison shows rows of (the caller's, or all for an auditor)."""
    names = {e for p in plans for table in ("idle_gpu_weeks", "value_usd") for e in p["kpis"].get(table, {})}
    return sorted(names - {"total"})


def _unserved(plan: dict, entity: str) -> float:
    """Demand of ``entity`` the plan leaves unserved (GPU-weeks): the delay, over all tiers."""
    return float(sum(plan["kpis"].get("unserved_gpu_weeks", {}).get(entity, {}).values()))


def summary_rows(plans: list[dict]) -> list[dict]:
    """One row per policy: idle GPU-weeks, value, delayed demand (GPU-weeks), and the loans proposed,
    summed over the entities shown."""
    entities = entities_of(plans)
    rows = []
    for p in plans:
        kpis = p["kpis"]
        rows.append({
            "policy": p["policy"], "status": p["status"],
            "idle_gpu_weeks": sum(kpis["idle_gpu_weeks"].get(e, 0.0) for e in entities),
            "value_usd": sum(kpis["value_usd"].get(e, 0.0) for e in entities),
            "unserved_gpu_weeks": sum(_unserved(p, e) for e in entities),
            "loans": len(p["loans"]), "loan_gpu_weeks": sum(x["gpu_weeks"] for x in p["loans"]),
            "reclaims": len(p["reclaims"]), "solve_s": p.get("solve", {}).get("solve_s")})
    return rows


def entity_rows(plans: list[dict]) -> list[dict]:
    """Per entity, each policy's idle GPU-weeks, value and delayed demand, side by side."""
    rows = []
    for entity in entities_of(plans):
        row: dict = {"entity": entity}
        for p in plans:
            row[p["policy"]] = {"idle_gpu_weeks": p["kpis"]["idle_gpu_weeks"].get(entity, 0.0),
                                "value_usd": p["kpis"]["value_usd"].get(entity, 0.0),
                                "unserved_gpu_weeks": _unserved(p, entity)}
        rows.append(row)
    return rows


def loan_rows(plans: list[dict]) -> list[dict]:
    """Every loan each policy proposes, with its policy."""
    return [{"policy": p["policy"]} | loan for p in plans for loan in p["loans"]]


def kpi_figure(plans: list[dict], kpi: str, title: str, unit: str) -> go.Figure | None:
    """One bar per policy per entity for ``kpi`` (idle_gpu_weeks, value_usd or unserved_gpu_weeks)."""
    entities = entities_of(plans)
    if not plans or not entities:
        return None
    fig = go.Figure()
    for p in plans:
        values = [_unserved(p, e) if kpi == "unserved_gpu_weeks" else p["kpis"][kpi].get(e, 0.0) for e in entities]
        fig.add_trace(go.Bar(x=entities, y=values, name=p["policy"], marker_color=POLICY_COLOURS.get(p["policy"]),
                             hovertemplate="%{x}, " + p["policy"] + ": %{y:,.0f} " + unit + "<extra></extra>"))
    fig.update_layout(barmode="group", title={"text": title}, height=360, yaxis={"title": unit, "tickformat": ",.0f"},
                      legend={"orientation": "h", "y": -0.2})
    return fig


def figures(plans: list[dict]) -> list[tuple[str, go.Figure]]:
    """The comparison's charts, each with an id; none for an empty comparison."""
    charts = [("plan-idle", kpi_figure(plans, "idle_gpu_weeks", "Idle GPU-weeks", "GPU-weeks")),
              ("plan-value", kpi_figure(plans, "value_usd", "Value per entity", "USD")),
              ("plan-delay", kpi_figure(plans, "unserved_gpu_weeks", "Demand left unserved", "GPU-weeks"))]
    return [(name, fig) for name, fig in charts if fig is not None]


# -- jobs from pages (shared with the shared-cluster page) ----------------------------------------

router = APIRouter(prefix="/ui", include_in_schema=False)


def job_of(request: Request, who: Principal, job_id: str, kind: str) -> dict:
    """The job ``job_id`` of ``kind`` if ``who`` submitted it and may still run its kind (as ``GET /v1/jobs``)."""
    found = request.app.state.jobs.store.get(job_id) if JOB_ID.match(job_id) else None
    if found is None or found["principal"] != who.id or found["kind"] != kind:
        raise common.NotFoundPage(f"no {kind} job '{job_id[:40]}' of '{who.id}'")
    with request.app.state.fleet.reading_head() as head:
        may_run(head, who, kind)
    return found


def submit(request: Request, who: Principal, kind: str, params: dict) -> str:
    """Submit a job as ``POST /v1/plans`` or ``/v1/simulations`` does (after their checks); its id."""
    with request.app.state.fleet.reading_head() as head:
        may_run(head, who, kind)
    return request.app.state.jobs.submit(kind, who.id, params)


def job_view(request: Request, who: common.Viewing, job: dict, path: str, results: Callable[[dict], dict],
             template: str) -> Response:
    """The job's progress (a partial that polls itself every second), its problem, or its results. Polled by
    htmx, a succeeded job reloads the page (whose URL names the job): htmx drops the ``<script>`` elements of
    a swapped partial (``allowScriptTags`` is off), and with them the charts' JSON."""
    if job["state"] == "succeeded" and request.headers.get("HX-Request") == "true":
        return Response("", headers={"HX-Refresh": "true", "Cache-Control": "no-store"})
    return common.render(request, template, who, None, **job_context(job, path, results))


def job_context(job: dict | None, path: str, results: Callable[[dict], dict]) -> dict:
    """What a page shows of its job: where its partial polls, its progress, and its results once it succeeded."""
    if job is None:
        return {"job": None}
    context = {"job": job, "poll": f"{path}/jobs/{job['job_id']}", "percent": round(100 * job["progress"])}
    if job["state"] == "succeeded":
        context |= results(job)
    return context


def form_params(fields: dict[str, str], model: type[BaseModel], checkboxes: tuple[str, ...]) -> dict:
    """A form's fields as the API body ``model`` validates them (empty fields: the defaults)."""
    body: dict[str, Any] = {k: v for k, v in fields.items() if v != "" and k in model.model_fields}
    body |= {name: name in fields for name in checkboxes}
    try:
        return model.model_validate(body).model_dump(mode="json")
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(f"{'.'.join(map(str, err['loc']))}: {err['msg']}",
                         field=".".join(map(str, err["loc"]))) from None


# -- the page -------------------------------------------------------------------------------------


def _plans_of(job: dict) -> list[dict]:
    result = job["result"]
    return result if isinstance(result, list) else [result]


def results(job: dict) -> dict:
    """What the results partial shows of a succeeded plan job."""
    found = _plans_of(job)
    charts = [{"id": name, "json": common.figure_json(fig), "label": fig.layout.title.text}
              for name, fig in figures(found)]
    return {"plans": found, "summary": summary_rows(found), "entities": entity_rows(found),
            "loans": loan_rows(found), "charts": charts, "whole": found[0].get("visible_entities") is None}


@router.get("/plans")
def page(request: Request, who: common.Viewer, time: common.Time) -> Response:
    """The form (policies, horizon; the as-of date is the plan's start) and the job named by ``job``."""
    job = None
    if request.query_params.get("job"):
        job = job_of(request, who.principal, request.query_params["job"], "plan")
    planner = who.has(AccessRole.PLANNER) and who.principal.can_write()
    context = {"planner": planner, "policies": list(POLICY_COLOURS), "charts": True,
               "applied": request.query_params.get("applied", "")[:300], "page_title": "Plans",
               "max_weeks": MAX_HORIZON_WEEKS} | job_context(job, "/ui/plans", results)
    return common.render(request, "plans.html", who, time, **context)


@router.post("/plans")
async def run(request: Request, who: common.Viewer, time: common.Time) -> Response:
    """Submit a plan job (one policy, or all with ``compare``) starting on the as-of date."""
    fields = await common.form_of(request)
    common.check_csrf(request, who, fields)
    params = form_params(fields | {"as_of": (time.as_of or "") and time.as_of.isoformat()}, PlanIn, ("compare",))
    job_id = await run_in_threadpool(submit, request, who.principal, "plan", params)
    return RedirectResponse(common.url_with(request, job=job_id), 303)


@router.get("/plans/jobs/{job_id}")
def progress(request: Request, job_id: str, who: common.Viewer) -> Response:
    """The job's partial, polled by the page until the job is final."""
    job = job_of(request, who.principal, job_id, "plan")
    planner = who.has(AccessRole.PLANNER) and who.principal.can_write()
    return job_view(request, who, job, "/ui/plans", lambda j: results(j) | {"planner": planner}, "_plan_job.html")


@router.post("/plans/apply")
async def apply(request: Request, who: common.Viewer) -> Response:
    """Record one plan of a job's results as proposals, as ``POST /v1/plans/apply`` does, as the caller."""
    fields = await common.form_of(request)
    common.check_csrf(request, who, fields)

    def record() -> str:
        job = job_of(request, who.principal, fields.get("job", ""), "plan")
        chosen = [p for p in _plans_of(job) if p["policy"] == fields.get("policy")] if job["result"] else []
        if not chosen:
            raise InputError(f"the job has no plan of policy '{fields.get('policy', '')[:40]}'", field="policy")
        with request.app.state.fleet.reading_head() as head:
            access.require(head.state, who.principal, Capability.PLAN, None, writes=True)
        written = planning.apply_plan(request.app.state.fleet, check_plan(chosen[0], "the plan"),
                                      principal=who.principal, policy=request.app.state.policy)
        loans = sum(1 for e in written if e.event_type == "loan_proposed")
        return (f"the {chosen[0]['policy']} plan is applied: {loans:,} loan proposals and {len(written) - loans:,} "
                f"planned installs recorded; they await approval in the inbox")

    done = await run_in_threadpool(record)
    query = urllib.parse.urlencode({"job": fields.get("job", ""), "applied": done})
    return RedirectResponse(f"/ui/plans?{query}", 303)
