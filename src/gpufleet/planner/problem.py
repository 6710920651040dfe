"""The planning problem: a snapshot of the fleet turned into arrays over weeks.

Index sets: cohorts ``c`` (an owner's GPUs of one model), entities ``e`` (users),
sites ``s``, demand records ``d`` and weeks ``t`` (``t = 0`` starts on the as-of date).
Units: GPUs, GPU-weeks, USD, MW; one week is 168 hours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np

from gpufleet.domain.parties import related_parties
from gpufleet.domain.state import FleetState
from gpufleet.domain.types import LotStatus
from gpufleet.errors import InputError

HOURS_PER_WEEK = 168.0
MAX_HORIZON_WEEKS = 520  # ten years of weeks
MAX_LEAD_WEEKS = 104
# Upper bounds of the costs (docs/planning-model.md): far above any real figure (an H100 costs about
# USD 30,000 and rents for about USD 2 an hour), and finite, so that no inf or nan reaches the model.
MAX_COST_USD = 10_000_000.0  # to move or to take back one GPU
MAX_FEE_USD_PER_GPU_HOUR = 10_000.0


@dataclass(frozen=True)
class PlanOptions:
    """Knobs of the model. Costs are USD per GPU; the failure rate is per GPU-week."""

    horizon_weeks: int = 52
    week_days: int = 7
    install_lead_weeks: int = 2
    move_cost_usd: float = 2_000.0
    reclaim_cost_usd: float = 500.0
    failure_rate_per_gpu_week: float = 0.0
    loan_fee_usd_per_gpu_hour: float = 2.0
    server_gpus: int = 8
    integral: bool = False
    extra_lending_pairs: tuple[tuple[str, str], ...] = ()  # explicit agreements (lender, borrower)

    def __post_init__(self):
        for name, low, high in [("horizon_weeks", 1, MAX_HORIZON_WEEKS), ("week_days", 1, 31),
                                ("install_lead_weeks", 0, MAX_LEAD_WEEKS),
                                ("server_gpus", 1, 1024)]:
            if not low <= getattr(self, name) <= high:
                raise InputError(f"must be between {low} and {high}", field=name)
        if not 0.0 <= self.failure_rate_per_gpu_week < 1.0:  # also refuses nan
            raise InputError(f"must be at least 0 and below 1 (a share of GPUs per week), got "
                             f"{self.failure_rate_per_gpu_week}", field="failure_rate_per_gpu_week")
        for name, high in [("move_cost_usd", MAX_COST_USD), ("reclaim_cost_usd", MAX_COST_USD),
                           ("loan_fee_usd_per_gpu_hour", MAX_FEE_USD_PER_GPU_HOUR)]:
            if not 0.0 <= getattr(self, name) <= high:  # also refuses nan and the infinities
                raise InputError(f"must be a finite number from 0 to {high:,.0f}, got {getattr(self, name)}",
                                 field=name)


@dataclass(frozen=True)
class PlanningProblem:
    start: date
    options: PlanOptions
    entities: list[str]
    sites: list[str]
    cohort_owner: np.ndarray  # [C] entity index of each cohort's owner
    cohort_model: list[str]  # [C]
    watts: np.ndarray  # [C] board watts per GPU
    avail: np.ndarray  # [C, T] GPUs held (delivered, expected to be working)
    installed0: np.ndarray  # [C, S] GPUs installed on the as-of date
    slots: np.ndarray  # [S, T] GPU slots online
    mw: np.ndarray  # [S, T] MW online
    pue: np.ndarray  # [S]
    access: np.ndarray  # [E, S] bool: entity may run at site
    permit: np.ndarray  # [E, E] bool: owner may lend to user (diagonal: own use)
    permit_basis: dict[tuple[int, int], str]
    demand_entity: np.ndarray  # [D] entity index
    demand_tier: np.ndarray  # [D]
    demand_value: np.ndarray  # [D] USD per GPU-hour
    demand_gpus: np.ndarray  # [D, T] GPUs wanted (fractional at the record's edges)
    demand_ids: list[str] = field(default_factory=list)
    # open loans on the as-of date: GPUs that return to their lender for free at the start of week t
    # (the first week starting on or after the loan's end_date; week 0 if overdue), per borrower
    loan_ends: np.ndarray | None = None  # [E, T]
    # GPUs of open loans the lender may not reclaim before their notice runs out (notice given on
    # the as-of date): (cohort, borrower) -> [T] GPUs locked in each week
    notice_locked: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    @property
    def weeks(self) -> int:
        return self.avail.shape[1]

    def week_start(self, t: int) -> date:
        return self.start + timedelta(days=self.options.week_days * int(t))


def problem_from_state(state: FleetState, start: date, options: PlanOptions,
                       access: dict[str, list[str]] | None = None) -> PlanningProblem:
    """Build the problem from the ledger's state on ``start``.

    ``access`` maps an entity to the sites it may run at; by default an entity may run at
    the sites it owns and at the sites where it has GPUs installed on ``start``.
    """
    entities = sorted(state.entities)
    sites = sorted(state.sites)
    e_ix = {e: i for i, e in enumerate(entities)}
    s_ix = {s: i for i, s in enumerate(sites)}
    weeks = options.horizon_weeks
    starts = [start + timedelta(days=options.week_days * t) for t in range(weeks)]
    cohorts = sorted({k for k, v in state.acquired.items() if v} | {(lot.owner, lot.model)
                                                                     for lot in state.lots.values()})
    c_ix = {c: i for i, c in enumerate(cohorts)}

    installed0 = np.zeros((len(cohorts), len(sites)))
    for (site, owner, model, _user), n in state.installed.items():
        installed0[c_ix[(owner, model)], s_ix[site]] += n
    held = np.array([state.warehouse[c] + state.installed_owned[c] for c in cohorts], dtype=float)
    arrivals = np.zeros((len(cohorts), weeks))
    for lot in state.lots.values():
        if lot.status is not LotStatus.DELIVERED:
            t = _first_week_on_or_after(starts, lot.planned_date)
            if t < weeks:
                arrivals[c_ix[(lot.owner, lot.model)], t] += lot.gpus
    survive = (1.0 - options.failure_rate_per_gpu_week) ** np.arange(weeks)
    # each batch of GPUs decays from the week it arrives: a convolution with the survival curve
    batches = arrivals.copy()
    batches[:, 0] += held
    avail = np.array([np.convolve(row, survive)[:weeks] for row in batches]).reshape(len(cohorts), weeks)

    slots = np.array([[state.sites[s].slots_online(d) for d in starts] for s in sites], dtype=float).reshape(
        len(sites), weeks)
    mw = np.array([[state.sites[s].mw_online(d) for d in starts] for s in sites], dtype=float).reshape(
        len(sites), weeks)
    pue = np.array([state.sites[s].pue for s in sites], dtype=float)

    acc = np.zeros((len(entities), len(sites)), dtype=bool)
    if access is None:
        for s, site in state.sites.items():
            acc[e_ix[site.owner], s_ix[s]] = True
        for (site, owner, _m, user), n in state.installed.items():
            if n:
                acc[e_ix[user], s_ix[site]] = acc[e_ix[owner], s_ix[site]] = True
    else:
        for e, allowed in access.items():
            for s in allowed:
                acc[_index(e_ix, e, "access"), _index(s_ix, s, "access")] = True

    permit = np.eye(len(entities), dtype=bool)
    basis: dict[tuple[int, int], str] = {}
    for pair, why in related_parties(state).items():
        a, b = sorted(pair)
        for x, y in ((a, b), (b, a)):
            permit[e_ix[x], e_ix[y]] = True
            basis[(e_ix[x], e_ix[y])] = why
    for loan_id, loan in sorted(state.loans.items()):
        if loan.closed_on is None and loan.gpus_out:
            i, j = e_ix[loan.lender], e_ix[loan.borrower]
            permit[i, j] = acc[j, s_ix[loan.site]] = True
            basis.setdefault((i, j), f"the existing loan {loan_id}")
    for lender, borrower in options.extra_lending_pairs:
        i, j = _index(e_ix, lender, "lending pair"), _index(e_ix, borrower, "lending pair")
        permit[i, j] = True
        basis[(i, j)] = f"explicit agreement: {lender} may lend to {borrower}"

    loan_ends = np.zeros((len(entities), weeks))
    locked: dict[tuple[int, int], np.ndarray] = {}
    for loan in state.loans.values():
        if loan.closed_on is not None or not loan.gpus_out:
            continue
        u = e_ix[loan.borrower]
        end_week = _first_week_on_or_after(starts, loan.end_date)
        if end_week < weeks:
            loan_ends[u, end_week] += loan.gpus_out
        free_week = min(end_week, _first_week_on_or_after(starts, start + timedelta(days=loan.reclaim_notice_days)))
        if free_week > 0:
            row = locked.setdefault((c_ix[(loan.lender, loan.model)], u), np.zeros(weeks))
            row[:free_week] += loan.gpus_out

    ids = sorted(state.demand)
    gpus = np.zeros((len(ids), weeks))
    for i, d in enumerate(ids):
        rec = state.demand[d]
        for t, ws in enumerate(starts):
            we = ws + timedelta(days=options.week_days)
            overlap = (min(we, rec.end) - max(ws, rec.start)).days
            if overlap > 0:
                gpus[i, t] = rec.gpus * overlap / options.week_days
    return PlanningProblem(
        start=start, options=options, entities=entities, sites=sites,
        cohort_owner=np.array([e_ix[o] for o, _ in cohorts], dtype=int), cohort_model=[m for _, m in cohorts],
        watts=np.array([state.models[m].watts for _, m in cohorts], dtype=float), avail=avail,
        installed0=installed0, slots=slots, mw=mw, pue=pue, access=acc, permit=permit, permit_basis=basis,
        demand_entity=np.array([e_ix[state.demand[d].entity] for d in ids], dtype=int),
        demand_tier=np.array([state.demand[d].tier for d in ids], dtype=int),
        demand_value=np.array([state.demand[d].value_usd_per_gpu_hour for d in ids], dtype=float),
        demand_gpus=gpus, demand_ids=ids, loan_ends=loan_ends, notice_locked=locked,
    )


def _first_week_on_or_after(starts: list[date], day: date) -> int:
    """The first week starting on or after ``day`` (``len(starts)`` if beyond the horizon)."""
    return next((t for t, ws in enumerate(starts) if ws >= day), len(starts))


def _index(table: dict[str, int], key: str, field_name: str) -> int:
    try:
        return table[key]
    except KeyError:
        raise InputError(f"unknown id '{key}'", field=field_name) from None
