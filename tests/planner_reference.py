"""A second, independent route to the planner's optimum: PuLP + CBC, written from the maths.

This module shares no code with ``gpufleet.planner.model``. It reads only the
:class:`~gpufleet.planner.problem.PlanningProblem`'s arrays and writes the model of
``docs/planning-model.md`` with plain loops, one row at a time:

* install pairs ``(c, s)``: site ``s`` is reachable by the owner of ``c`` (the owner, or
  someone it may lend to, has access to ``s``), or ``c`` is installed at ``s`` on the as-of date;
* serve triples ``(c, s, u)``: ``permit[owner(c), u]`` and ``access[u, s]``;
* loan pairs ``(c, u)``: ``u`` is not the owner of ``c`` and some triple ``(c, ·, u)`` exists.

Rows (``A`` = avail, ``I0`` = installed0, ``L`` = install lead weeks)::

    install_chain   inst[c,s,t] = inst[c,s,t-1] + add[c,s,t] - rem[c,s,t] - out[c,s,t]   (inst[c,s,-1] = I0[c,s])
    failures        sum_s out[c,s,t] <= f * A[c,max(t-1,0)]      (failed GPUs leave for free)
    holding         sum_s inst[c,s,t] <= A[c,t]
    site_slots      sum_c inst[c,s,t] <= slots[s,t]
    site_power      sum_c watts[c] * pue[s] / 1e3 * inst[c,s,t] <= MW[s,t] * 1e3        (kW)
    burn_in         sum_u serve[c,s,u,t] <= inst[c,s,t] - sum_{k=t-L+1..t} add[c,s,k]
    demand_balance  sum_{c,s} serve[c,s,u,t] = sum_{d of u} sv[d,t],   0 <= sv[d,t] <= D[d,t]
    reclaims        lend[c,u,t-1] - lend[c,u,t] <= recl[c,u,t] + ret[c,u,t]   (lend = sum_s serve; lend[-1] = lent_now)
    free_returns    sum_c ret[c,u,t] <= max(0, D_u[t-1] - D_u[t]) + ends[u,t]
                    (D_u = u's demand; D_u[-1] = lent_now to u; ends: open loans reaching their end_date)
    whole_servers   serve[c,s,u,t] = server_gpus * n[c,s,u,t], n integer   (lent triples; integral only)

Objective (maximized): ``sum v_d * h * sv - move_cost * sum rem - reclaim_cost * sum recl``,
minus the solver's tie-break of ``TIE_BREAK_USD`` per GPU of ``add`` and per GPU-week of lent
``serve``. :func:`reference_objective` returns it *with* the tie-break, so it equals
``-Solution.objective`` of the HiGHS max-value (or, with ``allow_loans=False``, hold) model.

The lexicographic stages of ``owner-first`` and ``fair`` add, with the earlier stage's value
given (:class:`Stage`), less ``KEEP_TOL * max(1, value)`` (the earlier value comes from a solver,
within its tolerances: kept exactly, it can be a hair out of reach)::

    owner_first     sum_{c of e, s} serve[c,s,e,t] >= min_served[e,t]          (own GPUs serving their owner)
    fair_share      sum_{d of e, t} sv[d,t] >= z * sum_{d of e, t} D[d,t]      (entities with demand; z <= 1)

and ``fair``'s first stage maximizes ``z`` itself (no value, no tie-break). These solves run
CBC at tolerances of 1e-9, a hundred times tighter than HiGHS's defaults.

Each family is written once, over a table of values that holds either PuLP variables (to build
the model) or floats (to check CBC's answer). CBC's ``Optimal`` alone is not trusted (it can say so
for a stopped LP): every row and bound is re-checked at the returned point.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np
import pulp

from gpufleet.planner.problem import PlanningProblem

TIE_BREAK_USD = 0.01  # per GPU installed and per GPU-week lent; docs/planning-model.md, "Objective"
FEASIBILITY_TOL = 1e-6  # GPUs, relative to the largest quantity in the problem (at least 1)
KEEP_TOL = 1e-6  # relative: how far below an earlier stage's value a later stage may go

Row = tuple[str, Any, str, float]  # (family, left-hand side, "<=", ">=" or "==", right-hand side)


class ReferenceSolveError(AssertionError):
    """The reference solve failed, or CBC returned a point that does not satisfy the model."""


@dataclass(frozen=True)
class IndexSets:
    pairs: list[tuple[int, int]]  # (c, s)
    triples: list[tuple[int, int, int]]  # (c, s, u)
    loans: list[tuple[int, int]]  # (c, u), sorted: the order of model.py's loan pairs


@dataclass(frozen=True)
class Table:
    """One value per variable: PuLP variables while building, floats once solved."""

    inst: dict[tuple[int, int, int], Any]  # (c, s, t)
    add: dict[tuple[int, int, int], Any]
    rem: dict[tuple[int, int, int], Any]
    serve: dict[tuple[int, int, int, int], Any]  # (c, s, u, t)
    sv: dict[tuple[int, int], Any]  # (d, t)
    recl: dict[tuple[int, int, int], Any]  # (c, u, t)
    ret: dict[tuple[int, int, int], Any]  # (c, u, t)
    out: dict[tuple[int, int, int], Any]  # (c, s, t)

    def values(self) -> Table:
        return Table(*({k: float(x.varValue or 0.0) for k, x in getattr(self, name).items()}
                       for name in ("inst", "add", "rem", "serve", "sv", "recl", "ret", "out")))


@dataclass(frozen=True)
class ReferenceSolution:
    objective: float  # max-value objective including the tie-break (= -HiGHS min objective); z for max_share
    value_usd: float  # the plan's ``objective``: served value minus move and reclaim costs
    status: str
    x: Table


@dataclass(frozen=True)
class Stage:
    """What a later lexicographic stage keeps of an earlier one (see the module's docstring)."""

    min_served: np.ndarray | None = None  # [E, T] owner-first
    share_floor: float | None = None  # fair, stage 2
    max_share: bool = False  # fair, stage 1: maximize z instead of value
    fixed_share: float | None = None  # no objective: is every share >= this feasible?

    @property
    def exact(self) -> bool:
        return self.min_served is not None or self.share_floor is not None or self.max_share \
            or self.fixed_share is not None


def index_sets(problem: PlanningProblem) -> IndexSets:
    """Install pairs, serve triples and loan pairs, from permit, access and installed0."""
    pairs, triples, loans = [], [], set()
    for c, s in product(range(len(problem.cohort_owner)), range(len(problem.sites))):
        owner = int(problem.cohort_owner[c])
        users = [u for u in range(len(problem.entities)) if problem.permit[owner, u] and problem.access[u, s]]
        if users or problem.installed0[c, s] > 0:
            pairs.append((c, s))
        triples += [(c, s, u) for u in users]
        loans |= {(c, u) for u in users if u != owner}
    return IndexSets(pairs, triples, sorted(loans))


def reference_objective(problem: PlanningProblem, allow_loans: bool = True,
                        lent_now: np.ndarray | None = None) -> float:
    """The max-value optimum (hold's with ``allow_loans=False``), tie-break included, by PuLP + CBC."""
    return solve_reference(problem, allow_loans=allow_loans, lent_now=lent_now).objective


def solve_reference(problem: PlanningProblem, allow_loans: bool = True, lent_now: np.ndarray | None = None,
                    time_limit_s: float | None = None, stage: Stage = Stage()) -> ReferenceSolution:
    """Build the model, solve it with CBC and verify the point it returns.

    ``lent_now`` follows :attr:`IndexSets.loans` (loan pairs sorted by cohort, then borrower), the
    order of ``model.Layout.lc / lu`` too. ``problem.options.integral`` makes it a MILP.
    With ``stage.fixed_share``, an infeasible model raises :class:`ReferenceInfeasible`.
    """
    sets = index_sets(problem)
    lent_now = _lent_now(lent_now, sets)
    x, whole = _variables(problem, sets, allow_loans)
    prob = pulp.LpProblem("gpufleet_reference", pulp.LpMaximize)
    z = pulp.LpVariable("z", lowBound=0, upBound=1) if stage.max_share else None
    value, tie = _objective(problem, sets, x)
    if stage.fixed_share is None:
        prob += z if z is not None else value - tie
    rows = (*_rows(problem, sets, x, lent_now), *whole, *_stage_rows(problem, sets, x, stage, z))
    for family, lhs, sense, rhs in rows:
        prob += (lhs <= rhs) if sense == "<=" else ((lhs == rhs) if sense == "==" else (lhs >= rhs))
    args = {"msg": False} | ({"timeLimit": time_limit_s} if time_limit_s else {})
    if stage.exact:
        args |= {"options": ["primalTolerance 1e-9", "dualTolerance 1e-9", "integerTolerance 1e-9"],
                 "gapRel": 1e-9}
    prob.solve(pulp.PULP_CBC_CMD(**args))
    status = pulp.LpStatus[prob.status]
    if status == "Infeasible" and stage.fixed_share is not None:
        raise ReferenceInfeasible(f"no plan gives every entity a share of at least {stage.fixed_share}")
    if status != "Optimal":
        raise ReferenceSolveError(f"CBC ended with status {status!r}")
    solved = x.values()
    share = float(z.varValue or 0.0) if z is not None else None
    check_point(problem, sets, solved, allow_loans, lent_now, stage, share)
    value, tie = _objective(problem, sets, solved)
    if stage.fixed_share is None:
        _agree(prob, share if z is not None else value - tie)
    return ReferenceSolution(share if z is not None else float(value - tie), float(value), status, solved)


class ReferenceInfeasible(ReferenceSolveError):
    """CBC proved the model infeasible."""


def _stage_rows(problem: PlanningProblem, sets: IndexSets, x: Table, stage: Stage, z: Any) -> Iterator[Row]:
    owner = problem.cohort_owner
    if stage.min_served is not None:
        for e, t in product(range(len(problem.entities)), range(problem.weeks)):
            own = [v for (c, _s, u, t2), v in x.serve.items() if u == e and owner[c] == e and t2 == t]
            kept = float(stage.min_served[e, t])
            yield "owner_first", _total(own), ">=", kept - KEEP_TOL * max(1.0, kept)
    share = z if z is not None else (stage.share_floor if stage.fixed_share is None else stage.fixed_share)
    if share is None:
        return
    kept = z is None and stage.fixed_share is None  # a floor from an earlier stage, not z or a probe
    for e in range(len(problem.entities)):
        mine = [d for d in range(len(problem.demand_ids)) if problem.demand_entity[d] == e]
        wanted = sum(float(problem.demand_gpus[d].sum()) for d in mine)
        if wanted > 0:
            got = _total(x.sv[d, t] for d in mine for t in range(problem.weeks))
            yield "fair_share", got - wanted * share, ">=", -KEEP_TOL * max(1.0, wanted) if kept else 0.0


def _lent_now(lent_now: np.ndarray | None, sets: IndexSets) -> np.ndarray:
    out = np.zeros(len(sets.loans)) if lent_now is None else np.asarray(lent_now, dtype=float)
    if out.shape != (len(sets.loans),):
        raise ValueError(f"lent_now has shape {out.shape}; the problem has {len(sets.loans)} loan pairs")
    return out


def _variables(problem: PlanningProblem, sets: IndexSets, allow_loans: bool) -> tuple[Table, list[Row]]:
    """Every variable (>= 0, sv <= demand, lent serve 0 without loans), and the whole_servers rows."""
    weeks, owner = range(problem.weeks), problem.cohort_owner

    def var(name: str, key: tuple, upper: float | None = None, cat: str = pulp.LpContinuous) -> pulp.LpVariable:
        return pulp.LpVariable(f"{name}_" + "_".join(map(str, key)), lowBound=0, upBound=upper, cat=cat)

    chains = [(c, s, t) for (c, s), t in product(sets.pairs, weeks)]
    serve = {(c, s, u, t): var("serve", (c, s, u, t), None if allow_loans or u == owner[c] else 0.0)
             for (c, s, u), t in product(sets.triples, weeks)}
    x = Table(inst={k: var("inst", k) for k in chains}, add={k: var("add", k) for k in chains},
              rem={k: var("rem", k) for k in chains}, serve=serve,
              sv={(d, t): var("sv", (d, t), float(problem.demand_gpus[d, t]))
                  for d, t in product(range(len(problem.demand_ids)), weeks)},
              recl={(c, u, t): var("recl", (c, u, t)) for (c, u), t in product(sets.loans, weeks)},
              ret={(c, u, t): var("ret", (c, u, t)) for (c, u), t in product(sets.loans, weeks)},
              out={k: var("out", k) for k in chains})
    whole = []
    if problem.options.integral:
        whole = [("whole_servers", v - problem.options.server_gpus * var("n", k, cat=pulp.LpInteger), "==", 0.0)
                 for k, v in serve.items() if k[2] != owner[k[0]]]
    return x, whole


def _objective(problem: PlanningProblem, sets: IndexSets, x: Table) -> tuple[Any, Any]:
    """(value of served demand less move and reclaim costs, the tie-break), in USD."""
    opts, owner = problem.options, problem.cohort_owner
    hours = 24.0 * opts.week_days
    value = _total(float(problem.demand_value[d]) * hours * v for (d, _t), v in x.sv.items()) \
        - opts.move_cost_usd * _total(x.rem.values()) - opts.reclaim_cost_usd * _total(x.recl.values())
    lent = _total(v for (c, _s, u, _t), v in x.serve.items() if u != owner[c])
    return value, TIE_BREAK_USD * (_total(x.add.values()) + lent)


def _rows(problem: PlanningProblem, sets: IndexSets, x: Table, lent_now: np.ndarray) -> Iterator[Row]:
    for family in (_install_chain, _failures, _burn_in, _holding, _site_capacity, _demand_balance):
        yield from family(problem, sets, x)
    yield from _free_returns(problem, sets, x, lent_now)
    yield from _reclaims(problem, sets, x, lent_now)


def _install_chain(problem: PlanningProblem, sets: IndexSets, x: Table) -> Iterator[Row]:
    for (c, s), t in product(sets.pairs, range(problem.weeks)):
        before = x.inst[c, s, t - 1] if t > 0 else float(problem.installed0[c, s])
        yield "install_chain", x.inst[c, s, t] - before - x.add[c, s, t] + x.rem[c, s, t] + x.out[c, s, t], "==", 0.0


def _failures(problem: PlanningProblem, sets: IndexSets, x: Table) -> Iterator[Row]:
    rate = problem.options.failure_rate_per_gpu_week
    for c, t in product(range(len(problem.cohort_owner)), range(problem.weeks)):
        here = [x.out[c, s, t] for (c2, s) in sets.pairs if c2 == c]
        if here:
            yield "failures", _total(here), "<=", float(rate * problem.avail[c, max(t - 1, 0)])


def _free_returns(problem: PlanningProblem, sets: IndexSets, x: Table, lent_now: np.ndarray) -> Iterator[Row]:
    for u, t in product(range(len(problem.entities)), range(problem.weeks)):
        returns = [x.ret[c, u2, t] for (c, u2) in sets.loans if u2 == u]
        if returns:
            mine = [d for d in range(len(problem.demand_ids)) if problem.demand_entity[d] == u]
            lent_to_u = sum(float(lent_now[k]) for k, (_c, u2) in enumerate(sets.loans) if u2 == u)
            before = lent_to_u if t == 0 else sum(float(problem.demand_gpus[d, t - 1]) for d in mine)
            now = sum(float(problem.demand_gpus[d, t]) for d in mine)
            ending = 0.0 if problem.loan_ends is None else float(problem.loan_ends[u, t])  # at their end_date
            yield "free_returns", _total(returns), "<=", max(0.0, before - now) + ending


def _burn_in(problem: PlanningProblem, sets: IndexSets, x: Table) -> Iterator[Row]:
    lead = problem.options.install_lead_weeks
    users = {(c, s): [u for (c2, s2, u) in sets.triples if (c2, s2) == (c, s)] for c, s in sets.pairs}
    for (c, s), t in product(sets.pairs, range(problem.weeks)):
        serving = _total(x.serve[c, s, u, t] for u in users[c, s])
        burning = _total(x.add[c, s, k] for k in range(max(0, t - lead + 1), t + 1))
        yield "burn_in", serving - x.inst[c, s, t] + burning, "<=", 0.0


def _holding(problem: PlanningProblem, sets: IndexSets, x: Table) -> Iterator[Row]:
    for c, t in product(range(len(problem.cohort_owner)), range(problem.weeks)):
        here = [x.inst[c, s, t] for (c2, s) in sets.pairs if c2 == c]
        if here:
            yield "holding", _total(here), "<=", float(problem.avail[c, t])


def _site_capacity(problem: PlanningProblem, sets: IndexSets, x: Table) -> Iterator[Row]:
    for s, t in product(range(len(problem.sites)), range(problem.weeks)):
        here = [(c, x.inst[c, s, t]) for (c, s2) in sets.pairs if s2 == s]
        if here:
            yield "site_slots", _total(v for _c, v in here), "<=", float(problem.slots[s, t])
            kw = _total(float(problem.watts[c] * problem.pue[s] / 1e3) * v for c, v in here)
            yield "site_power", kw, "<=", float(problem.mw[s, t] * 1e3)


def _demand_balance(problem: PlanningProblem, sets: IndexSets, x: Table) -> Iterator[Row]:
    for u, t in product(range(len(problem.entities)), range(problem.weeks)):
        got = [x.serve[c, s, u, t] for (c, s, u2) in sets.triples if u2 == u]
        counted = [x.sv[d, t] for d in range(len(problem.demand_ids)) if problem.demand_entity[d] == u]
        if got or counted:
            yield "demand_balance", _total(got) - _total(counted), "==", 0.0


def _reclaims(problem: PlanningProblem, sets: IndexSets, x: Table, lent_now: np.ndarray) -> Iterator[Row]:
    for k, (c, u) in enumerate(sets.loans):
        sites = [s for (c2, s, u2) in sets.triples if (c2, u2) == (c, u)]
        before: Any = float(lent_now[k])
        for t in range(problem.weeks):
            now = _total(x.serve[c, s, u, t] for s in sites)
            yield "reclaims", before - now - x.recl[c, u, t] - x.ret[c, u, t], "<=", 0.0
            before = now


def check_point(problem: PlanningProblem, sets: IndexSets, x: Table, allow_loans: bool, lent_now: np.ndarray,
                stage: Stage = Stage(), share: float | None = None) -> None:
    """Check every bound and row at the solved point; raise :class:`ReferenceSolveError` naming what fails."""
    scale = max(1.0, float(np.abs(problem.avail).max(initial=0.0)), float(np.abs(problem.demand_gpus).max(initial=0.0)))
    tol, owner, g = FEASIBILITY_TOL * scale, problem.cohort_owner, problem.options.server_gpus
    bad = [f"{name}{key} = {v:g} < 0" for name in ("inst", "add", "rem", "serve", "sv", "recl", "ret", "out")
           for key, v in getattr(x, name).items() if v < -tol]
    bad += [f"sv{key} above demand" for key, v in x.sv.items() if v > problem.demand_gpus[key] + tol]
    for (c, s, u, t), v in x.serve.items():
        if u != owner[c] and not allow_loans and abs(v) > tol:
            bad.append(f"serve{(c, s, u, t)} lends with loans off")
        if u != owner[c] and problem.options.integral and abs(v / g - round(v / g)) * g > tol:
            bad.append(f"serve{(c, s, u, t)} is not whole servers")
    for family, lhs, sense, rhs in (*_rows(problem, sets, x, lent_now), *_stage_rows(problem, sets, x, stage, share)):
        slack = tol * (1e3 if family == "site_power" else problem.weeks if family == "fair_share" else 1.0)
        if (lhs > rhs + slack) if sense == "<=" else (lhs < rhs - slack) if sense == ">=" else (abs(lhs - rhs) > slack):
            bad.append(f"{family}: {lhs:g} {sense} {rhs:g}")
    if bad:
        raise ReferenceSolveError(f"CBC's point violates the model ({len(bad)} checks): " + "; ".join(bad[:20]))


def _agree(prob: pulp.LpProblem, objective: float) -> None:
    """CBC's own objective must be the worth of the point it returned."""
    reported = pulp.value(prob.objective)
    if reported is None:  # an objective without terms: PuLP writes a valueless `__dummy` variable for it
        if any(coefficient for coefficient in prob.objective.values()):
            raise ReferenceSolveError("CBC returned no value for the objective")
        reported = prob.objective.constant
    if abs(float(reported) - objective) > 1e-6 * max(1.0, abs(objective)):
        raise ReferenceSolveError(f"CBC reports objective {reported}, but the point it returned is worth {objective}")


def _total(items: Iterable[Any]) -> Any:
    """Sum numbers or PuLP terms (``lpSum`` is linear-time where ``sum`` of expressions is not)."""
    items = list(items)
    if any(isinstance(v, (pulp.LpVariable, pulp.LpAffineExpression)) for v in items):
        return pulp.lpSum(items)
    return float(sum(items))
