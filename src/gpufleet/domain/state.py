"""The fleet state: a fold of the ledger's events, with its invariants.

Invariants (checked on every :meth:`FleetState.apply`; a violating event raises
:class:`InvariantViolation` and the caller writes nothing):

1. every GPU is in exactly one state: for each owner and model,
   ``acquired = on_order + in_transit + in_warehouse + installed + failed + retired``;
2. the GPUs installed at a site never exceed its slots online on that date,
   nor its power: ``sum(gpus * watts) * pue <= mw_online * 1e6``;
3. a loan never exceeds what the lender holds: lent GPUs come out of the lender's
   GPUs installed at the loan's site and serving the lender itself;
4. no count is ever negative.

Capacity only grows with time between two events (steps come online), so checking
at each event's effective date is enough to hold at every date.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from gpufleet.domain import events as ev
from gpufleet.domain.approvals import check_voter
from gpufleet.domain.types import LotStatus, Role
from gpufleet.errors import InvariantViolation, UnknownReference


@dataclass(slots=True)
class Entity:
    name: str
    parent: str | None
    kind: str


@dataclass(slots=True)
class GpuModel:
    name: str
    watts: float
    memory_gb: float


@dataclass(slots=True)
class Step:
    online_date: date
    slots: int
    mw: float
    planned_date: date  # the first date announced, kept to measure slips


@dataclass(slots=True)
class Site:
    name: str
    owner: str
    pue: float
    steps: dict[str, Step] = field(default_factory=dict)

    def slots_online(self, on: date) -> int:
        return sum(s.slots for s in self.steps.values() if s.online_date <= on)

    def mw_online(self, on: date) -> float:
        return sum(s.mw for s in self.steps.values() if s.online_date <= on)


@dataclass(slots=True)
class PurchaseOrder:
    buyer: str
    vendor: str
    model: str
    unit_price_usd: float
    placed_on: date


@dataclass(slots=True)
class Lot:
    po: str
    owner: str
    model: str
    gpus: int
    unit_price_usd: float
    planned_date: date
    status: LotStatus = LotStatus.ON_ORDER
    shipped_on: date | None = None
    delivered_on: date | None = None
    first_planned_date: date | None = None
    original_owner: str | None = None


@dataclass(slots=True)
class Loan:
    lender: str
    borrower: str
    model: str
    site: str
    gpus_opened: int
    gpus_out: int
    start: date
    end_date: date
    fee_usd_per_gpu_hour: float
    reclaim_notice_days: int
    closed_on: date | None = None
    accrued_gpu_hours: float = 0.0  # GPU-hours lent before ``since``
    since: date | None = None  # date ``gpus_out`` last changed

    def gpu_hours_through(self, on: date) -> float:
        """GPU-hours lent from the start up to (not including) ``on``."""
        if self.since is None or on <= self.since:
            return self.accrued_gpu_hours
        return self.accrued_gpu_hours + self.gpus_out * 24.0 * (on - self.since).days


@dataclass(slots=True)
class Swap:
    party_a: str
    party_b: str
    lots_a: list[str]
    lots_b: list[str]
    model: str
    gpus: int
    value_a_usd: float  # what the lots party A gave up cost at their PO price
    value_b_usd: float
    on: date
    reason: str


@dataclass(slots=True)
class Demand:
    entity: str
    start: date
    end: date
    gpus: int
    value_usd_per_gpu_hour: float
    workload: str
    tier: int


@dataclass(slots=True)
class Claim:
    claimant: str
    person: str | None
    metric: str
    model: str | None
    target: float
    deadline: date
    period_start: date | None
    stated_on: date
    source_url: str
    quote: str


@dataclass(slots=True)
class Approval:
    subject: str
    decision: str
    person: str
    reason: str
    on: date


@dataclass(slots=True)
class Proposal:
    """A loan or install proposed by a plan, not yet carried out."""

    kind: str  # loan | install
    owner: str  # the lender, or the owner of the GPUs installed
    user: str  # the borrower, or the owner
    model: str
    site: str
    gpus: int
    start: date
    end_date: date | None
    fee_usd_per_gpu_hour: float
    plan: str
    reason: str
    proposed_on: date


Key2 = tuple[str, str]  # (owner, model)
Key4 = tuple[str, str, str, str]  # (site, owner, model, serving entity)

_COUNTERS = ("acquired", "on_order", "in_transit", "warehouse", "failed", "retired", "installed_owned")
_RECORDS: dict[str, type] = {
    "entities": Entity,
    "models": GpuModel,
    "sites": Site,
    "pos": PurchaseOrder,
    "lots": Lot,
    "loans": Loan,
    "swaps": Swap,
    "demand": Demand,
    "claims": Claim,
    "approvals": Approval,
    "proposals": Proposal,
}


@dataclass(slots=True)
class FleetState:
    """What the ledger says about the fleet on ``as_of``. Mutated only by :meth:`apply`."""

    as_of: date | None = None
    entities: dict[str, Entity] = field(default_factory=dict)
    persons: dict[str, str] = field(default_factory=dict)
    roles: set[tuple[str, str, str, str]] = field(default_factory=set)  # person, entity, role, family_of
    models: dict[str, GpuModel] = field(default_factory=dict)
    sites: dict[str, Site] = field(default_factory=dict)
    pos: dict[str, PurchaseOrder] = field(default_factory=dict)
    lots: dict[str, Lot] = field(default_factory=dict)
    loans: dict[str, Loan] = field(default_factory=dict)
    swaps: dict[str, Swap] = field(default_factory=dict)
    demand: dict[str, Demand] = field(default_factory=dict)
    claims: dict[str, Claim] = field(default_factory=dict)
    approvals: dict[str, Approval] = field(default_factory=dict)
    proposals: dict[str, Proposal] = field(default_factory=dict)
    acquired: Counter[Key2] = field(default_factory=Counter)
    on_order: Counter[Key2] = field(default_factory=Counter)
    in_transit: Counter[Key2] = field(default_factory=Counter)
    warehouse: Counter[Key2] = field(default_factory=Counter)
    failed: Counter[Key2] = field(default_factory=Counter)
    retired: Counter[Key2] = field(default_factory=Counter)
    installed_owned: Counter[Key2] = field(default_factory=Counter)
    installed: Counter[Key4] = field(default_factory=Counter)
    site_gpus: Counter[str] = field(default_factory=Counter)
    site_watts: Counter[str] = field(default_factory=Counter)

    # -- applying events ------------------------------------------------------------------

    def apply(self, payload: ev.Payload, on: date) -> None:
        """Apply one event effective ``on``; raise before changing anything visible if invalid.

        Handlers check every precondition before their first mutation, so a refused
        event leaves the state as it was.
        """
        if self.as_of is not None and on < self.as_of:
            raise InvariantViolation(f"events must be applied in date order ({on} is before {self.as_of})")
        _HANDLERS[type(payload)](self, payload, on)
        self.as_of = on

    # -- lookups that raise UnknownReference --------------------------------------------

    def entity(self, entity_id: str, field_name: str = "entity") -> Entity:
        return _get(self.entities, entity_id, "entity", field_name)

    def model(self, model_id: str, field_name: str = "model") -> GpuModel:
        return _get(self.models, model_id, "GPU model", field_name)

    def site(self, site_id: str, field_name: str = "site") -> Site:
        return _get(self.sites, site_id, "site", field_name)

    def lot(self, lot_id: str, field_name: str = "lot") -> Lot:
        return _get(self.lots, lot_id, "lot", field_name)

    def loan(self, loan_id: str) -> Loan:
        return _get(self.loans, loan_id, "loan", "loan")

    # -- invariants ------------------------------------------------------------------------

    def check_site(self, site_id: str, on: date) -> None:
        site = self.sites[site_id]
        gpus, slots = self.site_gpus[site_id], site.slots_online(on)
        if gpus > slots:
            raise InvariantViolation(
                f"site '{site_id}' would hold {gpus} GPUs on {on} but has {slots} slots online then"
            )
        need_mw = self.site_watts[site_id] * site.pue / 1e6
        have_mw = site.mw_online(on)
        if need_mw > have_mw + 1e-9:
            raise InvariantViolation(
                f"site '{site_id}' would draw {need_mw:.3f} MW on {on} (GPU watts x PUE {site.pue}) "
                f"but has {have_mw:.3f} MW online then"
            )

    def conservation_errors(self) -> list[str]:
        """Recompute every derived count from first principles; return what disagrees.

        Independent of the incremental bookkeeping in the handlers: it rebuilds the
        per-state counts from the lots and the per-site installs.
        """
        errors: list[str] = []
        lot_counts: dict[str, Counter[Key2]] = {s: Counter() for s in LotStatus}
        for lot in self.lots.values():
            lot_counts[lot.status][(lot.owner, lot.model)] += lot.gpus
        if +lot_counts[LotStatus.ON_ORDER] != +self.on_order:
            errors.append("GPUs on order disagree with the undelivered lots")
        if +lot_counts[LotStatus.IN_TRANSIT] != +self.in_transit:
            errors.append("GPUs in transit disagree with the shipped lots")
        owned: Counter[Key2] = Counter()
        per_site: Counter[str] = Counter()
        watts: Counter[str] = Counter()
        for (site, owner, model, _serving), n in self.installed.items():
            owned[(owner, model)] += n
            per_site[site] += n
            watts[site] += n * self.models[model].watts
        if +owned != +self.installed_owned:
            errors.append("installed GPUs per owner disagree with installs per site")
        if +per_site != +self.site_gpus:
            errors.append("installed GPUs per site disagree with installs")
        for site, w in watts.items():
            if abs(w - self.site_watts[site]) > 1e-6 * max(1.0, w):
                errors.append(f"site '{site}' power bookkeeping disagrees with its installs")
        for key in set(self.acquired) | set(owned):
            states = sum(getattr(self, c)[key] for c in _COUNTERS[1:])
            if states != self.acquired[key]:
                errors.append(f"{key[0]}/{key[1]}: {self.acquired[key]} acquired but {states} in states")
        for name in (*_COUNTERS, "installed", "site_gpus"):
            if any(v < 0 for v in getattr(self, name).values()):
                errors.append(f"negative count in {name}")
        for loan_id, loan in self.loans.items():
            if loan.gpus_out < 0 or loan.gpus_out > loan.gpus_opened:
                errors.append(f"loan '{loan_id}' has {loan.gpus_out} GPUs out of {loan.gpus_opened}")
        return errors

    # -- serialization (snapshots, replay equality) ---------------------------------------

    def record_count(self) -> int:
        """How many records a snapshot of this state holds (its size, roughly)."""
        return sum(len(getattr(self, name)) for name in _RECORDS) + len(self.installed)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able, deterministic image of the state (equal states give equal dicts)."""
        out: dict[str, Any] = {"as_of": _enc(self.as_of), "persons": dict(sorted(self.persons.items()))}
        out["roles"] = sorted(list(r) for r in self.roles)
        for name, record in _RECORDS.items():
            plan = _encoder(record)
            # records as lists in field order: about half the size of dicts, and faster to read back
            out[name] = {k: [getattr(rec, f) if enc is None else enc(getattr(rec, f)) for f, enc in plan]
                         for k, rec in sorted(getattr(self, name).items())}
        for name in (*_COUNTERS, "installed", "site_gpus", "site_watts"):
            counter = getattr(self, name)
            out[name] = sorted([*_as_list(k), v] for k, v in counter.items() if v)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FleetState:
        state = cls(as_of=_dec_date(data["as_of"]), persons=dict(data["persons"]))
        state.roles = {tuple(r) for r in data["roles"]}
        for name, record in _RECORDS.items():
            plan = _decoder(record)
            setattr(state, name, {k: record(*[v if convert is None else convert(v)
                                              for v, (_f, convert) in zip(row, plan, strict=True)])
                                  for k, row in data[name].items()})
        for name in (*_COUNTERS, "installed"):
            setattr(state, name, Counter({tuple(row[:-1]): row[-1] for row in data[name]}))
        for name in ("site_gpus", "site_watts"):
            setattr(state, name, Counter({row[0]: row[1] for row in data[name]}))
        return state

    def copy(self) -> FleetState:
        return FleetState.from_dict(self.to_dict())


