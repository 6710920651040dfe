"""Planning from the ledger (or a scenario file): the service behind ``gpufleet plan``."""

from __future__ import annotations

import hashlib
import json
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np

from gpufleet.domain.access import Principal
from gpufleet.domain.governance import GovernancePolicy
from gpufleet.domain.state import FleetState
from gpufleet.planner.plan import make_plan
from gpufleet.planner.policies import POLICIES
from gpufleet.planner.problem import PlanningProblem, PlanOptions, problem_from_state
from gpufleet.planner.solver import SolveOptions
from gpufleet.services.fleet import FleetService, make_payload


def scenario_state(path: Path, as_of: date | None) -> FleetState:
    """The state a scenario file describes, via a throwaway ledger (so it is validated the same way)."""
    with tempfile.TemporaryDirectory(prefix="gpufleet-plan-") as tmp:
        service = FleetService.open(str(Path(tmp) / "scenario.db"), create=True)
        service.load(path)
        state = service.state(as_of)
        service.engine.dispose()
    return state


def lent_now(problem: PlanningProblem, state: FleetState) -> np.ndarray | None:
    """GPUs lent on the start date per (cohort, borrower) loan pair of the model, or None if none."""
    from gpufleet.planner.model import layout_for

    lay = layout_for(problem)
    e_ix = {e: i for i, e in enumerate(problem.entities)}
    pairs = {(int(c), int(u)): k for k, (c, u) in enumerate(zip(lay.lc, lay.lu, strict=True))}
    cohorts = {(problem.entities[o], m): i for i, (o, m) in enumerate(zip(problem.cohort_owner, problem.cohort_model,
                                                                           strict=True))}
    out = np.zeros(len(lay.lc))
    for (_site, owner, model, user), n in state.installed.items():
        if user != owner and n and (key := pairs.get((cohorts[(owner, model)], e_ix[user]))) is not None:
            out[key] += n
    return out if out.any() else None


def plan(state: FleetState, start: date | None, options: PlanOptions, policy: str,
         solve_options: SolveOptions = SolveOptions()) -> dict:
    start = start or state.as_of or datetime.now(UTC).date()
    problem = problem_from_state(state, start, options)
    return make_plan(problem, policy, solve_options, lent_now(problem, state))


def compare(state: FleetState, start: date | None, options: PlanOptions,
            solve_options: SolveOptions = SolveOptions(), policies: list[str] | None = None) -> list[dict]:
    return [plan(state, start, options, name, solve_options) for name in (policies or list(POLICIES))]


def plan_digest(plan: dict) -> str:
    """A short content hash of a plan (timings excluded), to tie recorded proposals to it."""
    body = {k: v for k, v in plan.items() if k != "solve"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


def apply_plan(service: FleetService, plan: dict, actor: str | None = None, *, principal: Principal | None = None,
               policy: GovernancePolicy | None = None) -> list:
    """Record a plan's loans as ``loan_proposed`` and its installs as ``install_planned``, in one
    transaction. Re-applying the same plan writes nothing new (idempotency keys). A service
    ``principal`` is the actor, and its access roles must allow every event (planner of each lender)."""
    digest = plan_digest(plan)
    tag = f"{plan['policy']}:{digest}"
    proposed_on = date.fromisoformat(plan["start"])
    drafts = []
    for i, loan in enumerate(plan["loans"]):
        payload = make_payload("loan_proposed", {
            "loan": f"plan-{digest}-{i + 1}", "lender": loan["lender"], "borrower": loan["borrower"],
            "model": loan["model"], "site": loan["site"], "gpus": max(1, round(loan["gpus"])),
            "start": loan["start"], "end_date": loan["end"], "fee_usd_per_gpu_hour": loan["fee_usd_per_gpu_hour"],
            "plan": tag, "reason": loan.get("reason", "")[:2000],
        })
        drafts.append((payload, f"plan:{digest}:loan:{i}"))
    for i, inst in enumerate(plan["installs"]):
        payload = make_payload("install_planned", {
            "owner": inst["owner"], "model": inst["model"], "site": inst["site"], "gpus": max(1, round(inst["gpus"])),
            "planned_date": inst["date"], "plan": tag,
        })
        drafts.append((payload, f"plan:{digest}:install:{i}"))
    return service.record_many([(p, proposed_on, key) for p, key in drafts], actor, principal=principal, policy=policy)
