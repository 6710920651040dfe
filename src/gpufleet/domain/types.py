"""Typed ids, enums and constrained numbers shared by the domain.

Units are in the names: ``gpus`` counts GPUs, ``usd`` is US dollars, ``mw`` is
megawatts, ``watts`` is watts per GPU, ``_days`` / ``_hours`` are durations.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

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

Gpus = Annotated[int, Field(ge=0, description="a number of GPUs")]
PositiveGpus = Annotated[int, Field(gt=0, description="a number of GPUs, at least 1")]
Usd = Annotated[float, Field(ge=0, allow_inf_nan=False, description="US dollars")]


class Role(StrEnum):
    """A person's role in an entity that can make two entities related parties."""

    DIRECTOR = "director"
    INDEPENDENT_DIRECTOR = "independent_director"
    OFFICER = "officer"
    HOLDER_5PCT = "holder_5pct"
    CONTROLLING_SHAREHOLDER = "controlling_shareholder"
    AUDIT_COMMITTEE = "audit_committee"


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
