"""Read a solved model back into a plan: KPIs, dated loans, reclaims, installs, moves, prices.

Every plan is checked by :mod:`gpufleet.planner.checker` before it is returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np

from gpufleet.planner.checker import check_plan
from gpufleet.planner.model import Layout, expected_failures
from gpufleet.planner.policies import Decision, get_policy
from gpufleet.planner.problem import PlanningProblem
from gpufleet.planner.solver import SolveOptions

GPU_EPS = 1e-6  # GPUs below this are solver noise


@dataclass(frozen=True)
class Variables:
    """The solution as arrays by block, each ``[items, T]`` (see :class:`Layout`)."""

    inst: np.ndarray
    add: np.ndarray
    rem: np.ndarray
    serve: np.ndarray
    sv: np.ndarray
    recl: np.ndarray
    ret: np.ndarray
    out: np.ndarray

    @classmethod
    def of(cls, lay: Layout, x: np.ndarray) -> Variables:
        def block(name):
            start = lay.offsets[name]
            return np.clip(x[start:start + lay.sizes[name]].reshape(-1, lay.T), 0.0, None)

        return cls(*(block(n) for n in ("inst", "add", "rem", "serve", "sv", "recl", "ret", "out")))


def make_plan(problem: PlanningProblem, policy_name: str, options: SolveOptions = SolveOptions(),
              lent_now: np.ndarray | None = None, weekly: bool = False) -> dict:
    """Solve ``problem`` under a policy and return the documented plan (checked).

    ``weekly`` adds ``served_gpus_by_week``: per entity, the GPUs serving its demand each week.
    """
    decision = get_policy(policy_name).decide(problem, options, lent_now)
    lay = decision.model.layout
    v = Variables.of(lay, decision.solution.x)
    plan = _report(problem, policy_name, decision, v)
    check_plan(problem, lay, v, plan["objective"], lent_now)
    if weekly:
        served = np.zeros((len(problem.entities), lay.T))
        np.add.at(served, problem.demand_entity, v.sv)
        plan["served_gpus_by_week"] = {e: [round(float(x), 3) for x in served[i]]
                                       for i, e in enumerate(problem.entities)}
    return plan


def _report(problem: PlanningProblem, policy: str, decision: Decision, v: Variables) -> dict:
    lay, opts = decision.model.layout, problem.options
    hours = 24.0 * opts.week_days
    value = objective_usd(problem, lay, v)
    return {
        "status": "optimal",
        "policy": policy,
        "objective": value,
        "start": problem.start.isoformat(),
        "weeks": lay.T,
        "week_days": opts.week_days,
        "kpis": _kpis(problem, lay, v, hours),
        "loans": _loans(problem, lay, v),
        "reclaims": _reclaims(problem, lay, v),
        "installs": _per_pair(problem, lay, v.add),
        "moves": _per_pair(problem, lay, v.rem),
        "supply": _supply(problem),
        "failures": _per_pair(problem, lay, v.out, GPU_EPS, 6),
        "shadow_prices": _shadow_prices(problem, decision),
        "solve": {
            "build_s": round(decision.build_s, 4), "solve_s": round(decision.solve_s, 4),
            "rows": decision.model.A.shape[0], "columns": decision.model.A.shape[1],
            "nonzeros": int(decision.model.A.nnz), "stages": decision.stages,
            "mip_gap": decision.solution.mip_gap,
        },
    }


def objective_usd(problem: PlanningProblem, lay: Layout, v: Variables) -> float:
    """Value of served demand minus move and reclaim costs, USD (the max-value objective)."""
    hours = 24.0 * problem.options.week_days
    served = float((v.sv * problem.demand_value[:, None]).sum() * hours)
    return served - problem.options.move_cost_usd * float(v.rem.sum()) - \
        problem.options.reclaim_cost_usd * float(v.recl.sum())


def _kpis(problem: PlanningProblem, lay: Layout, v: Variables, hours: float) -> dict:
    E, names = len(problem.entities), problem.entities
    owner_of_q = problem.cohort_owner[lay.pc[lay.qp]]
    in_use = np.zeros((len(problem.cohort_owner), lay.T))
    np.add.at(in_use, lay.pc[lay.qp], v.serve)
    idle = np.clip(problem.avail - in_use, 0.0, None)
    idle_by = np.bincount(problem.cohort_owner, weights=idle.sum(axis=1), minlength=E)
    served, unserved, value = {}, {}, np.zeros(E)
    for d, e in enumerate(problem.demand_entity):
        tier = str(problem.demand_tier[d])
        s, want = float(v.sv[d].sum()), float(problem.demand_gpus[d].sum())
        served.setdefault(names[e], {}).setdefault(tier, 0.0)
        unserved.setdefault(names[e], {}).setdefault(tier, 0.0)
        served[names[e]][tier] += s
        unserved[names[e]][tier] += max(0.0, want - s)
        value[e] += s * problem.demand_value[d] * hours
    fee = problem.options.loan_fee_usd_per_gpu_hour * hours
    lent = v.serve[lay.ql >= 0].sum(axis=1)
    np.add.at(value, owner_of_q[lay.ql >= 0], lent * fee)
    np.add.at(value, lay.qu[lay.ql >= 0], -lent * fee)
    np.add.at(value, problem.cohort_owner[lay.pc], -v.rem.sum(axis=1) * problem.options.move_cost_usd)
    np.add.at(value, lay.lu, -v.recl.sum(axis=1) * problem.options.reclaim_cost_usd)
    return {
        "idle_gpu_weeks": {names[e]: round(float(idle_by[e]), 3) for e in range(E)} | {
            "total": round(float(idle_by.sum()), 3)},
        "served_gpu_weeks": _rounded(served),
        "unserved_gpu_weeks": _rounded(unserved),
        "value_usd": {names[e]: round(float(value[e]), 2) for e in range(E)},
    }


def _loans(problem: PlanningProblem, lay: Layout, v: Variables) -> list[dict]:
    """Each run of consecutive weeks with GPUs lent at one site becomes one dated loan."""
    out = []
    for q in np.flatnonzero(lay.ql >= 0):
        series = v.serve[q]
        c, s, u = lay.pc[lay.qp[q]], lay.ps[lay.qp[q]], lay.qu[q]
        for start, end in _runs(series > 0.5):
            lender = problem.cohort_owner[c]
            gpus = float(series[start:end].max())
            out.append({
                "lender": problem.entities[lender], "borrower": problem.entities[u],
                "model": problem.cohort_model[c], "site": problem.sites[s], "gpus": round(gpus, 3),
                "start": problem.week_start(start).isoformat(), "end": problem.week_start(end).isoformat(),
                "last_day": (problem.week_start(end) - timedelta(days=1)).isoformat(),
                "gpu_weeks": round(float(series[start:end].sum()), 3),
                "fee_usd_per_gpu_hour": problem.options.loan_fee_usd_per_gpu_hour,
                "reason": _reason(problem, lender, u, start, end, gpus),
            })
    return sorted(out, key=lambda r: (r["start"], r["lender"], r["borrower"], r["site"]))


def _reason(problem: PlanningProblem, lender: int, borrower: int, start: int, end: int, gpus: float) -> str:
    values = problem.demand_value[problem.demand_entity == borrower]
    top = f"up to USD {values.max():.2f}/GPU-hour" if len(values) else "its demand"
    basis = problem.permit_basis.get((lender, borrower), "a permitted lending pair")
    return (f"{problem.entities[lender]} has {gpus:,.0f} GPUs it cannot use itself from "
            f"{problem.week_start(start)} to {problem.week_start(end)}, while {problem.entities[borrower]} has "
            f"unmet demand worth {top}; allowed because {basis}.")


def _reclaims(problem: PlanningProblem, lay: Layout, v: Variables) -> list[dict]:
    out = []
    for l_, t in zip(*np.nonzero(v.recl > 0.5), strict=True):
        out.append({
            "lender": problem.entities[problem.cohort_owner[lay.lc[l_]]], "borrower": problem.entities[lay.lu[l_]],
            "model": problem.cohort_model[lay.lc[l_]], "week": int(t), "date": problem.week_start(t).isoformat(),
            "gpus": round(float(v.recl[l_, t]), 3),
            "cost_usd": round(float(v.recl[l_, t]) * problem.options.reclaim_cost_usd, 2),
            # GPUs of open loans whose reclaim notice (given on the as-of date) still runs this week:
            # the model does not hold the plan to notice periods, so the lender must wait for these
            "under_notice_gpus": round(min(float(v.recl[l_, t]), float(locked[t])), 3)
            if (locked := problem.notice_locked.get((int(lay.lc[l_]), int(lay.lu[l_])))) is not None else 0.0,
        })
    return out


def _per_pair(problem: PlanningProblem, lay: Layout, values: np.ndarray, above: float = 0.5,
              digits: int = 3) -> list[dict]:
    out = []
    for i, t in zip(*np.nonzero(values > above), strict=True):
        c = lay.pc[i]
        out.append({"owner": problem.entities[problem.cohort_owner[c]], "model": problem.cohort_model[c],
                    "site": problem.sites[lay.ps[i]], "week": int(t), "date": problem.week_start(t).isoformat(),
                    "gpus": round(float(values[i, t]), digits)})
    return out


def _supply(problem: PlanningProblem) -> list[dict]:
    """Per cohort and week: GPUs held (``A[c,t]``) and expected to fail (``f * A[c,max(t-1,0)]``), the
    bound of the failures row; with ``failures`` (the GPUs that did leave their site), a plan's
    conservation can be checked from its JSON alone."""
    expected = expected_failures(problem)
    return [{"owner": problem.entities[o], "model": m, "available_gpus": [round(float(x), 6) for x in problem.avail[c]],
             "expected_failures": [round(float(x), 6) for x in expected[c]]}
            for c, (o, m) in enumerate(zip(problem.cohort_owner, problem.cohort_model, strict=True))]


def _shadow_prices(problem: PlanningProblem, decision: Decision) -> dict:
    """USD per GPU-week of one more slot at a site, or one more GPU for an owner (LP duals)."""
    if decision.solution.mip_gap is not None or not decision.solution.duals_valid:
        return {"site_slots": [], "owner_gpus": [], "note": "no duals for an integral plan, or without crossover"}
    fam, duals, T = decision.model.families, decision.solution.row_duals, decision.model.layout.T
    a, b = fam["site_slots"]
    slots = -duals[a:b].reshape(len(problem.sites), T)
    a, b = fam["holding"]
    gpus = -duals[a:b].reshape(len(problem.cohort_owner), T)
    return {
        "site_slots": [{"site": problem.sites[s], "week": int(t), "date": problem.week_start(t).isoformat(),
                        "usd_per_gpu_week": round(float(slots[s, t]), 2)}
                       for s, t in zip(*np.nonzero(np.abs(slots) > 1e-6), strict=True)],
        "owner_gpus": [{"owner": problem.entities[problem.cohort_owner[c]], "model": problem.cohort_model[c],
                        "week": int(t), "date": problem.week_start(t).isoformat(),
                        "usd_per_gpu_week": round(float(gpus[c, t]), 2)}
                       for c, t in zip(*np.nonzero(np.abs(gpus) > 1e-6), strict=True)],
    }


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def _rounded(nested: dict) -> dict:
    return {k: {t: round(x, 3) for t, x in v.items()} for k, v in nested.items()}

