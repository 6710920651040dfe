"""Typed ids, enums and constrained numbers shared by the domain.

Units are in the names: ``gpus`` counts GPUs, ``usd`` is US dollars, ``mw`` is
megawatts, ``watts`` is watts per GPU, ``_days`` / ``_hours`` are durations.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

Id = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,79}$"),
    Field(description="identifier: letters, digits and . _ : -, at most 80 characters"),
]
EntityId = Id
PersonId = Id
ModelId = Id
SiteId = Id
StepId = Id
PurchaseOrderId = Id
LotId = Id
LoanId = Id

# Upper bounds of every quantity (docs/scenario-format.md, "Bounds"). Each is far above any real
# fleet yet keeps every derived figure finite: fees to date, hardware values and power stay below
# 1e20 even at the bounds, over any span of dates, so no Infinity or NaN reaches the output.
MAX_GPUS = 10_000_000  # GPUs in one event, lot or capacity step
MAX_SEQ = 2**63 - 1  # sequence numbers are 64-bit integers in both databases
MAX_UNIT_PRICE_USD = 10_000_000.0  # per GPU (a whole server per GPU is well under this)
MAX_USD_PER_GPU_HOUR = 10_000.0  # loan fees and the value of demand
MAX_CLAIM_TARGET = 1e15  # GPUs or USD
MAX_ENVELOPE_CHARS = 200  # actor and idempotency key (the ledger's column width)
# Dates: a ledger's days are walked one by one (costs, reports), and date arithmetic past 9999-12-31
# fails, so every date that enters (payloads, effective dates, --as-of, --month) is in this range.
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(2199, 12, 31)

# Numbers are strict: a boolean or a text is refused, not read as 1.0 or parsed; an integer field
# refuses 5.0. Floats are finite (``allow_inf_nan=False``): NaN and Infinity are refused as such.
Gpus = Annotated[int, Field(strict=True, ge=0, le=MAX_GPUS, description="a number of GPUs")]
PositiveGpus = Annotated[int, Field(strict=True, gt=0, le=MAX_GPUS, description="a number of GPUs, at least 1")]
Usd = Annotated[float, Field(strict=True, ge=0, le=MAX_UNIT_PRICE_USD, allow_inf_nan=False,
                             description="US dollars per GPU")]
UsdPerGpuHour = Annotated[float, Field(strict=True, ge=0, le=MAX_USD_PER_GPU_HOUR, allow_inf_nan=False,
                                       description="US dollars per GPU-hour")]
Seq = Annotated[int, Field(strict=True, ge=1, le=MAX_SEQ, description="a ledger sequence number")]
Day = Annotated[date, Field(ge=FIRST_DAY, le=LAST_DAY)]


# The envelope: who records an event, and a retry's key. Checked before the database sees them, so
# SQLite (which would store any length) and PostgreSQL (which refuses over 200) answer alike.
def _envelope_text(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    if len(value) > MAX_ENVELOPE_CHARS:
        raise ValueError(f"is {len(value):,} characters long; at most {MAX_ENVELOPE_CHARS}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters")
    return value


EnvelopeText = Annotated[str, AfterValidator(_envelope_text),
                         Field(description=f"at most {MAX_ENVELOPE_CHARS} characters, no control characters")]


class Role(StrEnum):
    """A person's role in an entity that can make two entities related parties."""

    DIRECTOR = "director"
    INDEPENDENT_DIRECTOR = "independent_director"
    OFFICER = "officer"
    HOLDER_5PCT = "holder_5pct"
    CONTROLLING_SHAREHOLDER = "controlling_shareholder"
    AUDIT_COMMITTEE = "audit_committee"


class AccessRole(StrEnum):
    """What a principal may do in an entity through the service (see :mod:`gpufleet.domain.access`).
    Approving is not one: who may approve follows from the governance :class:`Role` s."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    PLANNER = "planner"
    FINANCE = "finance"
    AUDITOR = "auditor"
    ADMIN = "admin"


class GpuState(StrEnum):
    """The one state every GPU is in."""

    ON_ORDER = "on_order"
    IN_TRANSIT = "in_transit"
    IN_WAREHOUSE = "in_warehouse"
    INSTALLED = "installed"
    FAILED = "failed"
    RETIRED = "retired"


class LotStatus(StrEnum):
    ON_ORDER = "on_order"
    IN_TRANSIT = "in_transit"
    DELIVERED = "delivered"


class Workload(StrEnum):
    TRAINING = "training"
    INFERENCE = "inference"


class ClaimMetric(StrEnum):
    """What a public claim is about.

    ``active_gpus``: GPUs of ``model`` installed and serving the claimant at the deadline.
    ``gpu_spend_usd``: USD of GPU lots delivered to the claimant between ``period_start``
    and the deadline (the part of AI spend the ledger can see).
    """

    ACTIVE_GPUS = "active_gpus"
    GPU_SPEND_USD = "gpu_spend_usd"


class Decision(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"
    WAIVED = "waived"
