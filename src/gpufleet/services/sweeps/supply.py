"""Supply risk: Monte Carlo samples of the fleet's supply, each re-planned (``gpufleet sweep supply``).

A sweep starts from the ledger as known at a date; each sample redraws site slips, lot delays and
redirections, repairs and demand (:mod:`gpufleet.planner.uncertainty`), re-solves the plan with
the model built once (:mod:`gpufleet.planner.reuse`), and records per entity the active GPUs by
week, idle GPU-weeks, value and delays, and each open claim's value and whether it is met.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from gpufleet.domain.state import FleetState
from gpufleet.domain.views import claim_checks
from gpufleet.errors import InputError, PlanError
from gpufleet.planner import reuse
from gpufleet.planner import uncertainty as unc
from gpufleet.planner.problem import PlanOptions, problem_from_state
from gpufleet.services.planning import lent_now
from gpufleet.services.sweeps.runner import Sweep, digest

Z95 = 1.959963984540054


def read_config(path: Path | None) -> unc.SweepConfig:
    """The YAML distributions file (``--config``), or the defaults; errors name the field."""
    if path is None:
        return unc.SweepConfig()
    from gpufleet.services.scenario_io import _read_yaml

    data, lines = _read_yaml(Path(path))
    return config_from(data, str(path), lines)


def config_from(data: object, where: str = "config", lines: dict | None = None) -> unc.SweepConfig:
    try:
        return unc.SweepConfig.model_validate(data if data is not None else {})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        field = ".".join(str(x) for x in loc) or "config"
        line = (lines or {}).get(loc)
        raise InputError(first["msg"], field=field, location=f"{where}:{line}" if line else where) from None


def supply_sweep(state: FleetState, start: date, *, cfg: unc.SweepConfig | None = None, samples: int = 200,
                 seed: int = 0, policy: str = "owner-first", options: PlanOptions | None = None,
                 access: dict[str, list[str]] | None = None, ledger: dict | None = None) -> Sweep:
    """The sweep of ``state`` (the ledger as of and known at ``start``) from ``start``; ``access`` as
    :func:`~gpufleet.planner.problem.problem_from_state` reads it; ``ledger`` (the head it was read at:
    ``seq``, ``hash``) is recorded in a results folder's ``sweep.json`` with :func:`describe`."""
    cfg = cfg or unc.SweepConfig()
    options = options or PlanOptions()
    weeks = reuse.horizon_for(state, start, options.horizon_weeks, options.week_days)
    if weeks > options.horizon_weeks:
        from dataclasses import replace

        options = replace(options, horizon_weeks=weeks)
    problem = problem_from_state(state, start, options, access)
    base = reuse.supply_base(state, problem, policy, lent_now(problem, state), cfg)
    about = describe(base) | ({"ledger": ledger} if ledger else {})
    return Sweep("supply", base, digest(base), seed, samples, about=about)


def prepare(base: reuse.SupplyBase) -> reuse.ReusablePolicy:
    """Per worker process, once: the policy's LPs built and passed to HiGHS."""
    return reuse.ReusablePolicy(base)


def draw(base: reuse.SupplyBase, seed: int, index: int) -> unc.SupplyDraw:
    """Sample ``index``'s draws (the same on any worker)."""
    return unc.draw_supply(unc.sample_rng(seed, index), base.step_slip, base.lot_delay, base.lot_redirect_p,
                           base.failures, base.demand)


def sample(policy: reuse.ReusablePolicy, seed: int, index: int) -> dict:
    """One sample's row (without the metadata columns)."""
    base = policy.base
    v = reuse.variant(base, draw(base, seed, index))
    try:
        model, x = policy.solve(v.problem)
    except PlanError as exc:
        return {"status": f"no plan: {exc.message}"[:300], **_empty(base)}
    row = reuse.outcome(base, v, model, x)
    return {"status": "ok", **row, "claim_met": reuse.claim_met(base, np.array(row["claim_actual"])).tolist()}


def _empty(base: reuse.SupplyBase) -> dict:
    return {"active": [], "idle_gpu_weeks": [], "value_usd": [], "lot_delay_days": [], "redirected_gpus": [],
            "site_online_day": [], "claim_actual": [], "claim_met": []}


# -- summaries -------------------------------------------------------------------------------------------------


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def describe(base: reuse.SupplyBase) -> dict:
    """What a summary needs besides the rows (JSON): the start, weeks, entities and open claims; stored in
    ``sweep.json`` so that a results folder is summarized again without the ledger (:mod:`.stored`)."""
    p, c = base.problem, base.claims
    return {"start": p.start.isoformat(), "weeks": p.weeks, "week_days": p.options.week_days,
            "policy": base.policy, "entities": list(p.entities),
            "claims": [{"claim": k, "metric": str(c.metric[i]), "target": float(c.target[i]),
                        "claimant": p.entities[int(c.entity[i])]} for i, k in enumerate(c.ids)]}


def summary(base: reuse.SupplyBase, rows: list[dict]) -> dict:
    """P10/P50/P90 per entity and week of active GPUs; distributions of idle GPU-weeks, value and delays;
    each open claim's probability of being met with its 95% Wilson interval."""
    return summarize(describe(base), rows)