# -- handlers ----------------------------------------------------------------------------

Handler = Callable[[FleetState, Any, date], None]
_HANDLERS: dict[type[ev.Payload], Handler] = {}


def handles(payload_type: type[ev.Payload]):
    def register(fn: Handler) -> Handler:
        _HANDLERS[payload_type] = fn
        return fn

    return register


@handles(ev.EntityRegistered)
def _entity(s: FleetState, p: ev.EntityRegistered, on: date) -> None:
    _new(s.entities, p.entity, "entity")
    if p.parent is not None:
        s.entity(p.parent, "parent")
    s.entities[p.entity] = Entity(p.name, p.parent, p.kind)


@handles(ev.PersonRegistered)
def _person(s: FleetState, p: ev.PersonRegistered, on: date) -> None:
    _new(s.persons, p.person, "person")
    s.persons[p.person] = p.name


@handles(ev.RoleAssigned)
def _role(s: FleetState, p: ev.RoleAssigned, on: date) -> None:
    _get(s.persons, p.person, "person", "person")
    s.entity(p.entity)
    if p.family_of is not None:
        _get(s.persons, p.family_of, "person", "family_of")
    s.roles.add((p.person, p.entity, Role(p.role).value, p.family_of or ""))


@handles(ev.GpuModelRegistered)
def _model(s: FleetState, p: ev.GpuModelRegistered, on: date) -> None:
    _new(s.models, p.model, "GPU model")
    s.models[p.model] = GpuModel(p.name, p.watts, p.memory_gb)


