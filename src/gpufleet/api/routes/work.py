"""Work that takes longer than a request runs as a job: ``POST`` answers 202 with the job's URL.

Jobs: plans (and their comparison), verify, the board report, simulations. Synchronous here too, being
short: applying a plan (records its proposals as the caller) and the quota export (a cluster spec and
a quotas file rendered as Kueue manifests or Slurm commands: milliseconds, and it writes nothing).
"""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from gpufleet.api.deps import Caller, Fleet, HeadState, IdempotencyKey, body_digest, idempotent
from gpufleet.api.problems import NotFound
from gpufleet.api.routes.fleet import ERRORS, event_out
from gpufleet.domain import access
from gpufleet.domain.access import Capability, Principal
from gpufleet.domain.types import FIRST_DAY, LAST_DAY
from gpufleet.errors import ConflictError, InputError
from gpufleet.planner.problem import MAX_HORIZON_WEEKS, MAX_LEAD_WEEKS
from gpufleet.reports import board_job
from gpufleet.scheduler.limits import MAX_PREEMPTIONS, MAX_TIME_S
from gpufleet.services import jobs as job_kinds
from gpufleet.services import scheduling
from gpufleet.services.head_state import HeadFold

router = APIRouter(prefix="/v1", tags=["jobs"])
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{24}$")]
_POOL = r"\s*[1-9]\d{0,6}x[1-9]\d{0,6}(:[A-Za-z0-9._-]+)?\s*"
ClusterSpec = Annotated[str, Field(pattern=rf"^{_POOL}(,{_POOL})*$", max_length=1000,
                                   description="nodes as NODESxGPUS[:MODEL],... (e.g. 69x8:V100)")]
FileName = Annotated[str, Field(min_length=1, max_length=255, description="a file of the server's traces folder")]
Seconds = Annotated[float, Field(ge=0, le=MAX_TIME_S)]
NO_TRACES = {503: {"description": "the server has no traces folder (its traces_dir setting)"}}
NOT_FOUND = {404: {"description": "no such job, or a named file is not in the server's traces folder"}}
ACCEPTED = {"description": "accepted; the job is at `url` (also the Location header)"}


class PlanIn(BaseModel):
    as_of: Annotated[date | None, Field(ge=FIRST_DAY, le=LAST_DAY)] = None
    horizon_weeks: Annotated[int, Field(ge=1, le=MAX_HORIZON_WEEKS)] = 52
    policy: Annotated[str, Field(pattern="^(owner-first|max-value|fair|hold)$")] = "owner-first"
    compare: bool = False
    integral: bool = False
    lead_weeks: Annotated[int, Field(ge=0, le=MAX_LEAD_WEEKS)] = 2
    move_cost_usd: Annotated[float, Field(ge=0, le=1e9)] = 2000.0
    reclaim_cost_usd: Annotated[float, Field(ge=0, le=1e9)] = 500.0
    fee_usd_per_gpu_hour: Annotated[float | None, Field(ge=0, le=10_000)] = None
    failure_rate_per_gpu_week: Annotated[float, Field(ge=0, lt=1)] = 0.0
    time_limit_s: Annotated[float, Field(gt=0, le=3600)] = 600.0


class VerifyIn(BaseModel):
    expect: Annotated[list[Annotated[str, Field(max_length=100)]], Field(max_length=100)] = []
    replay: bool = False


class ReportIn(BaseModel):
    start: Annotated[date | None, Field(ge=FIRST_DAY, le=LAST_DAY, description="first day of the charts")] = None
    end: Annotated[date | None, Field(ge=FIRST_DAY, le=LAST_DAY, description="the as-of date")] = None


class SimulateIn(BaseModel):
    trace: FileName
    trace_format: Literal[tuple(scheduling.READERS)] = "philly"  # type: ignore[valid-type]
    cluster: ClusterSpec | None = None
    cluster_file: Annotated[FileName | None, Field(description="an Alibaba node list of the traces folder")] = None
    quotas: Annotated[FileName | None, Field(description="tenants' quotas (YAML or Helios CSV) of the traces "
                                                         "folder; needs cluster or cluster_file")] = None
    policy: Literal["static", "borrow", "fair"] = "borrow"
    compare: bool = False
    backfill: bool = False
    max_preemptions: Annotated[int | None, Field(ge=1, le=MAX_PREEMPTIONS)] = None
    reclaim_grace_s: Seconds = 30.0
    checkpoint_s: Seconds = scheduling.DEFAULT_CHECKPOINT_S
    restart_s: Seconds = scheduling.DEFAULT_RESTART_S
    loans: bool = Field(False, description="the ledger's loans as quota transfers (the caller must read every "
                                           "party to them)")
    skip_bad_rows: bool = False


