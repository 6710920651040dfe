"""Planning policies: one signature, one registry.

Each policy turns a :class:`PlanningProblem` into the final model and its solution,
solving one or more stages. Stages are lexicographic: a later stage keeps what an
earlier one achieved, less :func:`~gpufleet.planner.model.stage_slack` (1e-6 + 1e-9 x the
value for an LP, 1e-4 + 1e-7 x the value for a MILP), and optimizes the next goal. The
earlier stage's solution satisfies the later stage's rows, so it seeds a MILP's incumbent:
a later stage is never infeasible.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from gpufleet.errors import InputError
from gpufleet.planner.model import LinearModel, build
from gpufleet.planner.problem import PlanningProblem
from gpufleet.planner.solver import Solution, SolveOptions, solve


@dataclass
class Decision:
    model: LinearModel
    solution: Solution
    build_s: float = 0.0
    solve_s: float = 0.0
    stages: list[str] = field(default_factory=list)


class Policy(Protocol):
    name: str
    summary: str

    def decide(self, problem: PlanningProblem, options: SolveOptions, lent_now: np.ndarray | None) -> Decision: ...


POLICIES: dict[str, Policy] = {}


def register(cls):
    POLICIES[cls.name] = cls()
    return cls


def get_policy(name: str) -> Policy:
    try:
        return POLICIES[name]
    except KeyError:
        raise InputError(f"unknown policy '{name}' (known: {', '.join(POLICIES)})", field="policy") from None


def solve_stage(decision: Decision | None, name: str, problem: PlanningProblem, options: SolveOptions,
           **build_args) -> Decision:
    started = time.perf_counter()
    model = build(problem, **build_args)
    built = time.perf_counter() - started
    # the previous stage's point (without its z column, the last one) is feasible here
    start = decision.solution.x[:model.A.shape[1]] if decision and len(decision.solution.x) else None
    solution = solve(model, options, start)
    previous = decision or Decision(model, solution)
    return Decision(model, solution, previous.build_s + built, previous.solve_s + solution.solve_s,
                    [*(decision.stages if decision else []), name])


def own_served(problem: PlanningProblem, decision: Decision) -> np.ndarray:
    """GPUs of each entity's demand served, per week: ``[E, T]``."""
    lay = decision.model.layout
    sv = decision.solution.x[lay.offsets["sv"]:lay.offsets["sv"] + lay.sizes["sv"]].reshape(-1, lay.T)
    out = np.zeros((len(problem.entities), lay.T))
    np.add.at(out, problem.demand_entity, sv)
    return out


def smallest_share(decision: Decision) -> float:
    """``z`` of a max-min share stage (its model's last column): the smallest share of demand met."""
    return float(decision.solution.x[-1])


@register
class Hold:
    name = "hold"
    summary = "no loans: every owner uses only its own GPUs (the baseline)"

    def decide(self, problem, options, lent_now=None):
        return solve_stage(None, "max value without loans", problem, options, allow_loans=False, lent_now=lent_now)


@register
class MaxValue:
    name = "max-value"
    summary = "the most value of served demand, net of move and reclaim costs"

    def decide(self, problem, options, lent_now=None):
        return solve_stage(None, "max value", problem, options, lent_now=lent_now)


@register
class OwnerFirst:
    name = "owner-first"
    summary = "each owner keeps every GPU-week of its own demand that it serves without loans; only surplus is lent"

    def decide(self, problem, options, lent_now=None):
        first = solve_stage(None, "owners alone (hold)", problem, options, allow_loans=False, lent_now=lent_now)
        return solve_stage(first, "max value, owners kept whole", problem, options,
                      min_served=own_served(problem, first), lent_now=lent_now)


@register
class Fair:
    name = "fair"
    summary = "the largest equal share of demand met for every entity, then the most value"

    def decide(self, problem, options, lent_now=None):
        first = solve_stage(None, "max-min share", problem, options, maximize_share=True, lent_now=lent_now)
        share = smallest_share(first)
        return solve_stage(first, f"max value, every share >= {share:.4f}", problem, options, share_floor=share,
                      lent_now=lent_now)