@handles(ev.SiteRegistered)
def _site(s: FleetState, p: ev.SiteRegistered, on: date) -> None:
    _new(s.sites, p.site, "site")
    s.entity(p.owner, "owner")
    steps = {c.step: Step(c.online_date, c.slots, c.mw, c.online_date) for c in p.capacity}
    s.sites[p.site] = Site(p.name, p.owner, p.pue, steps)


@handles(ev.SiteCapacityAdded)
def _capacity_added(s: FleetState, p: ev.SiteCapacityAdded, on: date) -> None:
    site = s.site(p.site)
    _new(site.steps, p.capacity.step, "capacity step", "capacity.step")
    c = p.capacity
    site.steps[c.step] = Step(c.online_date, c.slots, c.mw, c.online_date)


@handles(ev.SiteCapacitySlipped)
def _slipped(s: FleetState, p: ev.SiteCapacitySlipped, on: date) -> None:
    site = s.site(p.site)
    step = _get(site.steps, p.step, "capacity step", "step")
    before = step.online_date
    step.online_date = p.online_date
    try:
        s.check_site(p.site, on)
    except InvariantViolation:
        step.online_date = before
        raise


@handles(ev.PurchaseOrderPlaced)
def _po(s: FleetState, p: ev.PurchaseOrderPlaced, on: date) -> None:
    _new(s.pos, p.po, "purchase order", "po")
    s.entity(p.buyer, "buyer")
    s.model(p.model)
    for spec in p.lots:
        _new(s.lots, spec.lot, "lot", "lots.lot")
    s.pos[p.po] = PurchaseOrder(p.buyer, p.vendor, p.model, p.unit_price_usd, on)
    for spec in p.lots:
        s.lots[spec.lot] = Lot(
            p.po, p.buyer, p.model, spec.gpus, p.unit_price_usd, spec.planned_date,
            first_planned_date=spec.planned_date, original_owner=p.buyer,
        )
        s.acquired[(p.buyer, p.model)] += spec.gpus
        s.on_order[(p.buyer, p.model)] += spec.gpus


