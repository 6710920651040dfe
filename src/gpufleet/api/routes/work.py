"""Work that takes longer than a request runs as a job: ``POST`` answers 202 with the job's URL."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from gpufleet.api.deps import Caller, Fleet, HeadState, IdempotencyKey, body_digest, idempotent
from gpufleet.api.problems import NotFound
from gpufleet.api.routes.fleet import ERRORS
from gpufleet.domain import access
from gpufleet.domain.access import Capability, Principal
from gpufleet.domain.types import FIRST_DAY, LAST_DAY
from gpufleet.planner.problem import MAX_HORIZON_WEEKS, MAX_LEAD_WEEKS

router = APIRouter(prefix="/v1", tags=["jobs"])
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{24}$")]


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


class JobAccepted(BaseModel):
    job_id: str
    url: str
    state: str


def _accepted(request: Request, fleet, who: Principal, key: str | None, digest: str, kind: str, params: dict):
    def run() -> tuple[int, dict]:
        job_id = request.app.state.jobs.submit(kind, who.id, params)
        return 202, {"job_id": job_id, "url": f"/v1/jobs/{job_id}", "state": "queued"}

    response = idempotent(fleet, who, key, digest, run)
    if response.status_code == 202:
        import json

        response.headers["Location"] = json.loads(response.body)["url"]
    return response


@router.post("/plans", status_code=202, response_model=JobAccepted, responses=ERRORS,
             summary="Plan (or compare every policy) as a job (planners)")
async def plan(request: Request, body: PlanIn, fleet: Fleet, who: Caller, head: HeadState,
               key: IdempotencyKey = None) -> Any:
    access.require(head.state, who, Capability.PLAN, None)
    return _accepted(request, fleet, who, key, await body_digest(request), "plan", body.model_dump(mode="json"))


@router.post("/ledger/verify", status_code=202, response_model=JobAccepted, responses=ERRORS,
             summary="Verify the hash chain, anchors and snapshots as a job (auditors)")
async def verify(request: Request, body: VerifyIn, fleet: Fleet, who: Caller, head: HeadState,
                 key: IdempotencyKey = None) -> Any:
    from gpufleet.services.fleet import parse_anchor

    access.require(head.state, who, Capability.AUDIT, None)
    for text in body.expect:
        parse_anchor(text)  # a bad anchor is a 422 now, not a failed job later
    return _accepted(request, fleet, who, key, await body_digest(request), "verify", body.model_dump(mode="json"))


@router.get("/jobs/{job_id}", responses=ERRORS | {404: {"description": "no such job"}},
            summary="A job's state, progress, and its result or problem")
def job(request: Request, job_id: JobId, who: Caller) -> dict:
    found = request.app.state.jobs.store.get(job_id)
    if found is None or found["principal"] != who.id:
        raise NotFound(f"no job '{job_id}' of '{who.id}'")
    return found


@router.get("/jobs", responses=ERRORS, summary="Your jobs, newest first")
def jobs(request: Request, who: Caller) -> list[dict]:
    return request.app.state.jobs.store.list(who.id)
