"""Shared cluster: replay a trace of the server's traces folder on a cluster and tenants' quotas (a
simulate job, as ``POST /v1/simulations``), and see per tenant utilization, waits, guarantee
violations and lost work, policy against policy, as charts."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from gpufleet.api.routes import work
from gpufleet.api.routes.work import SimulateIn
from gpufleet.domain.access import Forbidden
from gpufleet.services import scheduling
from gpufleet.web import common
from gpufleet.web.pages import plans

POLICY_COLOURS = {"static": "#616161", "borrow": "#1565c0", "fair": "#2e7d32"}
# (field of a tenant's row, chart title, unit, scale applied to the field)
TENANT_CHARTS = (("utilization", "Utilization of each tenant's quota", "%", 100.0),
                 ("queue_mean_s", "Mean wait in the queue", "hours", 1 / 3600),
                 ("guarantee_violation_s", "Guarantee violations (time a tenant waited under its quota)", "hours",
                  1 / 3600),
                 ("lost_gpu_hours", "Work lost to preemption", "GPU-hours", 1.0))


def policy_rows(summary: dict) -> list[dict]:
    """One row per policy: the whole cluster's figures, in the units the page shows."""
    return [{"policy": p["policy"], "jobs": p["jobs"], "finished": p["finished"],
             "utilization_pct": 100.0 * p["utilization"], "queue_mean_h": p["queue_mean_s"] / 3600,
             "jct_p99_h": p["jct_p99_s"] / 3600, "guarantee_violation_h": p["guarantee_violation_s"] / 3600,
             "preemptions": p["preemptions"], "lost_gpu_hours": p["lost_gpu_hours"],
             "jain_over_time": p["jain_over_time"], "finish_time_fairness_max": p["finish_time_fairness_max"]}
            for p in summary["policies"]]


def tenants_of(summary: dict) -> list[str]:
    return sorted({t["tenant"] for p in summary["policies"] for t in p["tenants"]})


def tenant_figure(summary: dict, field: str, title: str, unit: str, scale: float) -> go.Figure | None:
    """One bar per policy per tenant for ``field`` of the tenants' rows (None: no tenants)."""
    tenants = tenants_of(summary)
    if not tenants:
        return None
    fig = go.Figure()
    for p in summary["policies"]:
        by = {t["tenant"]: t.get(field, 0.0) * scale for t in p["tenants"]}
        fig.add_trace(go.Bar(x=tenants, y=[by.get(t, 0.0) for t in tenants], name=p["policy"],
                             marker_color=POLICY_COLOURS.get(p["policy"]),
                             hovertemplate="%{x}, " + p["policy"] + ": %{y:,.1f} " + unit + "<extra></extra>"))
    fig.update_layout(barmode="group", title={"text": title}, height=340, yaxis={"title": unit, "tickformat": ",.1f"},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def figures(summary: dict) -> list[tuple[str, go.Figure]]:
    """The simulation's charts, each with an id."""
    charts = [(f"sim-{field.replace('_', '-')}", tenant_figure(summary, field, title, unit, scale))
              for field, title, unit, scale in TENANT_CHARTS]
    return [(name, fig) for name, fig in charts if fig is not None]


# -- the page -------------------------------------------------------------------------------------

router = APIRouter(prefix="/ui", include_in_schema=False)


def trace_files(request: Request) -> list[str] | None:
    """The files of the server's traces folder, by name (None: the server has no traces folder)."""
    folder = request.app.state.settings.traces_dir
    if folder is None:
        return None
    return sorted(p.name for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith("."))


def results(job: dict) -> dict:
    """What the results partial shows of a succeeded simulation."""
    summary = job["result"]
    charts = [{"id": name, "json": common.figure_json(fig), "label": fig.layout.title.text}
              for name, fig in figures(summary)]
    return {"summary": summary, "rows": policy_rows(summary), "charts": charts}


def _check(request: Request, params: dict) -> None:
    """The API's checks of a simulation, now rather than in a failed job: the cluster, the files named."""
    body = SimulateIn.model_validate(params)
    work.require_one_cluster(body)  # the same checks as POST /v1/simulations
    for name, field in ((body.trace, "trace"), (body.cluster_file, "cluster_file"), (body.quotas, "quotas")):
        work.require_shared_file(request, name, field)


@router.get("/cluster")
def page(request: Request, who: common.Viewer, time: common.Time) -> Response:
    """The simulation form (a trace, a cluster, quotas, policies) and the job named by ``job``."""
    job = None
    if request.query_params.get("job"):
        job = plans.job_of(request, who.principal, request.query_params["job"], "simulate")
    with request.app.state.fleet.reading_head() as head:
        try:
            work.may_run(head, who.principal, "simulate")
            may = who.principal.can_write()
        except Forbidden:
            may = False
    context = {"may": may, "files": trace_files(request), "formats": list(scheduling.READERS),
               "policies": list(POLICY_COLOURS), "charts": True, "page_title": "Shared cluster"}
    context |= plans.job_context(job, "/ui/cluster", results)
    return common.render(request, "cluster.html", who, time, **context)


@router.post("/cluster")
async def run(request: Request, who: common.Viewer) -> Response:
    """Submit a simulation job, as ``POST /v1/simulations``."""
    fields = await common.form_of(request)
    common.check_csrf(request, who, fields)
    params = plans.form_params(fields, SimulateIn, ("compare", "backfill"))

    def submit() -> str:
        _check(request, params)
        return plans.submit(request, who.principal, "simulate", params)

    job_id = await run_in_threadpool(submit)
    return RedirectResponse(common.url_with(request, job=job_id), 303)


@router.get("/cluster/jobs/{job_id}")
def progress(request: Request, job_id: str, who: common.Viewer) -> Response:
    """The job's partial, polled by the page until the job is final."""
    job = plans.job_of(request, who.principal, job_id, "simulate")
    return plans.job_view(request, who, job, "/ui/cluster", results, "_cluster_job.html")
