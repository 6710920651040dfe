"""Event payloads: every change to the fleet is one of these.

An event is an envelope (sequence number, recorded time, effective date, actor,
idempotency key, hashes; see :mod:`gpufleet.domain.ledger`) around one payload
below. The payload's ``event_type`` is its name in the ledger. The effective
date of the envelope is when the change takes place (a lot is delivered, a loan
starts); payloads carry only the other dates.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from gpufleet.domain.types import (
    AccessRole,
    MAX_CLAIM_TARGET,
    ClaimMetric,
    Day,
    Decision,
    EntityId,
    Gpus,
    Id,
    LoanId,
    LotId,
    ModelId,
    PersonId,
    PositiveGpus,
    PurchaseOrderId,
    Role,
    Seq,
    SiteId,
    StepId,
    Usd,
    UsdPerGpuHour,
    Workload,
)
from gpufleet.errors import InputError

Text = Annotated[str, Field(max_length=2000)]


class Payload(BaseModel):
    """Base of all payloads: immutable, unknown fields refused, every number finite and bounded
    (strict: a boolean is not a number, a text is not parsed as one)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    event_type: ClassVar[str]


EVENT_TYPES: dict[str, type[Payload]] = {}


def event(name: str):
    """Register a payload class under its ledger name."""

    def register(cls: type[Payload]) -> type[Payload]:
        cls.event_type = name
        EVENT_TYPES[name] = cls
        return cls

    return register


# -- parties ---------------------------------------------------------------------------


@event("entity_registered")
class EntityRegistered(Payload):
    """A company or other organization; ``parent`` (registered earlier) controls it."""

    entity: EntityId
    name: Text
    parent: EntityId | None = None
    kind: Annotated[str, Field(max_length=40)] = "company"


@event("person_registered")
class PersonRegistered(Payload):
    """A natural person who can hold roles in entities."""

    person: PersonId
    name: Text


@event("role_assigned")
class RoleAssigned(Payload):
    """A person holds a role in an entity (the basis of related-party findings)."""

    person: PersonId
    entity: EntityId
    role: Role
    family_of: PersonId | None = Field(
        default=None, description="the person holds the role as family of this person"
    )


@event("service_account_registered")
class ServiceAccountRegistered(Payload):
    """A non-person principal of the service (a pipeline, a cluster's agent), bound to one entity."""

    account: Id
    entity: EntityId
    name: Text = ""


@event("access_granted")
class AccessGranted(Payload):
    """A principal (a person, or a service account of ``entity``) may act in ``entity`` as ``role``."""

    principal: Id
    entity: EntityId
    role: AccessRole


@event("access_revoked")
class AccessRevoked(Payload):
    """The grant of ``role`` in ``entity`` to ``principal`` ends."""

    principal: Id
    entity: EntityId
    role: AccessRole
    reason: Text = ""


KeyId = Annotated[str, Field(pattern=r"^[0-9a-f]{8}$", description="a key ID: 8 lowercase hex digits")]
Signature = Annotated[str, Field(pattern=r"^[A-Za-z0-9+/]{86}==$",
                                 description="an Ed25519 signature (64 bytes), standard base64")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="a SHA-256 digest, 64 lowercase hex digits")]


@event("person_key_registered")
class PersonKeyRegistered(Payload):
    """A person's public key for signing votes, registered by an admin of ``entity`` (where the person
    holds a role); ``proof`` shows the key's holder made the registration (see docs/disclosure.md)."""

    person: PersonId
    entity: EntityId
    public_key: Annotated[str, Field(max_length=400, description="the signed-note verifier key: name+hash+base64")]
    proof: Annotated[Signature, Field(description="the key's Ed25519 signature of the registration message "
                                                  "naming the person, the entity and the key, base64")]


@event("person_key_revoked")
class PersonKeyRevoked(Payload):
    """A person's vote-signing key stops being valid from the effective date on."""

    person: PersonId
    key_id: KeyId
    reason: Text = ""


@event("gpu_model_registered")
class GpuModelRegistered(Payload):
    """A GPU model: its board power counts against site power at the site's PUE."""

    model: ModelId
    name: Text
    watts: Annotated[float, Field(strict=True, gt=0, le=100_000, description="board power per GPU, W")]
    memory_gb: Annotated[float, Field(strict=True, gt=0, le=100_000, description="memory per GPU, GB")]


# -- sites -----------------------------------------------------------------------------


class CapacityStep(BaseModel):
    """Capacity that comes online at a site on ``online_date`` (which can slip)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    step: StepId
    online_date: Day
    slots: Annotated[Gpus, Field(description="GPU slots (rack positions)")]
    mw: Annotated[float, Field(strict=True, ge=0, le=100_000, description="IT+cooling power budget, MW")]


@event("site_registered")
class SiteRegistered(Payload):
    """A site owned by an entity, with the capacity steps planned to come online."""

    site: SiteId
    name: Text
    owner: EntityId
    pue: Annotated[float, Field(strict=True, ge=1.0, le=5.0, description="power usage effectiveness")] = 1.3
    capacity: list[CapacityStep] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_steps(self) -> SiteRegistered:
        _require_unique([s.step for s in self.capacity], "capacity.step")
        return self


@event("site_capacity_added")
class SiteCapacityAdded(Payload):
    """A new capacity step is planned at a site."""

    site: SiteId
    capacity: CapacityStep


@event("site_capacity_slipped")
class SiteCapacitySlipped(Payload):
    """A capacity step's online date moves (usually later)."""

    site: SiteId
    step: StepId
    online_date: Day
    reason: Text = ""