@handles(ev.LotRescheduled)
def _rescheduled(s: FleetState, p: ev.LotRescheduled, on: date) -> None:
    lot = s.lot(p.lot)
    if lot.status is LotStatus.DELIVERED:
        raise InvariantViolation(f"lot '{p.lot}' was delivered on {lot.delivered_on}; it cannot be rescheduled")
    lot.planned_date = p.planned_date


@handles(ev.LotShipped)
def _shipped(s: FleetState, p: ev.LotShipped, on: date) -> None:
    lot = s.lot(p.lot)
    if lot.status is not LotStatus.ON_ORDER:
        raise InvariantViolation(f"lot '{p.lot}' is {lot.status.value}, not on order; it cannot ship")
    key = (lot.owner, lot.model)
    s.on_order[key] -= lot.gpus
    s.in_transit[key] += lot.gpus
    lot.status, lot.shipped_on = LotStatus.IN_TRANSIT, on


@handles(ev.LotDelivered)
def _delivered(s: FleetState, p: ev.LotDelivered, on: date) -> None:
    lot = s.lot(p.lot)
    if lot.status is LotStatus.DELIVERED:
        raise InvariantViolation(f"lot '{p.lot}' was already delivered on {lot.delivered_on}")
    key = (lot.owner, lot.model)
    source = s.on_order if lot.status is LotStatus.ON_ORDER else s.in_transit
    source[key] -= lot.gpus
    s.warehouse[key] += lot.gpus
    lot.shipped_on = lot.shipped_on or on
    lot.status, lot.delivered_on = LotStatus.DELIVERED, on


