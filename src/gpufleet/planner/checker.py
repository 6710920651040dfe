"""An independent check of every plan, in plain loops over the problem's own data.

It shares no code with the model builder: it re-derives each rule from the problem
(access, permissions, capacity, power, burn-in, demand) and recomputes the objective.
"""

from __future__ import annotations

from gpufleet.errors import PlanCheckFailed

TOL = 1e-5  # GPUs; solver tolerances are about 1e-7 relative


def check_plan(problem, lay, v, objective_usd: float, lent_now=None) -> None:
    """Raise :class:`PlanCheckFailed` listing every violated rule (at most 20)."""
    problems: list[str] = []
    T, L = lay.T, problem.options.install_lead_weeks
    scale = max(1.0, float(problem.avail.max(initial=0.0)))
    tol = TOL * scale

    def fail(message: str) -> None:
        if len(problems) < 20:
            problems.append(message)

    for name in ("inst", "add", "rem", "serve", "sv", "recl", "ret", "out"):
        if (getattr(v, name) < -tol).any():
            fail(f"negative {name}")
    for i in range(len(lay.pc)):
        c, s = lay.pc[i], lay.ps[i]
        before = problem.installed0[c, s]
        for t in range(T):
            expected = before + v.add[i][t] - v.rem[i][t] - v.out[i][t]
            if abs(v.inst[i][t] - expected) > tol:
                fail(f"installs at {problem.sites[s]} week {t} do not add up")
            before = v.inst[i][t]
    rate = problem.options.failure_rate_per_gpu_week
    for c in range(len(problem.cohort_owner)):
        for t in range(T):
            failed = sum(v.out[i][t] for i in range(len(lay.pc)) if lay.pc[i] == c)
            if failed > rate * problem.avail[c][max(0, t - 1)] + tol:
                fail(f"more GPUs leave as failed in week {t} than the failure rate expects")
            held = sum(v.inst[i][t] for i in range(len(lay.pc)) if lay.pc[i] == c)
            if held > problem.avail[c][t] + tol:
                fail(f"{problem.entities[problem.cohort_owner[c]]} installs {held:.1f} GPUs in week {t} "
                     f"but holds {problem.avail[c][t]:.1f}")
    for s in range(len(problem.sites)):
        for t in range(T):
            gpus = kw = 0.0
            for i in range(len(lay.pc)):
                if lay.ps[i] == s:
                    gpus += v.inst[i][t]
                    kw += v.inst[i][t] * problem.watts[lay.pc[i]] * problem.pue[s] / 1e3
            if gpus > problem.slots[s][t] + tol:
                fail(f"site {problem.sites[s]} week {t}: {gpus:.1f} GPUs in {problem.slots[s][t]:.0f} slots")
            if kw > problem.mw[s][t] * 1e3 * (1 + 1e-7) + tol:
                fail(f"site {problem.sites[s]} week {t}: {kw / 1e3:.3f} MW over {problem.mw[s][t]:.3f} MW")
    for q in range(len(lay.qp)):
        i, u = lay.qp[q], lay.qu[q]
        owner, s = problem.cohort_owner[lay.pc[i]], lay.ps[i]
        used = any(x > tol for x in v.serve[q])
        if used and not problem.access[u][s]:
            fail(f"{problem.entities[u]} runs at {problem.sites[s]} without access")
        if used and not problem.permit[owner][u]:
            fail(f"{problem.entities[owner]} lends to {problem.entities[u]} without permission")
    for i in range(len(lay.pc)):
        for t in range(T):
            serving = sum(v.serve[q][t] for q in range(len(lay.qp)) if lay.qp[q] == i)
            burning = sum(v.add[i][k] for k in range(max(0, t - L + 1), t + 1))
            if serving > v.inst[i][t] - burning + tol:
                fail(f"GPUs at {problem.sites[lay.ps[i]]} serve in week {t} before their burn-in ends")
    for e in range(len(problem.entities)):
        for t in range(T):
            got = sum(v.serve[q][t] for q in range(len(lay.qp)) if lay.qu[q] == e)
            counted = sum(v.sv[d][t] for d in range(len(problem.demand_ids)) if problem.demand_entity[d] == e)
            if abs(got - counted) > tol:
                fail(f"{problem.entities[e]} is served {got:.1f} GPUs in week {t} but {counted:.1f} count as demand")
    for d in range(len(problem.demand_ids)):
        for t in range(T):
            if v.sv[d][t] > problem.demand_gpus[d][t] + tol:
                fail(f"demand {problem.demand_ids[d]} served beyond what it asks in week {t}")
    _check_reclaims(problem, lay, v, lent_now, tol, fail)
    hours = 24.0 * problem.options.week_days
    value = 0.0
    for d in range(len(problem.demand_ids)):
        for t in range(T):
            value += v.sv[d][t] * problem.demand_value[d] * hours
    value -= problem.options.move_cost_usd * sum(sum(row) for row in v.rem)
    value -= problem.options.reclaim_cost_usd * sum(sum(row) for row in v.recl)
    if abs(value - objective_usd) > 1e-6 * max(1.0, abs(value)):
        fail(f"objective recomputes to {value:,.2f} USD, not {objective_usd:,.2f}")
    if problems:
        raise PlanCheckFailed("the plan fails the independent check: " + "; ".join(problems))


def _check_reclaims(problem, lay, v, lent_now, tol, fail) -> None:
    """A loan shrinks only by a counted reclaim, or for free as far as the borrower's demand falls
    (in week 0: as far as the GPUs lent on the as-of date exceed the borrower's demand) or as an
    open loan reaches its end_date."""
    for l_ in range(len(lay.lc)):
        previous = 0.0 if lent_now is None else lent_now[l_]
        for t in range(lay.T):
            now = sum(v.serve[q][t] for q in range(len(lay.qp)) if lay.ql[q] == l_)
            if previous - now > v.recl[l_][t] + v.ret[l_][t] + tol:
                fail(f"a loan shrinks in week {t} without its reclaim being counted")
            previous = now
    for u in range(len(problem.entities)):
        lent_to_u = sum(lent_now[l_] for l_ in range(len(lay.lc)) if lay.lu[l_] == u) if lent_now is not None else 0.0
        for t in range(lay.T):
            # week 0: GPUs lent on the as-of date beyond the borrower's demand come back for free
            wanted_before = lent_to_u if t == 0 else sum(
                problem.demand_gpus[d][t - 1] for d in range(len(problem.demand_ids)) if problem.demand_entity[d] == u)
            wanted_now = sum(problem.demand_gpus[d][t] for d in range(len(problem.demand_ids))
                             if problem.demand_entity[d] == u)
            returned = sum(v.ret[l_][t] for l_ in range(len(lay.lc)) if lay.lu[l_] == u)
            ending = 0.0 if problem.loan_ends is None else problem.loan_ends[u][t]  # loans at their end_date
            if returned > max(0.0, wanted_before - wanted_now) + ending + tol:
                fail(f"{problem.entities[u]} returns loans for free in week {t} beyond its fall in demand")