class ExportIn(BaseModel):
    engine: Literal["kueue", "slurm"]
    cluster: ClusterSpec | None = None
    cluster_file: FileName | None = None
    quotas: FileName
    at_s: Seconds = 0.0
    epoch: Annotated[str | None, Field(max_length=40, description="ISO time of second 0")] = None
    loans: bool = False
    namespace: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")] = "default"


class JobAccepted(BaseModel):
    job_id: str
    url: str
    state: str


class Applied(BaseModel):
    recorded: int
    events: list[dict[str, Any]]


CAPABILITY = {"plan": Capability.PLAN, "verify": Capability.AUDIT, "report": Capability.FINANCE,
              "simulate": Capability.SIMULATE, "sweep": Capability.PLAN}


def may_run(head: HeadFold, who: Principal, kind: str) -> None:
    """Raise Forbidden unless ``who`` may run a job of ``kind`` (and so read its result) now."""
    if kind == "sweep" and access.is_auditor(head.state, who.id):
        return  # planners and auditors run sweeps
    access.require(head.state, who, CAPABILITY[kind], None)
    if kind == "report":
        board_job.require_reads_everything(head.state, who.id)


async def _accepted(request: Request, fleet, who: Principal, key: str | None, kind: str, body: BaseModel):
    """Submit a job of ``kind`` with ``body`` as its parameters, once per idempotency key: 202 and its URL."""
    params, digest = body.model_dump(mode="json"), await body_digest(request)

    def run() -> tuple[int, dict]:
        job_id = request.app.state.jobs.submit(kind, who.id, params)
        return 202, {"job_id": job_id, "url": f"/v1/jobs/{job_id}", "state": "queued"}

    response = await idempotent(fleet, who, key, digest, run)
    if response.status_code == 202:
        response.headers["Location"] = json.loads(response.body)["url"]
    return response


def require_shared_file(request: Request, name: str | None, field: str) -> None:
    """Refuse now, not in a failed job later, a file name that is no file of the traces folder."""
    if name is None:
        return
    try:
        job_kinds.shared_file(request.app.state.settings.traces_dir, name, field)
    except job_kinds.MissingFile as exc:
        raise NotFound(exc.message, field=field) from None


def require_one_cluster(body: SimulateIn | ExportIn) -> None:
    from gpufleet.services import traces

    if body.cluster is not None and body.cluster_file is not None:
        raise InputError("give cluster or cluster_file, not both", field="cluster_file")
    if body.cluster is not None:
        traces.read_cluster(body.cluster)  # its bounds (GPUs in all), now


@router.post("/plans", status_code=202, response_model=JobAccepted, responses=ERRORS | {202: ACCEPTED},
             summary="Plan (or compare every policy) as a job (planners); the result holds what the caller reads")
async def plan(request: Request, body: PlanIn, fleet: Fleet, who: Caller, head: HeadState,
               key: IdempotencyKey = None) -> Any:
    may_run(head, who, "plan")
    return await _accepted(request, fleet, who, key, "plan", body)


@router.post("/plans/apply", status_code=201, response_model=Applied, responses=ERRORS,
             summary="Record a plan's loans as proposals and its installs as planned, as the caller (planners "
                     "of each lender and owner)")
async def apply(request: Request, fleet: Fleet, who: Caller, head: HeadState,
                body: Annotated[dict[str, Any], Body(description="a plan, as a plan job's result gives it "
                                                                 "(one plan, not a comparison)")],
                key: IdempotencyKey = None) -> Any:
    from gpufleet.services import planning
    from gpufleet.services.plan_file import check_plan

    access.require(head.state, who, Capability.PLAN, None, writes=True)
    plan_body = check_plan(body, "the plan")
    digest = await body_digest(request)

    def run() -> tuple[int, dict]:
        written = planning.apply_plan(fleet, plan_body, principal=who, policy=request.app.state.policy)
        return 201, {"recorded": len(written), "events": [event_out(e) for e in written]}

    return await idempotent(fleet, who, key, digest, run)


@router.post("/ledger/verify", status_code=202, response_model=JobAccepted, responses=ERRORS | {202: ACCEPTED},
             summary="Verify the hash chain, anchors and snapshots as a job (auditors)")
async def verify(request: Request, body: VerifyIn, fleet: Fleet, who: Caller, head: HeadState,
                 key: IdempotencyKey = None) -> Any:
    from gpufleet.services.fleet import parse_anchor

    may_run(head, who, "verify")
    for text in body.expect:
        parse_anchor(text)  # a bad anchor is a 422 now, not a failed job later
    return await _accepted(request, fleet, who, key, "verify", body)