@handles(ev.DeliverySlotSwap)
def _swap(s: FleetState, p: ev.DeliverySlotSwap, on: date) -> None:
    _new(s.swaps, p.swap, "swap")
    side_a = [s.lot(x, "lots_a") for x in p.lots_a]
    side_b = [s.lot(x, "lots_b") for x in p.lots_b]
    owner_a, owner_b = _one_owner(side_a, "lots_a"), _one_owner(side_b, "lots_b")
    if owner_a == owner_b:
        raise InvariantViolation(f"both sides of swap '{p.swap}' belong to '{owner_a}'")
    models = {lot.model for lot in side_a + side_b}
    if len(models) != 1:
        raise InvariantViolation(f"swap '{p.swap}' mixes GPU models {sorted(models)}")
    gpus_a, gpus_b = sum(x.gpus for x in side_a), sum(x.gpus for x in side_b)
    if gpus_a != gpus_b:
        raise InvariantViolation(f"swap '{p.swap}' exchanges {gpus_a} GPUs for {gpus_b}; both sides must match")
    for lot_id, lot in zip(p.lots_a + p.lots_b, side_a + side_b, strict=True):
        if lot.status is LotStatus.DELIVERED:
            raise InvariantViolation(f"lot '{lot_id}' was delivered on {lot.delivered_on}; it cannot be swapped")
    for lot, new_owner in [(x, owner_b) for x in side_a] + [(x, owner_a) for x in side_b]:
        _move_lot_owner(s, lot, new_owner)
    s.swaps[p.swap] = Swap(
        owner_a, owner_b, list(p.lots_a), list(p.lots_b), models.pop(), gpus_a,
        sum(x.gpus * x.unit_price_usd for x in side_a), sum(x.gpus * x.unit_price_usd for x in side_b),
        on, p.reason,
    )


def _one_owner(lots: list[Lot], field_name: str) -> str:
    owners = {lot.owner for lot in lots}
    if len(owners) != 1:
        raise InvariantViolation(f"the lots in {field_name} belong to several owners {sorted(owners)}")
    return owners.pop()


def _move_lot_owner(s: FleetState, lot: Lot, new_owner: str) -> None:
    counter = s.on_order if lot.status is LotStatus.ON_ORDER else s.in_transit
    for c in (counter, s.acquired):
        c[(lot.owner, lot.model)] -= lot.gpus
        c[(new_owner, lot.model)] += lot.gpus
    lot.owner = new_owner


@handles(ev.OpeningBalance)
def _opening(s: FleetState, p: ev.OpeningBalance, on: date) -> None:
    s.entity(p.owner, "owner")
    model = s.model(p.model)
    key = (p.owner, p.model)
    if p.site is None:
        s.warehouse[key] += p.gpus
    else:
        s.site(p.site)
        _install(s, p.site, p.owner, p.model, model, p.gpus, on)
    s.acquired[key] += p.gpus


@handles(ev.GpusInstalled)
def _installed(s: FleetState, p: ev.GpusInstalled, on: date) -> None:
    s.entity(p.owner, "owner")
    model = s.model(p.model)
    s.site(p.site)
    _require(s.warehouse, (p.owner, p.model), p.gpus, f"'{p.owner}' has {{have}} {p.model} in its warehouse; "
             f"cannot install {p.gpus} at '{p.site}'")
    _install(s, p.site, p.owner, p.model, model, p.gpus, on)
    s.warehouse[(p.owner, p.model)] -= p.gpus


