"""Chargeback and cost accounting: GPU-hours and USD per entity per month.

Granularity is one day: the state at the end of each day counts for the whole day,
so one GPU held for a day is 24 GPU-hours. An event effective on day D counts from
D on (a loan opened on D is lent on D; GPUs returned on R are back home on R). This
is the same convention as :meth:`Loan.gpu_hours_through`, so the lending income of a
month equals the difference of ``fee_usd_to_date`` in ``gpufleet status``.

GPU-hours, for an entity as owner (its delivered, not retired GPUs)::

    owned = self + lent + idle + failed          (exactly, every day)

* ``self``: installed and serving their owner;
* ``lent``: installed and serving another entity (out on a loan);
* ``idle``: in the owner's warehouse, serving nobody (delivered but not installed,
  or uninstalled, or repaired and not yet reinstalled);
* ``failed``: failed and not yet repaired or retired.

``borrowed`` hours are other owners' GPUs serving the entity; they are not owned.

Money (USD):

* ``depreciation_usd``: straight-line capex over ``CostPolicy.life_years``, per GPU
  from its delivery date. A GPU older than its life costs nothing more. Retired GPUs
  stop depreciating; they are taken from the oldest GPUs first (FIFO) and their
  remaining book value is not booked here (it is a write-off, not a monthly charge).
* ``idle_cost_usd``: the depreciation burnt by idle GPUs, i.e. idle GPU-hours times
  the entity's average depreciation per owned GPU-hour. It is a part of
  ``depreciation_usd``, not added to it. It leaves out what the idle GPUs could have
  earned (no market rate is part of the policy) and power (idle GPUs in a warehouse
  draw none). Failed GPU-hours are not counted as idle: their cost is reported by
  ``failed_gpu_hours`` and is a reliability matter, not a placement one.
* ``lending_income_usd`` / ``borrowing_cost_usd``: GPU-hours out on each loan times
  that loan's fee; the lender's income is exactly the borrower's cost.
* ``power_kwh = GPU-hours installed x watts x site PUE / 1000``, charged to the
  entity the GPUs *serve*: the borrower pays the power of borrowed GPUs. The fee of
  a loan is a price for the hardware's time (like a bare-metal rental), while power
  follows use: the borrower decides the workload, and this keeps each entity's power
  proportional to its ``active`` GPUs (``serving_self + borrowed`` in ``views``).
* ``net_cost_usd = depreciation + borrowing_cost + power - lending_income``.

Capex of opening balances: the state does not keep ``OpeningBalance.unit_price_usd``
(the handler drops it), nor the opening date. Opening-balance GPUs are therefore
priced at the owner's average lot price for the model (:func:`views.unit_prices`; 0
when the owner has no lots) and, their age being unknown, depreciate at the full rate
throughout (as if bought on the opening date).
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import date, timedelta

from gpufleet.domain import events as ev
from gpufleet.domain.state import FleetState
from gpufleet.domain.types import FIRST_DAY, LAST_DAY, LotStatus
from gpufleet.domain.views import unit_prices
from gpufleet.errors import InputError

HOURS_PER_DAY = 24
MAX_LIFE_YEARS = 100
MAX_USD_PER_KWH = 100.0


@dataclass(frozen=True)
class CostPolicy:
    """The rates that turn GPU-hours into money."""

    life_years: float = 6.0
    """Straight-line useful life of a GPU server. 5-6 years in 2024: Microsoft, Alphabet and
    CoreWeave use 6, Meta 5-5.5, Nebius 4 (h100-2024-facts.md, source [20]:
    https://shaulkoral.com/useful-life-of-servers-and-network-assets-at-tech-companies/)."""

    usd_per_kwh: float = 0.08
    """Electricity price, USD per kWh: the middle of 7-9 cents, US industrial, 2024
    (h100-2024-facts.md, source [32]: https://www.eia.gov/electricity/monthly/epm_table_grapher.php?t=epmt_5_06_b)."""

    def __post_init__(self) -> None:
        # bounded (and NaN refused: it fails every comparison), so every figure stays finite
        if not self.life_years > 0:
            raise InputError(f"the useful life must be positive, not {self.life_years}", field="life_years")
        if not 1 / 365 <= self.life_years <= MAX_LIFE_YEARS:
            raise InputError(f"the useful life must be from one day to {MAX_LIFE_YEARS} years, not {self.life_years}",
                             field="life_years")
        if not self.usd_per_kwh >= 0:
            raise InputError(f"the electricity price cannot be negative ({self.usd_per_kwh})", field="usd_per_kwh")
        if not self.usd_per_kwh <= MAX_USD_PER_KWH:
            raise InputError(f"the electricity price must be at most USD {MAX_USD_PER_KWH} per kWh, not "
                             f"{self.usd_per_kwh}", field="usd_per_kwh")

    @property
    def life_days(self) -> float:
        return self.life_years * 365


@dataclass(frozen=True)
class Cohort:
    """GPUs of one owner bought together: a delivered lot, or an opening balance (``delivered_on=None``)."""

    delivered_on: date | None
    gpus: int
    unit_price_usd: float

    def depreciation_usd_per_day(self, on: date, policy: CostPolicy) -> float:
        if self.delivered_on is not None and (on - self.delivered_on).days >= policy.life_days:
            return 0.0  # fully depreciated
        return self.gpus * self.unit_price_usd / policy.life_days


@dataclass(frozen=True)
class EntityDay:
    """What one entity holds and uses at the end of a day (GPUs, not yet hours)."""

    self_gpus: int = 0
    lent_gpus: int = 0
    idle_gpus: int = 0
    failed_gpus: int = 0
    borrowed_gpus: int = 0
    facility_watts: float = 0.0  # GPUs serving the entity x watts x site PUE
    lending_usd_per_hour: float = 0.0  # sum over its open loans as lender of gpus_out x fee
    borrowing_usd_per_hour: float = 0.0
    cohorts: tuple[Cohort, ...] = ()  # owned GPUs by purchase, after retirements

    @property
    def owned_gpus(self) -> int:
        return self.self_gpus + self.lent_gpus + self.idle_gpus + self.failed_gpus


DaySummary = Mapping[str, EntityDay]  # entity -> its day
_GPU_FIELDS = ("self_gpus", "lent_gpus", "idle_gpus", "failed_gpus", "borrowed_gpus")


@dataclass(frozen=True)
class Chargeback:
    """One entity's GPU-hours and costs over one month (``YYYY-MM``)."""

    month: str
    entity: str
    days: int  # days of the month walked (all of them, unless the caller passed fewer)
    owned_gpu_hours: int
    self_gpu_hours: int
    lent_gpu_hours: int
    borrowed_gpu_hours: int
    idle_gpu_hours: int
    failed_gpu_hours: int
    depreciation_usd: float
    lending_income_usd: float
    borrowing_cost_usd: float
    power_kwh: float
    power_usd: float
    idle_cost_usd: float
    net_cost_usd: float


# -- one day ------------------------------------------------------------------------------


def summarize(state: FleetState) -> dict[str, EntityDay]:
    """Each entity's day from the state at the end of that day (entities with nothing are left out)."""
    acc: dict[str, dict] = defaultdict(lambda: defaultdict(float))
    for (site, owner, model, user), n in state.installed.items():
        if not n:
            continue
        acc[owner]["self_gpus" if user == owner else "lent_gpus"] += n
        if user != owner:
            acc[user]["borrowed_gpus"] += n
        acc[user]["facility_watts"] += n * state.models[model].watts * state.sites[site].pue
    for (owner, _model), n in state.warehouse.items():
        if n:
            acc[owner]["idle_gpus"] += n
    for (owner, _model), n in state.failed.items():
        if n:
            acc[owner]["failed_gpus"] += n
    for loan in state.loans.values():
        if loan.gpus_out:
            acc[loan.lender]["lending_usd_per_hour"] += loan.gpus_out * loan.fee_usd_per_gpu_hour
            acc[loan.borrower]["borrowing_usd_per_hour"] += loan.gpus_out * loan.fee_usd_per_gpu_hour
    cohorts = _cohorts(state)
    out = {}
    for entity in sorted(set(acc) | set(cohorts)):
        gpus = {name: int(acc[entity][name]) for name in _GPU_FIELDS}
        rates = {name: acc[entity][name] for name in ("facility_watts", "lending_usd_per_hour",
                                                       "borrowing_usd_per_hour")}
        out[entity] = EntityDay(**gpus, **rates, cohorts=tuple(cohorts.get(entity, ())))
    return out


def _cohorts(state: FleetState) -> dict[str, list[Cohort]]:
    """Owned GPUs per owner by purchase, oldest first, with retirements taken from the oldest."""
    lots_of: dict[tuple[str, str], list] = defaultdict(list)
    for lot_id, lot in state.lots.items():
        lots_of[(lot.owner, lot.model)].append((lot_id, lot))
    out: dict[str, list[Cohort]] = defaultdict(list)
    prices = unit_prices(state)
    for key in sorted(k for k, v in state.acquired.items() if v):
        owner = key[0]
        lots = lots_of.get(key, [])
        opening = state.acquired[key] - sum(lot.gpus for _, lot in lots)
        delivered = sorted((lot.delivered_on, lot_id, lot) for lot_id, lot in lots
                           if lot.status is LotStatus.DELIVERED)
        cohorts = [Cohort(None, opening, prices.get(key, 0.0))] if opening > 0 else []
        cohorts += [Cohort(on, lot.gpus, lot.unit_price_usd) for on, _, lot in delivered]
        out[owner] += _retire_oldest(cohorts, state.retired[key])
    return out


def _retire_oldest(cohorts: list[Cohort], retired: int) -> list[Cohort]:
    kept = []
    for c in cohorts:
        gone = min(retired, c.gpus)
        retired -= gone
        if c.gpus > gone:
            kept.append(Cohort(c.delivered_on, c.gpus - gone, c.unit_price_usd))
    return kept


def daily_summaries(state: FleetState, events: Iterable[tuple[date, ev.Payload]], first: date,
                    last: date) -> Iterator[tuple[date, DaySummary]]:
    """Walk ``first``..``last`` a day at a time, applying ``events`` (effective date, payload) to
    ``state`` (mutated) and yielding each day's summary at the end of that day.

    ``events`` come in the ledger's fold order (effective date, then seq) and none is effective
    before ``state.as_of``. Those before ``first`` are applied before the walk starts; those
    after ``last`` are ignored. The summary is rebuilt only on days with events.
    """
    pending = iter(sorted(events, key=lambda item: item[0]))  # stable: keeps the seq order within a day
    upcoming = next(pending, None)
    while upcoming is not None and upcoming[0] < first:
        state.apply(upcoming[1], upcoming[0])
        upcoming = next(pending, None)
    summary, day = summarize(state), first
    while day <= last:
        changed = False
        while upcoming is not None and upcoming[0] == day:
            state.apply(upcoming[1], day)
            upcoming, changed = next(pending, None), True
        if changed:
            summary = summarize(state)
        yield day, summary
        day += timedelta(days=1)


# -- one month ----------------------------------------------------------------------------


@dataclass
class _Month:
    """One entity's running sums over a month."""

    gpu_days: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    usd: dict[str, float] = field(default_factory=lambda: defaultdict(float))


def monthly_chargeback(days: Iterable[tuple[date, DaySummary]], policy: CostPolicy = CostPolicy(),
                       entity: str | None = None) -> list[Chargeback]:
    """Sum daily summaries into one :class:`Chargeback` per entity and month (by month, then entity).

    Rows where the entity owned, borrowed and paid nothing are left out.
    """
    months: dict[tuple[str, str], _Month] = defaultdict(_Month)
    days_in: dict[str, int] = defaultdict(int)
    for on, summary in days:
        month = on.strftime("%Y-%m")
        days_in[month] += 1
        for name, day in summary.items():
            if entity is None or name == entity:
                _add_day(months[(month, name)], on, day, policy)
    rows = [_row(month, name, days_in[month], acc, policy) for (month, name), acc in sorted(months.items())]
    return [r for r in rows if _nonzero(r)]


def _add_day(acc: _Month, on: date, day: EntityDay, policy: CostPolicy) -> None:
    for name in _GPU_FIELDS:
        acc.gpu_days[name] += getattr(day, name)
    depreciation = sum(c.depreciation_usd_per_day(on, policy) for c in day.cohorts)
    acc.usd["depreciation"] += depreciation
    if day.owned_gpus:
        acc.usd["idle_cost"] += depreciation * day.idle_gpus / day.owned_gpus
    acc.usd["lending_income"] += day.lending_usd_per_hour * HOURS_PER_DAY
    acc.usd["borrowing_cost"] += day.borrowing_usd_per_hour * HOURS_PER_DAY
    acc.usd["power_kwh"] += day.facility_watts * HOURS_PER_DAY / 1000


def _row(month: str, entity: str, days: int, acc: _Month, policy: CostPolicy) -> Chargeback:
    hours = {name: acc.gpu_days[name] * HOURS_PER_DAY for name in _GPU_FIELDS}
    usd = acc.usd
    power_usd = usd["power_kwh"] * policy.usd_per_kwh
    return Chargeback(
        month=month, entity=entity, days=days,
        owned_gpu_hours=hours["self_gpus"] + hours["lent_gpus"] + hours["idle_gpus"] + hours["failed_gpus"],
        self_gpu_hours=hours["self_gpus"], lent_gpu_hours=hours["lent_gpus"],
        borrowed_gpu_hours=hours["borrowed_gpus"], idle_gpu_hours=hours["idle_gpus"],
        failed_gpu_hours=hours["failed_gpus"],
        depreciation_usd=usd["depreciation"], lending_income_usd=usd["lending_income"],
        borrowing_cost_usd=usd["borrowing_cost"], power_kwh=usd["power_kwh"], power_usd=power_usd,
        idle_cost_usd=usd["idle_cost"],
        net_cost_usd=usd["depreciation"] + usd["borrowing_cost"] + power_usd - usd["lending_income"],
    )


def _nonzero(row: Chargeback) -> bool:
    return any(getattr(row, f.name) for f in fields(row) if f.name not in ("month", "entity", "days"))


def month_bounds(month: str) -> tuple[date, date]:
    """The first and last day of ``YYYY-MM``; :class:`InputError` naming 'month' otherwise."""
    year, dash, number = month[:4], month[4:5], month[5:]
    try:
        if dash != "-" or not (year + number).isascii() or not (year + number).isdigit() or len(number) != 2:
            raise ValueError
        first = date(int(year), int(number), 1)
    except ValueError:
        raise InputError(f"'{month}' is not a month (YYYY-MM)", field="month") from None
    last = date(first.year, first.month, calendar.monthrange(first.year, first.month)[1])
    if not FIRST_DAY <= first <= last <= LAST_DAY:
        raise InputError(f"'{month}' is outside the dates gpufleet takes, {FIRST_DAY} to {LAST_DAY}", field="month")
    return first, last