@router.post("/reports", status_code=202, response_model=JobAccepted, responses=ERRORS | {202: ACCEPTED},
             summary="The HTML board report as a job (auditors; finance reading every entity)")
async def report(request: Request, body: ReportIn, fleet: Fleet, who: Caller, head: HeadState,
                 key: IdempotencyKey = None) -> Any:
    may_run(head, who, "report")
    return await _accepted(request, fleet, who, key, "report", body)


@router.post("/simulations", status_code=202, response_model=JobAccepted,
             responses=ERRORS | NOT_FOUND | NO_TRACES | {202: ACCEPTED},
             summary="Replay a trace of the server's traces folder under a scheduling policy, as a job "
                     "(operators, planners)")
async def simulate(request: Request, body: SimulateIn, fleet: Fleet, who: Caller, head: HeadState,
                   key: IdempotencyKey = None) -> Any:
    may_run(head, who, "simulate")
    require_one_cluster(body)
    for name, field in ((body.trace, "trace"), (body.cluster_file, "cluster_file"), (body.quotas, "quotas")):
        require_shared_file(request, name, field)
    if body.loans:
        job_kinds.require_loans_readable(head.state, who.id)
    return await _accepted(request, fleet, who, key, "simulate", body)


@router.post("/exports", responses=ERRORS | NOT_FOUND | NO_TRACES | {200: {
    "description": "Kueue manifests (YAML) or Slurm sacctmgr commands",
    "content": {"application/yaml": {"schema": {"type": "string"}}, "text/plain": {"schema": {"type": "string"}}}}},
    response_class=Response, summary="The quotas in force at a time, for Kueue or Slurm (operators, planners)")
def export(request: Request, body: ExportIn, who: Caller, head: HeadState) -> Response:
    access.require(head.state, who, Capability.SIMULATE, None)
    require_one_cluster(body)
    folder = request.app.state.settings.traces_dir
    for name, field in ((body.cluster_file, "cluster_file"), (body.quotas, "quotas")):
        require_shared_file(request, name, field)
    cluster = job_kinds.cluster_spec(folder, body.model_dump())
    if cluster is None:
        raise InputError("an export needs the cluster: give cluster or cluster_file", field="cluster")
    loans = None
    if body.loans:
        job_kinds.require_loans_readable(head.state, who.id)
        loans = head.state
    setup = scheduling.prepare_quotas(cluster, job_kinds.shared_file(folder, body.quotas, "quotas"),
                                      epoch=body.epoch, loans=loans)
    text = scheduling.export_quotas(setup, body.engine, at_s=body.at_s, namespace=body.namespace)
    return Response(text, media_type="application/yaml" if body.engine == "kueue" else "text/plain")


@router.get("/jobs/{job_id}", responses=ERRORS | NOT_FOUND,
            summary="A job's state, progress, and its problem; its result (JSON ones also here) at result_url")
def job(request: Request, job_id: JobId, who: Caller, head: HeadState) -> dict:
    """A job is its submitter's, while the submitter may still run its kind (a revoked role reads no result)."""
    found = request.app.state.jobs.store.get(job_id)
    if found is None or found["principal"] != who.id:
        raise NotFound(f"no job '{job_id}' of '{who.id}'")
    if found["kind"] in CAPABILITY:
        may_run(head, who, found["kind"])
    return found


@router.get("/jobs/{job_id}/result", response_class=Response, responses=ERRORS | NOT_FOUND | {200: {
    "description": "the result, in the job's media type", "content": {
        "application/json": {}, board_job.HTML.split(";")[0]: {"schema": {"type": "string"}}}}},
    summary="A succeeded job's result, with its media type (the report: text/html; others: JSON)")
def job_result(request: Request, job_id: JobId, who: Caller, head: HeadState) -> Response:
    found = request.app.state.jobs.store.result(job_id)
    if found is None or found[0]["principal"] != who.id:
        raise NotFound(f"no job '{job_id}' of '{who.id}'")
    job, result = found
    if job["kind"] in CAPABILITY:
        may_run(head, who, job["kind"])
    if job["state"] != "succeeded":
        raise ConflictError(f"job '{job_id}' is {job['state']} ({job['message']}); only a succeeded job has a result")
    if job["media_type"] == job_kinds.JSON:
        return Response(json.dumps(result), media_type=job_kinds.JSON)
    return Response(result, media_type=job["media_type"])


@router.get("/jobs", responses=ERRORS, summary="Your jobs, newest first")
def jobs(request: Request, who: Caller) -> list[dict]:
    return request.app.state.jobs.store.list(who.id)