def _install(s: FleetState, site: str, owner: str, model_id: str, model: GpuModel, gpus: int, on: date) -> None:
    s.site_gpus[site] += gpus
    s.site_watts[site] += gpus * model.watts
    try:
        s.check_site(site, on)
    except InvariantViolation:
        s.site_gpus[site] -= gpus
        s.site_watts[site] -= gpus * model.watts
        raise
    s.installed[(site, owner, model_id, owner)] += gpus
    s.installed_owned[(owner, model_id)] += gpus


def _uninstall(s: FleetState, site: str, owner: str, model_id: str, gpus: int) -> None:
    """Take ``gpus`` serving their owner out of ``site`` (caller has checked they are there)."""
    s.installed[(site, owner, model_id, owner)] -= gpus
    s.installed_owned[(owner, model_id)] -= gpus
    s.site_gpus[site] -= gpus
    s.site_watts[site] -= gpus * s.models[model_id].watts


def _require_installed(s: FleetState, p: Any, verb: str) -> None:
    s.entity(p.owner, "owner")
    s.model(p.model)
    s.site(p.site)
    _require(s.installed, (p.site, p.owner, p.model, p.owner), p.gpus,
             f"'{p.owner}' has {{have}} {p.model} installed at '{p.site}' and serving itself; cannot {verb} {p.gpus}")


@handles(ev.GpusUninstalled)
def _uninstalled(s: FleetState, p: ev.GpusUninstalled, on: date) -> None:
    _require_installed(s, p, "uninstall")
    _uninstall(s, p.site, p.owner, p.model, p.gpus)
    s.warehouse[(p.owner, p.model)] += p.gpus


@handles(ev.GpusFailed)
def _failed(s: FleetState, p: ev.GpusFailed, on: date) -> None:
    key = (p.owner, p.model)
    if p.site is None:
        s.entity(p.owner, "owner")
        s.model(p.model)
        _require(s.warehouse, key, p.gpus, f"'{p.owner}' has {{have}} {p.model} in its warehouse; cannot fail {p.gpus}")
        s.warehouse[key] -= p.gpus
    else:
        _require_installed(s, p, "fail")
        _uninstall(s, p.site, p.owner, p.model, p.gpus)
    s.failed[key] += p.gpus


@handles(ev.GpusRepaired)
def _repaired(s: FleetState, p: ev.GpusRepaired, on: date) -> None:
    s.entity(p.owner, "owner")
    s.model(p.model)
    key = (p.owner, p.model)
    _require(s.failed, key, p.gpus, f"'{p.owner}' has {{have}} failed {p.model}; cannot repair {p.gpus}")
    s.failed[key] -= p.gpus
    s.warehouse[key] += p.gpus


@handles(ev.GpusRetired)
def _retired(s: FleetState, p: ev.GpusRetired, on: date) -> None:
    key = (p.owner, p.model)
    if p.site is not None:
        _require_installed(s, p, "retire")
        _uninstall(s, p.site, p.owner, p.model, p.gpus)
    else:
        s.entity(p.owner, "owner")
        s.model(p.model)
        source, where = (s.failed, "failed") if p.from_failed else (s.warehouse, "in its warehouse")
        _require(source, key, p.gpus, f"'{p.owner}' has {{have}} {p.model} {where}; cannot retire {p.gpus}")
        source[key] -= p.gpus
    s.retired[key] += p.gpus


@handles(ev.LoanOpened)
def _loan_opened(s: FleetState, p: ev.LoanOpened, on: date) -> None:
    _new(s.loans, p.loan, "loan")
    s.entity(p.lender, "lender")
    s.entity(p.borrower, "borrower")
    s.model(p.model)
    s.site(p.site)
    if p.end_date <= on:
        raise InvariantViolation(f"loan '{p.loan}' ends on {p.end_date}, not after its start {on}", field="end_date")
    _require(s.installed, (p.site, p.lender, p.model, p.lender), p.gpus,
             f"lender '{p.lender}' holds {{have}} {p.model} installed at '{p.site}' and serving itself; "
             f"cannot lend {p.gpus}")
    s.installed[(p.site, p.lender, p.model, p.lender)] -= p.gpus
    s.installed[(p.site, p.lender, p.model, p.borrower)] += p.gpus
    s.loans[p.loan] = Loan(
        p.lender, p.borrower, p.model, p.site, p.gpus, p.gpus, on, p.end_date,
        p.fee_usd_per_gpu_hour, p.reclaim_notice_days, since=on,
    )