# -- supply ----------------------------------------------------------------------------


class LotSpec(BaseModel):
    """A delivery lot of a purchase order, planned for ``planned_date``."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    lot: LotId
    gpus: PositiveGpus
    planned_date: Day


@event("purchase_order_placed")
class PurchaseOrderPlaced(Payload):
    """A purchase order; each lot starts on order, owned by the buyer."""

    po: PurchaseOrderId
    buyer: EntityId
    vendor: Text
    model: ModelId
    unit_price_usd: Usd
    lots: Annotated[list[LotSpec], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_lots(self) -> PurchaseOrderPlaced:
        _require_unique([x.lot for x in self.lots], "lots.lot")
        return self


@event("lot_rescheduled")
class LotRescheduled(Payload):
    """A lot's planned delivery date changes (it has not been delivered)."""

    lot: LotId
    planned_date: Day
    reason: Text = ""


@event("lot_shipped")
class LotShipped(Payload):
    """A lot leaves the vendor: on order -> in transit."""

    lot: LotId


@event("lot_delivered")
class LotDelivered(Payload):
    """The lot's GPUs arrive in its owner's warehouse (shipping is implied if not recorded)."""

    lot: LotId


@event("delivery_slot_swap")
class DeliverySlotSwap(Payload):
    """Two owners exchange undelivered lots: ``lots_a`` go to the owner of ``lots_b`` and back.

    Both sides must be of one GPU model and the same number of GPUs, like the
    December 2023 exchange of 12,000 shipped H100s for later delivery slots.
    """

    swap: Id
    lots_a: Annotated[list[LotId], Field(min_length=1)]
    lots_b: Annotated[list[LotId], Field(min_length=1)]
    reason: Text = ""

    @model_validator(mode="after")
    def _disjoint(self) -> DeliverySlotSwap:
        _require_unique(self.lots_a + self.lots_b, "lots_a/lots_b")
        return self


@event("opening_balance")
class OpeningBalance(Payload):
    """GPUs held before the ledger starts: in the warehouse, or installed at ``site``."""

    owner: EntityId
    model: ModelId
    gpus: PositiveGpus
    site: SiteId | None = None
    unit_price_usd: Usd = 0.0


@event("gpus_installed")
class GpusInstalled(Payload):
    """GPUs go from the owner's warehouse into a site, serving their owner."""

    owner: EntityId
    model: ModelId
    site: SiteId
    gpus: PositiveGpus


@event("gpus_uninstalled")
class GpusUninstalled(Payload):
    """GPUs serving their owner leave a site for the owner's warehouse."""

    owner: EntityId
    model: ModelId
    site: SiteId
    gpus: PositiveGpus


@event("gpus_failed")
class GpusFailed(Payload):
    """GPUs fail where they are: installed at ``site`` (serving their owner) or in the warehouse."""

    owner: EntityId
    model: ModelId
    gpus: PositiveGpus
    site: SiteId | None = None


@event("gpus_repaired")
class GpusRepaired(Payload):
    """Failed GPUs are repaired and return to the owner's warehouse."""

    owner: EntityId
    model: ModelId
    gpus: PositiveGpus


@event("gpus_retired")
class GpusRetired(Payload):
    """GPUs leave service for good, from ``site`` if given, else from failed, else warehouse."""

    owner: EntityId
    model: ModelId
    gpus: PositiveGpus
    site: SiteId | None = None
    from_failed: Annotated[bool, Field(strict=True)] = False

    @model_validator(mode="after")
    def _one_source(self) -> GpusRetired:
        if self.site is not None and self.from_failed:
            raise ValueError("give site (installed GPUs) or from_failed (failed GPUs), not both")
        return self


# -- use -------------------------------------------------------------------------------


@event("loan_opened")
class LoanOpened(Payload):
    """The lender's GPUs installed at ``site`` serve the borrower from the effective date."""

    loan: LoanId
    lender: EntityId
    borrower: EntityId
    model: ModelId
    site: SiteId
    gpus: PositiveGpus
    end_date: Day
    fee_usd_per_gpu_hour: UsdPerGpuHour = 0.0
    reclaim_notice_days: Annotated[int, Field(strict=True, ge=0, le=3650)] = 0

    @model_validator(mode="after")
    def _two_parties(self) -> LoanOpened:
        if self.lender == self.borrower:
            raise ValueError("lender and borrower must differ")
        return self


@event("loan_reclaimed")
class LoanReclaimed(Payload):
    """The lender takes ``gpus`` back; effective no earlier than notice + reclaim notice."""

    loan: LoanId
    gpus: PositiveGpus
    notice_given_on: Day


