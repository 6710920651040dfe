"""What is uncertain about a fleet's supply, as distributions, and draws of it (pure: numpy, no I/O).

A supply sample redraws, from a :class:`FleetState` known at some date (docs/sweeps.md):

* each future capacity step's extra slip, days (per site: a zero-inflated log-normal);
* each undelivered lot's delivery delay, days (one zero-inflated log-normal for all lots), and
  whether it is redirected to a related party (a probability per owner);
* the share of GPUs away for repair (failure rate x repair time, per sample);
* each entity's demand, as a multiplier (uniform in a range; 1 where none is given).

Every distribution has a documented default (:class:`SweepConfig`); ``fit: ledger`` refines the
defaults with what the ledger recorded (a conjugate-style shrinkage: the default counts as
``weight`` pseudo-observations). Seeds: sample ``i`` of a sweep with seed ``s`` draws from
``SeedSequence(s, spawn_key=(i,))``, which is ``SeedSequence(s).spawn(n)[i]``: any sample can
be drawn alone, on any worker, and gets the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from gpufleet.domain.parties import related_parties
from gpufleet.domain.state import FleetState
from gpufleet.domain.types import LotStatus

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Slip(_Strict):
    """A zero-inflated log-normal, days: 0 with probability ``1 - p_slip``, else
    ``exp(N(ln median_days, sigma))`` rounded to whole days."""

    p_slip: Share = 0.3
    median_days: Positive = 60.0
    sigma: Positive = 0.8
    weight: Positive = Field(2.0, description="pseudo-observations the default counts for when fitting")


class SiteSlips(_Strict):
    fit: Literal["ledger", "prior"] = "ledger"
    prior: Slip = Slip()
    sites: dict[str, Slip] = Field(default_factory=dict, description="per-site distributions, used as given")


class LotDelays(_Strict):
    fit: Literal["ledger", "prior"] = "ledger"
    prior: Slip = Slip(p_slip=0.3, median_days=21.0, sigma=0.7)


class Redirection(_Strict):
    fit: Literal["ledger", "prior"] = "ledger"
    probability: Share = Field(0.02, description="default chance that an undelivered lot goes to a related party")
    weight: Positive = Field(10.0, description="pseudo-lots the default counts for when fitting")
    parties: dict[str, Share] = Field(default_factory=dict, description="per-owner probabilities, used as given")


class Failures(_Strict):
    """GPU failures at the rate of Llama 3's training run (h100-2024-facts.md: 419 interruptions on
    16,384 H100 in 54 days, 58.7% GPU-related), each GPU away for a log-normal repair time."""

    interruptions: Positive = 419.0
    gpus: Positive = 16_384.0
    days: Positive = 54.0
    gpu_share: Share = 0.587
    repair_median_days: Positive = Field(3.0, description="assumption: no sourced figure (docs/sweeps.md)")
    repair_sigma: Positive = 0.5


class DemandRange(_Strict):
    low: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] = 1.0
    high: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] = 1.0


class SweepConfig(_Strict):
    """The YAML of ``gpufleet sweep supply --config`` (every field optional)."""

    version: Literal[1] = 1
    site_slip: SiteSlips = SiteSlips()
    lot_delay: LotDelays = LotDelays()
    redirection: Redirection = Redirection()
    failures: Failures = Failures()
    demand: dict[str, DemandRange] = Field(default_factory=dict, description="per-entity demand multipliers")


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of a sweep seeded ``seed`` (= SeedSequence(seed).spawn(n)[index])."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def draw_slips(rng: np.random.Generator, slip: Slip, n: int) -> np.ndarray:
    """``n`` whole-day slips of one zero-inflated log-normal (two vectorized draws, always both)."""
    hit = rng.random(n) < slip.p_slip
    days = np.rint(np.exp(rng.normal(math.log(slip.median_days), slip.sigma, n)))
    return np.where(hit, days, 0.0)


def fit_slip(prior: Slip, observed_days: list[int]) -> Slip:
    """Shrink ``prior`` towards observed slips: p = (k + w p0) / (n + w); ln median the weighted mean
    of the k positive slips' logs and the prior's (weight w); sigma stays the prior's."""
    n, positive = len(observed_days), [d for d in observed_days if d > 0]
    k, w = len(positive), prior.weight
    p = (k + w * prior.p_slip) / (n + w)
    log_median = (sum(math.log(d) for d in positive) + w * math.log(prior.median_days)) / (k + w)
    return prior.model_copy(update={"p_slip": p, "median_days": math.exp(log_median)})


def step_slips(state: FleetState, start: date) -> dict[str, list[int]]:
    """Per site, the slips (days) of the steps whose outcome is known on ``start``: online by then,
    or already moved from their first planned date. Steps still ahead and not moved say nothing."""
    out: dict[str, list[int]] = {}
    for site_id, site in sorted(state.sites.items()):
        out[site_id] = [(s.online_date - s.planned_date).days for s in site.steps.values()
                        if s.online_date <= start or s.online_date != s.planned_date]
    return out


