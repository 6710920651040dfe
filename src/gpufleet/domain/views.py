"""Read-only views of a :class:`FleetState`: holdings, sites, loans, transfers, claims.

These are the figures ``gpufleet status`` and the demo print. All counts are GPUs;
money is USD. ``owned = in_warehouse + installed + failed`` (delivered, not retired);
``active = serving_self + borrowed`` (installed and serving the entity).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Sequence
from itertools import accumulate
from dataclasses import asdict, dataclass
from datetime import date

from gpufleet.domain.state import Claim, FleetState
from gpufleet.domain.types import ClaimMetric, LotStatus


@dataclass(frozen=True)
class Holding:
    entity: str
    model: str
    owned: int
    on_order: int
    in_transit: int
    in_warehouse: int
    installed: int
    serving_self: int
    lent: int
    borrowed: int
    active: int
    failed: int
    retired: int
    due_by_as_of: int  # undelivered lots whose planned date is on or before the as-of date


@dataclass(frozen=True)
class SiteUsage:
    site: str
    owner: str
    slots_online: int
    installed: int
    mw_online: float
    mw_used: float
    pue: float
    next_online_date: str | None  # the next capacity step still to come
    slip_days: int  # total days the site's steps have slipped from their first planned dates


@dataclass(frozen=True)
class LoanRow:
    loan: str
    lender: str
    borrower: str
    model: str
    site: str
    gpus_opened: int
    gpus_out: int
    start: str
    end_date: str
    status: str  # open | overdue | closed
    fee_usd_per_gpu_hour: float
    fee_usd_to_date: float


@dataclass(frozen=True)
class Transfer:
    kind: str  # slot_swap | loan
    id: str
    on: str
    from_entity: str
    to_entity: str
    model: str
    gpus: int
    hardware_value_usd: float  # what the GPUs given up cost at purchase price
    consideration: str  # what came back


@dataclass(frozen=True)
class ClaimCheck:
    claim: str
    claimant: str
    metric: str
    model: str | None
    target: float
    deadline: str
    stated_on: str
    actual: float  # on the as-of date, or on the deadline if that is earlier
    gap: float  # actual - target
    status: str  # open (deadline not reached) | met | missed
    source_url: str


def holdings(state: FleetState, as_of: date, entity: str | None = None) -> list[Holding]:
    serving: Counter[tuple[str, str]] = Counter()
    lent: Counter[tuple[str, str]] = Counter()
    for (_site, owner, model, user), n in state.installed.items():
        if user == owner:
            continue
        lent[(owner, model)] += n
        serving[(user, model)] += n
    due: Counter[tuple[str, str]] = Counter()
    for lot in state.lots.values():
        if lot.status is not LotStatus.DELIVERED and lot.planned_date <= as_of:
            due[(lot.owner, lot.model)] += lot.gpus
    keys = {k for c in (state.acquired, serving) for k, v in c.items() if v}
    rows = []
    for owner, model in sorted(keys):
        if entity is not None and owner != entity:
            continue
        k = (owner, model)
        installed, out = state.installed_owned[k], lent[k]
        rows.append(Holding(
            owner, model, state.warehouse[k] + installed + state.failed[k], state.on_order[k], state.in_transit[k],
            state.warehouse[k], installed, installed - out, out, serving[k], installed - out + serving[k],
            state.failed[k], state.retired[k], due[k],
        ))
    return rows


def site_usage(state: FleetState, on: date) -> list[SiteUsage]:
    rows = []
    for site_id, site in sorted(state.sites.items()):
        future = sorted(s.online_date for s in site.steps.values() if s.online_date > on)
        slip = sum(max(0, (s.online_date - s.planned_date).days) for s in site.steps.values())
        rows.append(SiteUsage(
            site_id, site.owner, site.slots_online(on), state.site_gpus[site_id], round(site.mw_online(on), 3),
            round(state.site_watts[site_id] * site.pue / 1e6, 3), site.pue,
            future[0].isoformat() if future else None, slip,
        ))
    return rows


def loan_rows(state: FleetState, on: date) -> list[LoanRow]:
    rows = []
    for loan_id, loan in sorted(state.loans.items()):
        status = "closed" if loan.closed_on else ("overdue" if loan.end_date < on else "open")
        until = loan.closed_on or on
        rows.append(LoanRow(
            loan_id, loan.lender, loan.borrower, loan.model, loan.site, loan.gpus_opened, loan.gpus_out,
            loan.start.isoformat(), loan.end_date.isoformat(), status, loan.fee_usd_per_gpu_hour,
            round(loan.gpu_hours_through(until) * loan.fee_usd_per_gpu_hour, 2),
        ))
    return rows


def unit_prices(state: FleetState) -> dict[tuple[str, str], float]:
    """Each owner's average purchase price per GPU model over its lots, USD."""
    gpus: Counter[tuple[str, str]] = Counter()
    usd: Counter[tuple[str, str]] = Counter()
    for lot in state.lots.values():
        gpus[(lot.owner, lot.model)] += lot.gpus
        usd[(lot.owner, lot.model)] += lot.gpus * lot.unit_price_usd
    return {k: usd[k] / n for k, n in gpus.items() if n}