@event("loan_closed")
class LoanClosed(Payload):
    """The loan ends; every GPU still lent returns to its owner."""

    loan: LoanId


@event("demand_recorded")
class DemandRecorded(Payload):
    """An entity needs ``gpus`` from ``start`` to ``end``, worth a value per GPU-hour."""

    demand: Id
    entity: EntityId
    start: Day
    end: Day
    gpus: PositiveGpus
    value_usd_per_gpu_hour: UsdPerGpuHour
    workload: Workload = Workload.TRAINING
    tier: Annotated[int, Field(strict=True, ge=0, le=9, description="0 is the most important")] = 1

    @model_validator(mode="after")
    def _ordered(self) -> DemandRecorded:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


@event("loan_proposed")
class LoanProposed(Payload):
    """A loan a plan proposes; it moves no GPU until it is approved and opened (``loan_opened``)."""

    loan: LoanId
    lender: EntityId
    borrower: EntityId
    model: ModelId
    site: SiteId
    gpus: PositiveGpus
    start: Day
    end_date: Day
    fee_usd_per_gpu_hour: UsdPerGpuHour = 0.0
    plan: Annotated[str, Field(max_length=200, description="the plan it comes from (policy and hash)")] = ""
    reason: Text = ""

    @model_validator(mode="after")
    def _two_parties(self) -> LoanProposed:
        if self.lender == self.borrower:
            raise ValueError("lender and borrower must differ")
        if self.end_date <= self.start:
            raise ValueError("end_date must be after start")
        return self


@event("install_planned")
class InstallPlanned(Payload):
    """An install a plan proposes for a future date; the GPUs move only with ``gpus_installed``."""

    owner: EntityId
    model: ModelId
    site: SiteId
    gpus: PositiveGpus
    planned_date: Day
    plan: Annotated[str, Field(max_length=200)] = ""


# -- governance ------------------------------------------------------------------------


@event("claim_recorded")
class ClaimRecorded(Payload):
    """A public claim, stated on the effective date."""

    claim: Id
    claimant: EntityId
    person: PersonId | None = None
    metric: ClaimMetric
    model: ModelId | None = None
    target: Annotated[float, Field(strict=True, ge=0, le=MAX_CLAIM_TARGET, description="GPUs or USD")]
    deadline: Day
    period_start: Day | None = None
    source_url: Annotated[str, Field(max_length=500)] = ""
    quote: Text = ""

    @model_validator(mode="after")
    def _period_before_deadline(self) -> ClaimRecorded:
        if self.period_start is not None and self.period_start > self.deadline:
            raise ValueError(f"period_start {self.period_start} is after the deadline {self.deadline}")
        return self


@event("approval_recorded")
class ApprovalRecorded(Payload):
    """A decision by a person on a transaction (``subject``), e.g. a related-party transfer."""

    approval: Id
    subject: Annotated[str, Field(max_length=200, description="what is approved, e.g. swap:ID")]
    decision: Decision
    person: PersonId
    reason: Text = ""
    content_sha256: Annotated[Sha256 | None, Field(description="signed votes: the hash of the transaction's terms "
                                                               "signed (docs/disclosure.md)")] = None
    key_id: Annotated[KeyId | None, Field(description="signed votes: the person's registered key")] = None
    signature: Annotated[Signature | None, Field(description="signed votes: Ed25519 over the vote message")] = None

    @model_validator(mode="after")
    def _all_or_none(self) -> ApprovalRecorded:
        given = [name for name in _SIGNED_VOTE_FIELDS if getattr(self, name) is not None]
        if given and len(given) != len(_SIGNED_VOTE_FIELDS):
            missing = [name for name in _SIGNED_VOTE_FIELDS if name not in given]
            raise ValueError(f"a signed vote needs {', '.join(_SIGNED_VOTE_FIELDS)}; {', '.join(missing)} missing")
        return self

    @model_serializer(mode="wrap")
    def _unsigned_as_before(self, handler: SerializerFunctionWrapHandler) -> dict:
        """An unsigned vote serializes without the signature fields, so its canonical JSON (and the
        hash of every vote recorded before signed votes existed) is unchanged."""
        data = handler(self)
        if self.signature is None:
            for name in _SIGNED_VOTE_FIELDS:
                data.pop(name, None)
        return data


_SIGNED_VOTE_FIELDS = ("content_sha256", "key_id", "signature")


@event("event_voided")
class EventVoided(Payload):
    """A correction: the event ``seq`` is treated as never having happened, from now on."""

    seq: Seq
    reason: Annotated[str, Field(min_length=1, max_length=2000)]


def payload_class(event_type: str) -> type[Payload]:
    try:
        return EVENT_TYPES[event_type]
    except KeyError:
        known = ", ".join(sorted(EVENT_TYPES))
        raise InputError(f"unknown event type '{event_type}' (known: {known})", field="type")


def _require_unique(values: list[str], field: str) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"duplicate id '{v}' in {field}")
        seen.add(v)