def site_distributions(state: FleetState, start: date, cfg: SiteSlips) -> dict[str, Slip]:
    """Each site's slip distribution: given in ``cfg.sites``; else the prior, refined (``fit: ledger``)
    first with every site's history (pooled), then with the site's own."""
    history = step_slips(state, start)
    pooled = cfg.prior if cfg.fit == "prior" else fit_slip(cfg.prior, [d for v in history.values() for d in v])
    return {s: cfg.sites.get(s) or (pooled if cfg.fit == "prior" else fit_slip(pooled, history[s]))
            for s in sorted(state.sites)}


def lot_delay_distribution(state: FleetState, cfg: LotDelays) -> Slip:
    """Lot delays, refined with each lot's recorded delay: delivered - first planned date (delivered
    lots), or planned - first planned date (undelivered lots that were rescheduled)."""
    if cfg.fit == "prior":
        return cfg.prior
    seen = []
    for lot in state.lots.values():
        first = lot.first_planned_date or lot.planned_date
        if lot.delivered_on is not None:
            seen.append(max(0, (lot.delivered_on - first).days))
        elif lot.planned_date != first:
            seen.append(max(0, (lot.planned_date - first).days))
    return fit_slip(cfg.prior, seen)


def redirect_probabilities(state: FleetState, cfg: Redirection) -> dict[str, float]:
    """Per owner, the chance an undelivered lot of its goes to a related party: given, or
    (lots that left it + w p0) / (its lots + w) with ``fit: ledger``, else the default."""
    out = {}
    for owner in sorted(state.entities):
        if owner in cfg.parties:
            out[owner] = cfg.parties[owner]
            continue
        if cfg.fit == "prior":
            out[owner] = cfg.probability
            continue
        bought = [lot for lot in state.lots.values() if (lot.original_owner or lot.owner) == owner]
        left = sum(lot.owner != owner for lot in bought)
        out[owner] = (left + cfg.weight * cfg.probability) / (len(bought) + cfg.weight)
    return out


def repair_share(rng: np.random.Generator, cfg: Failures) -> float:
    """The share of GPUs away for repair in one sample: a failure rate (Gamma around the sourced
    count, its Poisson uncertainty) x a log-normal repair time; both per GPU-day, so a share."""
    events = cfg.interruptions * cfg.gpu_share
    rate = rng.gamma(events, 1.0 / (cfg.gpus * cfg.days))  # failures per GPU-day
    repair = math.exp(rng.normal(math.log(cfg.repair_median_days), cfg.repair_sigma))
    return float(min(1.0, rate * repair))


@dataclass(frozen=True)
class SupplyDraw:
    """One sample's draws; arrays are in the order of the caller's lists."""

    step_slip_days: np.ndarray  # [steps]
    lot_delay_days: np.ndarray  # [lots]
    lot_redirected: np.ndarray  # [lots] bool
    lot_to: np.ndarray  # [lots] index into each lot's candidate parties (if redirected)
    repair_share: float
    demand_factor: np.ndarray  # [entities]


def draw_supply(rng: np.random.Generator, step_slips_: list[Slip], lot_delay: Slip, lot_redirect_p: np.ndarray,
                failures: Failures, demand: list[DemandRange]) -> SupplyDraw:
    """Draw a sample, always in the same order and sizes (so sample ``i`` is the same anywhere)."""
    steps = np.array([draw_slips(rng, s, 1)[0] for s in step_slips_]) if step_slips_ else np.zeros(0)
    delays = draw_slips(rng, lot_delay, len(lot_redirect_p))
    redirected = rng.random(len(lot_redirect_p)) < lot_redirect_p
    to = rng.integers(0, 1 << 30, len(lot_redirect_p))
    share = repair_share(rng, failures)
    factor = np.array([rng.uniform(d.low, d.high) if d.high > d.low else d.low for d in demand])
    return SupplyDraw(steps, delays, redirected, to, share, factor)


def candidate_parties(state: FleetState) -> dict[str, list[str]]:
    """Per entity, its related parties (sorted): where one of its lots may be redirected."""
    out: dict[str, list[str]] = {e: [] for e in sorted(state.entities)}
    for pair in related_parties(state):
        a, b = sorted(pair)
        out[a].append(b)
        out[b].append(a)
    return {e: sorted(set(v)) for e, v in out.items()}


def undelivered(state: FleetState) -> list[str]:
    """Ids of the lots not delivered, sorted: the lots a sample delays or redirects."""
    return sorted(k for k, lot in state.lots.items() if lot.status is not LotStatus.DELIVERED)