def transfers(state: FleetState, on: date, loans: list[LoanRow] | None = None) -> list[Transfer]:
    prices = unit_prices(state)
    rows = []
    for swap_id, s in sorted(state.swaps.items()):
        rows.append(Transfer(
            "slot_swap", swap_id, s.on.isoformat(), s.party_a, s.party_b, s.model, s.gpus, s.value_a_usd,
            f"lots {', '.join(s.lots_b)} ({s.gpus} GPUs, USD {s.value_b_usd:,.0f}) due later",
        ))
    for loan in loan_rows(state, on) if loans is None else loans:
        rows.append(Transfer(
            "loan", loan.loan, loan.start, loan.lender, loan.borrower, loan.model, loan.gpus_opened,
            loan.gpus_opened * prices.get((loan.lender, loan.model), 0.0),
            f"fees USD {loan.fee_usd_to_date:,.0f} to date; returned by {loan.end_date}",
        ))
    return rows


def claim_actual(state: FleetState, claim_id: str, on: date) -> float:
    """The claimed metric as the state records it (``state`` must be as of ``on``)."""
    return claim_actuals(state, on, [claim_id])[claim_id]


def claim_actuals(state: FleetState, on: date, claim_ids: list[str] | None = None) -> dict[str, float]:
    """Each claim's metric as recorded: GPUs of the model serving the claimant (``active_gpus``), or
    the purchase value of its lots delivered from ``period_start`` to ``on`` or the deadline,
    whichever is earlier (``gpu_spend_usd``). One pass over installs and lots for all claims."""
    ids = claim_ids if claim_ids is not None else list(state.claims)
    return dict(zip(ids, claim_values(state, on, [state.claims[k] for k in ids])))


def claim_values(state: FleetState, on: date, claims: Sequence[Claim]) -> list[float]:
    """:func:`claim_actuals` for claims given whole (a claim need not be in ``state``: the record as of
    a day before it was made, or one it is judged against). Lots are read only for spend claims."""
    active: Counter[tuple[str, str | None]] = Counter()
    for (_site, _owner, model, user), n in state.installed.items():
        active[(user, model)] += n
        active[(user, None)] += n
    spend = [(c, min(on, c.deadline)) for c in claims if c.metric != ClaimMetric.ACTIVE_GPUS]
    spent = iter(delivered_values(state, spend))
    return [float(active[(c.claimant, c.model)]) if c.metric == ClaimMetric.ACTIVE_GPUS else next(spent)
            for c in claims]


def delivered_values(state: FleetState, wanted: Sequence[tuple[Claim, date]]) -> list[float]:
    """For each (claim, day): the purchase value (USD) of the claimant's lots of the claim's model (any,
    if none) delivered from its period start to ``day``; one pass over the lots for all. A delivered lot
    never changes (a swap or a reschedule refuses one), so any fold of the same events that has passed
    ``day`` gives the same value as the fold as of ``day``."""
    delivered: dict[tuple[str, str | None], list[tuple[date, float]]] = {(c.claimant, c.model): [] for c, _d in wanted}
    if wanted:
        for lot in state.lots.values():
            if lot.delivered_on is not None:
                for key in ((lot.owner, lot.model), (lot.owner, None)):
                    if key in delivered:
                        delivered[key].append((lot.delivered_on, lot.gpus * lot.unit_price_usd))
    sums = {}
    for key, rows in delivered.items():
        rows.sort()
        sums[key] = ([d for d, _x in rows], list(accumulate(x for _d, x in rows)))
    out = []
    for c, day in wanted:
        days, cum = sums[(c.claimant, c.model)]
        hi, lo = bisect_right(days, day), bisect_left(days, c.period_start or date.min)
        out.append(float((cum[hi - 1] if hi else 0.0) - (cum[lo - 1] if lo else 0.0)) if hi > lo else 0.0)
    return out


def claim_checks(state: FleetState, on: date) -> list[ClaimCheck]:
    actuals = claim_actuals(state, on)
    rows = []
    for claim_id, c in sorted(state.claims.items()):
        actual = actuals[claim_id]
        status = "open" if on < c.deadline else ("met" if actual >= c.target else "missed")
        rows.append(ClaimCheck(
            claim_id, c.claimant, c.metric, c.model, c.target, c.deadline.isoformat(), c.stated_on.isoformat(),
            actual, actual - c.target, status, c.source_url,
        ))
    return rows


def status_report(state: FleetState, as_of: date, entity: str | None = None) -> dict:
    """The documented ``gpufleet status --format json`` body, less the query header."""
    keep = (lambda *names: entity is None or entity in names)
    loans = loan_rows(state, as_of)
    return {
        "holdings": [_row(h) for h in holdings(state, as_of, entity)],
        "sites": [_row(s) for s in site_usage(state, as_of) if keep(s.owner)],
        "loans": [_row(x) for x in loans if keep(x.lender, x.borrower)],
        "transfers": [_row(t) for t in transfers(state, as_of, loans) if keep(t.from_entity, t.to_entity)],
        "claims": [_row(c) for c in claim_checks(state, as_of) if keep(c.claimant)],
        "proposals": [{"id": key} | {f: _iso(v) for f, v in asdict(p).items()}
                      for key, p in sorted(state.proposals.items()) if keep(p.owner, p.user)],
    }


def _row(view) -> dict:
    """A view row as a dict (its fields are plain values: no deep copy needed)."""
    return dict(vars(view))


def _iso(value):
    return value.isoformat() if isinstance(value, date) else value
