"""What the scheduler schedules: a cluster of nodes, tenants with quotas, and gang jobs.

Units: GPU amounts are integer **milli-GPUs** (1 GPU = 1000), so fractional jobs
(Alibaba's ``gpu_milli``) and whole-GPU jobs share one exact integer arithmetic.
Times are float **seconds** from the start of the simulation (the trace's epoch).

Quota fields follow Kueue's ClusterQueue (``nominalQuota``, ``borrowingLimit``,
``lendingLimit``, ``cohort``, fair-sharing ``weight``); ``None`` means "no limit",
as an absent field does in Kueue.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpufleet.errors import InputError
from gpufleet.scheduler.limits import MAX_GPUS

MILLI = 1000  # milli-GPUs per GPU


def gpus_to_milli(gpus: float) -> int:
    """Whole or fractional GPUs as integer milli-GPUs (rounded to the nearest milli)."""
    return int(round(gpus * MILLI))


@dataclass(frozen=True, slots=True)
class NodePool:
    """``nodes`` identical nodes of ``gpus_per_node`` GPUs of one model (a Kueue ResourceFlavor)."""

    model: str
    nodes: int
    gpus_per_node: int

    def __post_init__(self):
        if self.nodes < 0 or self.gpus_per_node <= 0:
            raise InputError(f"a node pool needs nodes >= 0 and gpus_per_node > 0, got "
                             f"{self.nodes} x {self.gpus_per_node}", field="cluster")
        if self.gpus > MAX_GPUS:
            raise InputError(f"a node pool of {self.nodes:,} x {self.gpus_per_node:,} GPUs is over the most a "
                             f"cluster may have, {MAX_GPUS:,} GPUs", field="cluster")

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass(frozen=True, slots=True)
class Cluster:
    """Node pools in preference order: a job with no model requirement tries them in this order."""

    pools: tuple[NodePool, ...]

    def __post_init__(self):
        models = [p.model for p in self.pools]
        if not models:
            raise InputError("a cluster needs at least one node pool", field="cluster")
        if len(set(models)) != len(models):
            raise InputError(f"GPU models must be listed once each, got {models}", field="cluster")
        if self.gpus > MAX_GPUS:
            raise InputError(f"a cluster of {self.gpus:,} GPUs is over the most a cluster may have, {MAX_GPUS:,}",
                             field="cluster")

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(p.model for p in self.pools)

    @property
    def gpus(self) -> int:
        return sum(p.gpus for p in self.pools)


@dataclass(frozen=True, slots=True)
class TenantQuota:
    """One tenant's quota on one GPU model, in GPUs (Kueue: one flavor of a ClusterQueue).

    Invariants: ``nominal >= 0``; ``0 <= lending_limit <= nominal`` where set; ``borrowing_limit >= 0``.
    """

    nominal_gpus: float
    borrowing_limit_gpus: float | None = None
    lending_limit_gpus: float | None = None

    def __post_init__(self):
        if self.nominal_gpus < 0:
            raise InputError(f"must be >= 0, got {self.nominal_gpus}", field="nominal")
        if self.borrowing_limit_gpus is not None and self.borrowing_limit_gpus < 0:
            raise InputError(f"must be >= 0, got {self.borrowing_limit_gpus}", field="borrowing_limit")
        if self.lending_limit_gpus is not None and not 0 <= self.lending_limit_gpus <= self.nominal_gpus:
            raise InputError(f"must be between 0 and the nominal quota {self.nominal_gpus}, "
                             f"got {self.lending_limit_gpus}", field="lending_limit")


@dataclass(frozen=True, slots=True)
class Tenant:
    """A queue of one organisation (Kueue: a ClusterQueue with its LocalQueue)."""

    name: str
    quotas: dict[str, TenantQuota]  # GPU model -> quota
    cohort: str = "default"
    weight: float = 1.0

    def __post_init__(self):
        if not self.name:
            raise InputError("a tenant needs a name", field="name")
        if self.weight <= 0:
            raise InputError(f"must be > 0, got {self.weight}", field=f"tenants.{self.name}.weight")


@dataclass(frozen=True, slots=True)
class QuotaChange:
    """From ``at_s`` on, ``tenant``'s nominal quota on ``model`` is ``nominal_gpus``.

    Time-varying quotas (Helios' daily GPUs per tenant) and dated loans between
    owners (a loan moves quota from lender to borrower for its dates) are both lists of these.
    """

    at_s: float
    tenant: str
    model: str
    nominal_gpus: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Job:
    """One gang job: all of its GPUs start together or none do.

    ``service_s`` is the work in seconds at full speed; ``checkpoint_s`` is how often it
    saves progress (``None``: never, a preemption loses everything since its start);
    ``restart_s`` is paid again, without progress, each time it restarts after a preemption.
    ``models``: the GPU models it may run on, each named once (empty: any model of the cluster).
    ``line`` is the trace line it came from, for error messages and event logs.
    """

    id: str
    tenant: str
    arrival_s: float
    milli_gpus: int
    service_s: float
    priority: int = 0
    models: tuple[str, ...] = ()
    checkpoint_s: float | None = None
    restart_s: float = 0.0
    line: int = 0

    def __post_init__(self):
        where = f"job {self.id}"
        if self.milli_gpus <= 0:
            raise InputError(f"{where} needs more than 0 GPUs, got {self.milli_gpus / MILLI}", field="gpus")
        if self.service_s < 0 or self.arrival_s < 0 or self.restart_s < 0:
            raise InputError(f"{where}: times must be >= 0", field="service_s")
        if self.checkpoint_s is not None and self.checkpoint_s <= 0:
            raise InputError(f"{where}: checkpoint interval must be > 0", field="checkpoint_s")
        if not all(self.models) or len(set(self.models)) != len(self.models):
            raise InputError(f"{where}: GPU models must be named once each, got {self.models}", field="models")

    @property
    def gpus(self) -> float:
        return self.milli_gpus / MILLI


@dataclass(frozen=True, slots=True)
class Workload:
    """A trace ready to simulate: jobs plus what was skipped while reading it."""

    jobs: tuple[Job, ...]
    epoch: str | None = None  # ISO time of second 0, where the trace has absolute times
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows skipped
    source: str | None = None  # the file it was read from, for messages naming file:line
