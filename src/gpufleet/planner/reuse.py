"""Supply samples of a plan: the base problem built once, each sample re-solved with new bounds only.

A sample changes what the planner reads as bounds and right-hand sides, never the model's structure:
GPUs held per cohort and week (``holding`` rows and the ``failures`` rows derived from them), slots and
MW online per site (``site_slots``, ``site_power``), demand (the ``sv`` columns' upper bounds and the
``free_returns`` rows). So the LP of each policy stage is built and passed to HiGHS once per process
(:class:`~gpufleet.planner.solver.Resolver`) and each sample only changes bounds (docs/sweeps.md).
Units: GPUs, days, weeks of ``options.week_days`` days, USD.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import date

import numpy as np

from gpufleet.domain.state import FleetState
from gpufleet.domain.types import ClaimMetric
from gpufleet.domain.views import claim_actuals
from gpufleet.errors import InputError
from gpufleet.planner import uncertainty as unc
from gpufleet.planner.model import LinearModel, build, demand_drop, expected_failures, stage_slack
from gpufleet.planner.plan import Variables, _kpis
from gpufleet.planner.problem import PlanningProblem
from gpufleet.planner.solver import Resolver, SolveOptions

SWEEP_POLICIES = ("hold", "max-value", "owner-first")  # fair's rows' coefficients depend on demand
CLAIM_TOLERANCE_GPUS = 0.5  # served GPUs are LP values: a claim of N is met from N - 0.5


@dataclass(frozen=True)
class Claims:
    """The claims still open on the start date, as arrays ``[K]``."""

    ids: list[str]
    metric: list[str]
    entity: np.ndarray  # index into problem.entities
    model: list[str | None]
    target: np.ndarray
    week: np.ndarray  # the week holding the deadline (active_gpus)
    deadline_day: np.ndarray  # days after the start
    period_day: np.ndarray  # days after the start of period_start (-inf: none)
    spent: np.ndarray  # USD already delivered in the claim's period on the start date


@dataclass(frozen=True)
class SupplyBase:
    """What a supply sample needs, picklable (sent to each worker once). Days count from ``problem.start``."""

    problem: PlanningProblem
    policy: str
    lent_now: np.ndarray | None
    held: np.ndarray  # [C] GPUs delivered on the start date
    lot_ids: list[str]
    lot_cohort: np.ndarray  # [L]
    lot_gpus: np.ndarray  # [L]
    lot_usd: np.ndarray  # [L] purchase value
    lot_day: np.ndarray  # [L] planned delivery, days (<= 0: due now)
    lot_targets: list[list[int]]  # [L] cohorts a redirected lot may go to
    lot_redirect_p: np.ndarray  # [L]
    lot_delay: unc.Slip
    step_site: np.ndarray  # [K] site index
    step_day: np.ndarray  # [K] online date, days
    step_slots: np.ndarray  # [K]
    step_mw: np.ndarray  # [K]
    step_future: np.ndarray  # [K] bool: not online on the start date (these slip)
    step_slip: list[unc.Slip]  # one per future step
    failures: unc.Failures
    demand: list[unc.DemandRange]  # per entity
    claims: Claims


def supply_base(state: FleetState, problem: PlanningProblem, policy: str, lent_now: np.ndarray | None,
                cfg: unc.SweepConfig) -> SupplyBase:
    """The sample inputs for ``problem`` (built from ``state`` on ``problem.start``) under ``cfg``."""
    if policy not in SWEEP_POLICIES:
        raise InputError(f"a sweep supports {', '.join(SWEEP_POLICIES)}, not '{policy}' (its model's "
                         "coefficients change with demand)", field="policy")
    for name in cfg.demand:
        if name not in problem.entities:
            raise InputError(f"unknown entity '{name}'", field=f"demand.{name}")
    start = problem.start
    cohorts = {(problem.entities[o], m): c for c, (o, m) in enumerate(zip(problem.cohort_owner,
                                                                           problem.cohort_model, strict=True))}
    held = np.array([state.warehouse[k] + state.installed_owned[k] for k in cohorts], dtype=float)
    lots = unc.undelivered(state)
    parties = unc.candidate_parties(state)
    redirect = unc.redirect_probabilities(state, cfg.redirection)
    targets = [[cohorts[(p, state.lots[x].model)] for p in parties[state.lots[x].owner]
                if (p, state.lots[x].model) in cohorts] for x in lots]
    s_ix = {s: i for i, s in enumerate(problem.sites)}
    steps = [(s_ix[s], st) for s in problem.sites for _k, st in sorted(state.sites[s].steps.items())]
    dists = unc.site_distributions(state, start, cfg.site_slip)
    future = np.array([st.online_date > start for _s, st in steps], dtype=bool)
    return SupplyBase(
        problem=problem, policy=policy, lent_now=lent_now, held=held, lot_ids=lots,
        lot_cohort=np.array([cohorts[(state.lots[x].owner, state.lots[x].model)] for x in lots], dtype=int),
        lot_gpus=np.array([state.lots[x].gpus for x in lots], dtype=float),
        lot_usd=np.array([state.lots[x].gpus * state.lots[x].unit_price_usd for x in lots], dtype=float),
        lot_day=np.array([(state.lots[x].planned_date - start).days for x in lots], dtype=int),
        lot_targets=targets, lot_redirect_p=np.array([redirect[state.lots[x].owner] for x in lots], dtype=float),
        lot_delay=unc.lot_delay_distribution(state, cfg.lot_delay),
        step_site=np.array([s for s, _st in steps], dtype=int),
        step_day=np.array([(st.online_date - start).days for _s, st in steps], dtype=int),
        step_slots=np.array([st.slots for _s, st in steps], dtype=float),
        step_mw=np.array([st.mw for _s, st in steps], dtype=float), step_future=future,
        step_slip=[dists[problem.sites[s]] for (s, _st), f in zip(steps, future, strict=True) if f],
        failures=cfg.failures, demand=[cfg.demand.get(e, unc.DemandRange()) for e in problem.entities],
        claims=open_claims(state, problem),
    )


def open_claims(state: FleetState, problem: PlanningProblem) -> Claims:
    """The claims whose deadline is on or after the start (those before it are already decided)."""
    start, wd = problem.start, problem.options.week_days
    ids = sorted(k for k, c in state.claims.items() if c.deadline >= start)
    e_ix = {e: i for i, e in enumerate(problem.entities)}
    cs = [state.claims[k] for k in ids]
    spent = claim_actuals(state, start, ids)
    return Claims(ids, [str(c.metric) for c in cs], np.array([e_ix[c.claimant] for c in cs], dtype=int),
                  [c.model for c in cs], np.array([c.target for c in cs], dtype=float),
                  np.array([(c.deadline - start).days // wd for c in cs], dtype=int),
                  np.array([(c.deadline - start).days for c in cs], dtype=float),
                  np.array([(c.period_start - start).days if c.period_start else -math.inf for c in cs], dtype=float),
                  np.array([spent[k] if c.metric == ClaimMetric.GPU_SPEND_USD else 0.0 for k, c in zip(ids, cs,
                                                                                                        strict=True)]))


def horizon_for(state: FleetState, start: date, weeks: int, week_days: int = 7) -> int:
    """``weeks``, or more so that the plan reaches every open claim's deadline."""
    last = max([(c.deadline - start).days // week_days + 1 for c in state.claims.values() if c.deadline >= start],
               default=0)
    return max(weeks, last)


# -- one sample's inputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SupplyVariant:
    """A sample's problem and what it drew (days, per lot and step)."""

    problem: PlanningProblem
    lot_arrival_day: np.ndarray  # [L]
    lot_final_cohort: np.ndarray  # [L] -1: redirected to a party without a cohort of that model (gone)
    step_day: np.ndarray  # [K]
    draw: unc.SupplyDraw


def variant(base: SupplyBase, draw: unc.SupplyDraw) -> SupplyVariant:
    """The base problem with the drawn slips, delays, redirections, repairs and demand (numpy only)."""
    p, wd = base.problem, base.problem.options.week_days
    T = p.weeks
    arrival = np.maximum(base.lot_day, 0) + draw.lot_delay_days.astype(int)
    final = base.lot_cohort.copy()
    for i in np.flatnonzero(draw.lot_redirected):
        options = base.lot_targets[i]
        final[i] = options[draw.lot_to[i] % len(options)] if options else -1
    week = -(-arrival // wd)  # the first week starting on or after the arrival
    batches = np.zeros((len(base.held), T))
    batches[:, 0] = base.held
    keep = (week < T) & (final >= 0)
    np.add.at(batches, (final[keep], week[keep]), base.lot_gpus[keep])
    rate = p.options.failure_rate_per_gpu_week
    if rate:
        survive = (1.0 - rate) ** np.arange(T)
        avail = np.array([np.convolve(row, survive)[:T] for row in batches]).reshape(batches.shape)
    else:
        avail = np.cumsum(batches, axis=1)
    avail *= 1.0 - draw.repair_share
    step_day = base.step_day.copy()
    step_day[base.step_future] += draw.step_slip_days.astype(int)
    online = step_day[:, None] <= np.arange(T)[None, :] * wd  # [K, T]
    slots, mw = np.zeros((len(p.sites), T)), np.zeros((len(p.sites), T))
    np.add.at(slots, base.step_site, online * base.step_slots[:, None])
    np.add.at(mw, base.step_site, online * base.step_mw[:, None])
    demand = p.demand_gpus * draw.demand_factor[p.demand_entity][:, None]
    problem = dataclasses.replace(p, avail=avail, slots=slots, mw=mw, demand_gpus=demand)
    return SupplyVariant(problem, arrival, final, step_day, draw)


# -- the reusable policy --------------------------------------------------------------------------------


class ReusablePolicy:
    """A sweep policy's stages built once for ``base.problem`` and re-solved per variant (bounds only)."""

    def __init__(self, base: SupplyBase, options: SolveOptions = SolveOptions()):
        p, lent = base.problem, base.lent_now
        self.base = base
        self.lent = np.zeros(0) if lent is None else lent
        first = build(p, allow_loans=base.policy == "max-value", lent_now=lent)
        self.stages: list[tuple[LinearModel, Resolver]] = [(first, Resolver(first, options))]
        if base.policy == "owner-first":
            served = _entity_sum(p, self._own_served(first, self.stages[0][1].first.x))
            second = build(p, min_served=served, lent_now=lent)
            self.stages.append((second, Resolver(second, options)))

    @staticmethod
    def _own_served(model: LinearModel, x: np.ndarray) -> np.ndarray:
        lay = model.layout
        sv = x[lay.offsets["sv"]:lay.offsets["sv"] + lay.sizes["sv"]].reshape(-1, lay.T)
        return sv  # [D, T]; per entity: _entity_sum

    def solve(self, problem: PlanningProblem) -> tuple[LinearModel, np.ndarray]:
        """The final stage's model and solution for a variant of the base problem."""
        min_served = None
        x = np.zeros(0)
        for model, resolver in self.stages:
            bounds = stage_bounds(model, problem, self.lent, min_served)
            x = resolver.solve(*bounds).x
            min_served = _entity_sum(problem, self._own_served(model, x))
        return self.stages[-1][0], x


def _entity_sum(p: PlanningProblem, sv: np.ndarray) -> np.ndarray:
    out = np.zeros((len(p.entities), sv.shape[1]))
    np.add.at(out, p.demand_entity, sv)
    return out


def stage_bounds(model: LinearModel, p: PlanningProblem, lent_now: np.ndarray,
                 min_served: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """Row and column bounds of ``model`` for the variant ``p`` (same structure as the base problem)."""
    lay, fam = model.layout, model.families
    row_lo, row_hi, col_hi = model.row_lo.copy(), model.row_hi.copy(), model.col_hi.copy()
    lent = lent_now if len(lent_now) else np.zeros(len(lay.lc))
    for name, values in (("holding", p.avail), ("failures", expected_failures(p)), ("site_slots", p.slots),
                         ("site_power", p.mw * 1e3), ("free_returns", demand_drop(p, lay, lent))):
        a, b = fam[name]
        row_hi[a:b] = values.ravel()
    if "owner_first" in fam and min_served is not None:
        a, b = fam["owner_first"]
        row_lo[a:b] = min_served.ravel() - stage_slack(min_served.ravel(), p.options.integral)
    s0 = lay.offsets["sv"]
    col_hi[s0:s0 + lay.sizes["sv"]] = p.demand_gpus.ravel()
    return row_lo, row_hi, model.col_lo, col_hi


def outcome(base: SupplyBase, v: SupplyVariant, model: LinearModel, x: np.ndarray) -> dict:
    """A sample's figures: active GPUs per entity and week, idle GPU-weeks, value, delays, claims."""
    p, lay = v.problem, model.layout
    var = Variables.of(lay, x)
    kpis = _kpis(p, lay, var, 24.0 * p.options.week_days)
    models = sorted(set(p.cohort_model))
    m_of_q = np.array([models.index(p.cohort_model[c]) for c in lay.pc[lay.qp]], dtype=int)
    active = np.zeros((len(p.entities), len(models), lay.T))
    np.add.at(active, (lay.qu, m_of_q), var.serve)
    owner, E = p.cohort_owner[base.lot_cohort], len(p.entities)
    gpus_by = np.bincount(owner, weights=base.lot_gpus, minlength=E).astype(float)
    delay = np.bincount(owner, weights=base.lot_gpus * v.draw.lot_delay_days, minlength=E).astype(float)
    lost = np.bincount(owner, weights=base.lot_gpus * (v.lot_final_cohort != base.lot_cohort),
                       minlength=E).astype(float)
    return {
        "active": np.round(active.sum(axis=1), 3).tolist(),
        "idle_gpu_weeks": [kpis["idle_gpu_weeks"][e] for e in p.entities],
        "value_usd": [kpis["value_usd"][e] for e in p.entities],
        "lot_delay_days": np.round(np.divide(delay, gpus_by, out=np.zeros_like(delay), where=gpus_by > 0), 3).tolist(),
        "redirected_gpus": lost.tolist(),
        "site_online_day": [int(min((d for d, s, f in zip(v.step_day, base.step_site, base.step_future, strict=True)
                                     if s == i and f), default=-1)) for i in range(len(p.sites))],
        "claim_actual": claim_values(base, v, active, models).tolist(),
    }


def claim_values(base: SupplyBase, v: SupplyVariant, active: np.ndarray, models: list[str]) -> np.ndarray:
    """Each open claim's metric in the sample: GPUs of the model serving the claimant in the deadline's
    week (``active_gpus``), or USD of its lots delivered in the claim's period (``gpu_spend_usd``)."""
    c, p = base.claims, v.problem
    out = np.zeros(len(c.ids))
    owner = np.where(v.lot_final_cohort >= 0, p.cohort_owner[np.maximum(v.lot_final_cohort, 0)], -1)
    lot_model = np.array([p.cohort_model[k] for k in base.lot_cohort], dtype=object)
    for k in range(len(c.ids)):
        if c.metric[k] == ClaimMetric.ACTIVE_GPUS:
            m = slice(None) if c.model[k] is None else models.index(c.model[k]) if c.model[k] in models else None
            out[k] = 0.0 if m is None else float(active[c.entity[k], m, min(c.week[k], p.weeks - 1)].sum())
        else:
            mine = (owner == c.entity[k]) & (v.lot_arrival_day <= c.deadline_day[k]) & \
                   (v.lot_arrival_day >= c.period_day[k])
            if c.model[k] is not None:
                mine &= lot_model == c.model[k]
            out[k] = c.spent[k] + float(base.lot_usd[mine].sum())
    return np.round(out, 3)


def claim_met(base: SupplyBase, actual: np.ndarray) -> np.ndarray:
    """Whether each claim's sampled value reaches its target (GPU counts: to within 0.5 GPU)."""
    slack = np.array([CLAIM_TOLERANCE_GPUS if m == ClaimMetric.ACTIVE_GPUS else 0.0 for m in base.claims.metric])
    return actual >= base.claims.target - slack