def _return(s: FleetState, loan: Loan, gpus: int, on: date) -> None:
    loan.accrued_gpu_hours = loan.gpu_hours_through(on)
    loan.since = on
    s.installed[(loan.site, loan.lender, loan.model, loan.borrower)] -= gpus
    s.installed[(loan.site, loan.lender, loan.model, loan.lender)] += gpus
    loan.gpus_out -= gpus


def _open_loan(s: FleetState, loan_id: str) -> Loan:
    loan = s.loan(loan_id)
    if loan.closed_on is not None:
        raise InvariantViolation(f"loan '{loan_id}' was closed on {loan.closed_on}")
    return loan


@handles(ev.LoanReclaimed)
def _reclaimed(s: FleetState, p: ev.LoanReclaimed, on: date) -> None:
    loan = _open_loan(s, p.loan)
    earliest = p.notice_given_on + timedelta(days=loan.reclaim_notice_days)
    if on < earliest:
        raise InvariantViolation(
            f"loan '{p.loan}' needs {loan.reclaim_notice_days} days' notice: notice given {p.notice_given_on}, "
            f"so the GPUs return on {earliest} at the earliest, not {on}", field="notice_given_on"
        )
    if p.notice_given_on < loan.start:
        raise InvariantViolation(f"notice for loan '{p.loan}' is dated before the loan started on {loan.start}",
                                 field="notice_given_on")
    if p.gpus > loan.gpus_out:
        raise InvariantViolation(f"loan '{p.loan}' has {loan.gpus_out} GPUs out; cannot reclaim {p.gpus}",
                                 field="gpus")
    _return(s, loan, p.gpus, on)


@handles(ev.LoanClosed)
def _closed(s: FleetState, p: ev.LoanClosed, on: date) -> None:
    loan = _open_loan(s, p.loan)
    _return(s, loan, loan.gpus_out, on)
    loan.closed_on = on


@handles(ev.LoanProposed)
def _loan_proposed(s: FleetState, p: ev.LoanProposed, on: date) -> None:
    key = f"loan:{p.loan}"
    _new(s.proposals, key, "proposal", "loan")
    if p.loan in s.loans:
        raise InvariantViolation(f"loan '{p.loan}' is already recorded", field="loan")
    s.entity(p.lender, "lender")
    s.entity(p.borrower, "borrower")
    s.model(p.model)
    s.site(p.site)
    s.proposals[key] = Proposal("loan", p.lender, p.borrower, p.model, p.site, p.gpus, p.start, p.end_date,
                                p.fee_usd_per_gpu_hour, p.plan, p.reason, on)


@handles(ev.InstallPlanned)
def _install_planned(s: FleetState, p: ev.InstallPlanned, on: date) -> None:
    s.entity(p.owner, "owner")
    s.model(p.model)
    s.site(p.site)
    key = f"install:{p.owner}:{p.model}:{p.site}:{p.planned_date}"
    _new(s.proposals, key, "proposal", "planned_date")
    s.proposals[key] = Proposal("install", p.owner, p.owner, p.model, p.site, p.gpus, p.planned_date, None, 0.0,
                                p.plan, "", on)


@handles(ev.DemandRecorded)
def _demand(s: FleetState, p: ev.DemandRecorded, on: date) -> None:
    _new(s.demand, p.demand, "demand")
    s.entity(p.entity)
    s.demand[p.demand] = Demand(p.entity, p.start, p.end, p.gpus, p.value_usd_per_gpu_hour, p.workload.value, p.tier)


@handles(ev.ClaimRecorded)
def _claim(s: FleetState, p: ev.ClaimRecorded, on: date) -> None:
    _new(s.claims, p.claim, "claim")
    s.entity(p.claimant, "claimant")
    if p.person is not None:
        _get(s.persons, p.person, "person", "person")
    if p.model is not None:
        s.model(p.model)
    if p.deadline < on:
        raise InvariantViolation(f"claim '{p.claim}' has its deadline {p.deadline} before it was stated ({on})",
                                 field="deadline")
    s.claims[p.claim] = Claim(
        p.claimant, p.person, p.metric.value, p.model, p.target, p.deadline, p.period_start, on,
        p.source_url, p.quote,
    )