def summarize(about: dict, rows: list[dict]) -> dict:
    """:func:`summary` from :func:`describe`'s record of the sweep (a fresh run's, or a stored folder's)."""
    start = date.fromisoformat(about["start"])
    ok = [r for r in rows if r["status"] == "ok"]
    out: dict = {"start": about["start"], "samples": len(rows), "failed_samples": len(rows) - len(ok),
                 "policy": about["policy"], "entities": []}
    if not ok:
        out["claims"] = []
        return out
    active = np.array([r["active"] for r in ok])  # [N, E, T]
    q = np.percentile(active, [10, 50, 90], axis=0)
    dates = [(start + timedelta(days=about["week_days"] * t)).isoformat() for t in range(about["weeks"])]
    for e, name in enumerate(about["entities"]):
        figures = {k: _spread(np.array([r[k][e] for r in ok])) for k in
                   ("idle_gpu_weeks", "value_usd", "lot_delay_days", "redirected_gpus")}
        out["entities"].append({"entity": name, "dates": dates, "active_p10": q[0, e].round(1).tolist(),
                                "active_p50": q[1, e].round(1).tolist(), "active_p90": q[2, e].round(1).tolist(),
                                **figures})
    out["claims"] = claim_summary(about["claims"], ok)
    return out


def _spread(values: np.ndarray) -> dict:
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return {"mean": round(float(values.mean()), 3), "p10": round(float(p10), 3), "p50": round(float(p50), 3),
            "p90": round(float(p90), 3)}


def claim_summary(claims: list[dict], ok: list[dict]) -> list[dict]:
    """Per open claim (:func:`describe`'s ``claims``): the share of samples meeting it, its Wilson interval
    and the spread of its value."""
    out = []
    for k, claim in enumerate(claims):
        met = int(sum(bool(r["claim_met"][k]) for r in ok))
        lo, hi = wilson(met, len(ok))
        values = np.array([r["claim_actual"][k] for r in ok])
        out.append({"claim": claim["claim"], "metric": claim["metric"], "target": claim["target"],
                    "claimant": claim["claimant"], "probability": round(met / len(ok), 4),
                    "ci95": [round(lo, 4), round(hi, 4)], "samples": len(ok),
                    "value_p10": round(float(np.percentile(values, 10)), 1),
                    "value_p50": round(float(np.percentile(values, 50)), 1),
                    "value_p90": round(float(np.percentile(values, 90)), 1)})
    return out


@dataclass(frozen=True)
class ClaimView:
    """Where a claim's probability comes from: a sweep from its stated date, or the record (decided)."""

    claim: str
    stated_on: date
    deadline: date
    decided: str | None  # met | missed when the deadline is before the sweep's start


def claim_dates(state: FleetState, start: date) -> tuple[list[ClaimView], list[date]]:
    """Every recorded claim and the distinct stated dates to sweep from ("as known at the claim's date");
    claims whose deadline has passed on ``start`` are decided by the record."""
    checks = {c.claim: c.status for c in claim_checks(state, start)}
    views = [ClaimView(k, c.stated_on, c.deadline, checks[k] if c.deadline < start else None)
             for k, c in sorted(state.claims.items())]
    return views, sorted({v.stated_on for v in views if v.stated_on < v.deadline and v.stated_on < start})


def claim_views(state: FleetState, start: date, open_claims: list[dict]) -> list[dict]:
    """Every claim of ``state`` as seen from ``start``: decided by the record (probability 1 or 0) when its
    deadline is before ``start``, else its row of ``open_claims`` (a summary's), with its deadline."""
    views, _ = claim_dates(state, start)
    by_id, out = {c["claim"]: c for c in open_claims}, []
    for v in views:
        claim = state.claims[v.claim]
        if v.decided is not None:
            met = v.decided == "met"
            out.append({"claim": v.claim, "known_at": start.isoformat(), "deadline": v.deadline.isoformat(),
                        "probability": 1.0 if met else 0.0, "ci95": [1.0, 1.0] if met else [0.0, 0.0],
                        "decided": v.decided, "metric": claim.metric, "target": claim.target,
                        "claimant": claim.claimant})
        elif v.claim in by_id:
            out.append(by_id[v.claim] | {"known_at": start.isoformat(), "deadline": v.deadline.isoformat()})
    return out


def date_sweeps(state: FleetState, start: date, state_at: Callable[[date], FleetState], *,
                with_claim_dates: bool = True, **options) -> list[tuple[date, Sweep]]:
    """The sweep from ``start`` (``state``: the ledger as of and known at it) and, with ``with_claim_dates``, one
    from each date a claim was stated on, with the ledger as known then (``state_at(day)``); ``options`` as
    :func:`supply_sweep`'s. Run them as one submission (:func:`~.runner.run_all`); :func:`claims_by_view`
    reads their summaries."""
    days = claim_dates(state, start)[1] if with_claim_dates else []
    return [(start, supply_sweep(state, start, **options))] + [(at, supply_sweep(state_at(at), at, **options))
                                                               for at in days]


def claims_by_view(state: FleetState, start: date, summaries: list[tuple[date, dict]]) -> list[dict]:
    """Every claim as seen from ``start`` (the first summary's; decided by the record when due before it), then
    each claim again as known at the date it was stated on (the summary of that date's sweep)."""
    views, _ = claim_dates(state, start)
    (_, main), *rest = summaries
    out = claim_views(state, start, main["claims"])
    for at, body in rest:
        stated = {v.claim for v in views if v.stated_on == at}
        out += [c | {"known_at": at.isoformat(), "deadline": state.claims[c["claim"]].deadline.isoformat()}
                for c in body["claims"] if c["claim"] in stated]
    return out
