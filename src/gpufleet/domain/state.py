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
from datetime import date
from typing import Any

from gpufleet.domain import events as ev
from gpufleet.domain.types import LotStatus
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
    content_sha256: str | None = None  # a signed vote: the hash of the terms signed, the key, the signature
    key_id: str | None = None
    signature: str | None = None


@dataclass(slots=True)
class PersonKey:
    """A person's vote-signing key (a signed-note verifier key), valid from ``registered_on`` until
    ``revoked_on`` (exclusive), if revoked."""

    person: str
    entity: str  # whose admin registered it
    key_id: str  # 8 hex digits
    public_key: str  # the vkey text
    registered_on: date
    revoked_on: date | None = None
    reason: str = ""

    def active_on(self, on: date) -> bool:
        return self.registered_on <= on and (self.revoked_on is None or on < self.revoked_on)


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
    "person_keys": PersonKey,  # by "person/key_id"
}


@dataclass(slots=True)
class FleetState:
    """What the ledger says about the fleet on ``as_of``. Mutated only by :meth:`apply`."""

    as_of: date | None = None
    entities: dict[str, Entity] = field(default_factory=dict)
    persons: dict[str, str] = field(default_factory=dict)
    roles: set[tuple[str, str, str, str]] = field(default_factory=set)  # person, entity, role, family_of
    service_accounts: dict[str, str] = field(default_factory=dict)  # account -> its one entity
    access: set[tuple[str, str, str]] = field(default_factory=set)  # principal, entity, access role
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
    person_keys: dict[str, PersonKey] = field(default_factory=dict)  # "person/key_id" -> the key
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
        HANDLERS[type(payload)](self, payload, on)
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
        out["service_accounts"] = dict(sorted(self.service_accounts.items()))
        out["access"] = sorted(list(r) for r in self.access)
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
        state.service_accounts = dict(data["service_accounts"])
        state.access = {tuple(r) for r in data["access"]}
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


from gpufleet.domain.handlers import HANDLERS  # noqa: E402  (the handlers module registers against FleetState)