@handles(ev.ApprovalRecorded)
def _approval(s: FleetState, p: ev.ApprovalRecorded, on: date) -> None:
    _new(s.approvals, p.approval, "approval")
    _get(s.persons, p.person, "person", "person")
    if p.decision.value == "waived" and not p.reason.strip():
        raise InvariantViolation("a waiver needs a written reason", field="reason")
    check_voter(s, p.subject, p.person)
    if any(a.subject == p.subject and a.person == p.person for a in s.approvals.values()):
        raise InvariantViolation(f"{p.person} has already voted on {p.subject}", field="person")
    s.approvals[p.approval] = Approval(p.subject, p.decision.value, p.person, p.reason, on)


@handles(ev.EventVoided)
def _voided(s: FleetState, p: ev.EventVoided, on: date) -> None:
    """No change here: the fold skips voided events (see :mod:`gpufleet.domain.fold`)."""


# -- small helpers ---------------------------------------------------------------------


def _get(table: dict, key: str, what: str, field_name: str):
    try:
        return table[key]
    except KeyError:
        raise UnknownReference(f"no {what} '{key}' is recorded", field=field_name) from None


def _new(table: dict, key: str, what: str, field_name: str | None = None) -> None:
    if key in table:
        raise InvariantViolation(f"{what} '{key}' is already recorded", field=field_name or what.split()[-1])


def _require(counter: Counter, key: tuple, gpus: int, message: str) -> None:
    have = counter[key]
    if have < gpus:
        raise InvariantViolation(message.format(have=have))


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _fields(record) -> list[tuple[str, Any]]:
    names = _FIELD_NAMES.get(type(record))
    if names is None:
        names = _FIELD_NAMES[type(record)] = tuple(f.name for f in dataclasses.fields(record))
    return [(name, getattr(record, name)) for name in names]


def _enc(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Step):
        return {f: _enc(v) for f, v in _fields(value)}
    if isinstance(value, dict):
        return {k: _enc(v) for k, v in sorted(value.items())}
    if isinstance(value, LotStatus):
        return value.value
    return value


def _enc_date(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


_ENCODERS: dict[type, list[tuple[str, Callable[[Any], Any] | None]]] = {}


def _encoder(record: type) -> list[tuple[str, Callable[[Any], Any] | None]]:
    """(field, converter to JSON) per field of a record class, computed once per class."""
    if record not in _ENCODERS:
        plan: list[tuple[str, Callable[[Any], Any] | None]] = []
        for f in dataclasses.fields(record):
            if f.type in _DATE_FIELDS:
                plan.append((f.name, _enc_date))
            elif f.name in ("steps", "status"):
                plan.append((f.name, _enc))
            else:
                plan.append((f.name, None))
        _ENCODERS[record] = plan
    return _ENCODERS[record]


def _dec_date(value: str | None, _parse=date.fromisoformat) -> date | None:
    return None if value is None else _parse(value)


_DATE_FIELDS = {"date", "date | None"}
_LOT_STATUS = {status.value: status for status in LotStatus}  # a dict lookup is ~5x an Enum() call
_DECODERS: dict[type, list[tuple[str, Callable[[Any], Any] | None]]] = {}


def _decoder(record: type) -> list[tuple[str, Callable[[Any], Any] | None]]:
    """(field, converter) per field of a record class, computed once per class."""
    if record not in _DECODERS:
        plan: list[tuple[str, Callable[[Any], Any] | None]] = []
        for f in dataclasses.fields(record):
            if f.type in _DATE_FIELDS:
                plan.append((f.name, _dec_date))
            elif f.name == "steps":
                plan.append((f.name, lambda v: {k: _decode(Step, x) for k, x in v.items()}))
            elif f.name == "status":
                plan.append((f.name, _LOT_STATUS.__getitem__))
            else:
                plan.append((f.name, None))
        _DECODERS[record] = plan
    return _DECODERS[record]


def _decode(record: type, data: dict[str, Any]):
    return record(**{name: (data[name] if convert is None else convert(data[name]))
                     for name, convert in _decoder(record)})


def _as_list(key: Any) -> list:
    return list(key) if isinstance(key, tuple) else [key]
