"""The one error hierarchy of gpufleet.

Every error a user can cause is a :class:`GpufleetError`. The shells (CLI, API)
turn them into exit codes or HTTP statuses at the edge; nothing below them
prints or exits::

    GpufleetError
    ├── InputError              bad input: names the field (and file/line) and the reason
    │   └── UnknownReference    an id that does not exist (entity, site, lot, loan, ...)
    ├── InvariantViolation      an event that would break the fleet's invariants; nothing written
    ├── ConflictError           idempotency key reused with a different event, ledger not empty, ...
    ├── NotInitialized          the database has no gpufleet schema yet
    ├── LedgerCorrupt           the hash chain does not verify
    └── PlanError               the planner cannot return an optimal plan
        ├── PlanInfeasible      no plan meets every constraint; names the constraint families
        ├── PlanUnbounded       the objective has no limit
        ├── PlanNotOptimal      the solver stopped early (time limit, numerical trouble)
        └── PlanCheckFailed     the independent checker found a violated constraint
"""

from __future__ import annotations


class GpufleetError(Exception):
    """Base of every error gpufleet raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, field: str | None = None, location: str | None = None):
        self.message = message
        self.field = field
        self.location = location
        super().__init__(self.__str__())

    def __str__(self) -> str:
        parts = []
        if self.location:
            parts.append(self.location)
        if self.field:
            parts.append(f"field '{self.field}'")
        prefix = ": ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message


class InputError(GpufleetError):
    """Input that cannot be accepted as given (a value, a file, a reference)."""

    exit_code = 3


class UnknownReference(InputError):
    """An id that names nothing the ledger knows."""


class InvariantViolation(GpufleetError):
    """Applying the event would leave the fleet in an impossible state."""

    exit_code = 3


class ConflictError(GpufleetError):
    """The request contradicts what is already recorded."""

    exit_code = 5


class NotInitialized(GpufleetError):
    """The database has no gpufleet schema."""

    exit_code = 4


class LedgerCorrupt(GpufleetError):
    """The hash chain is broken at ``seq``."""

    exit_code = 1

    def __init__(self, message: str, *, seq: int | None = None):
        self.seq = seq
        super().__init__(message)


class PlanError(GpufleetError):
    """The planner cannot return an optimal plan; never a silently clipped one."""

    exit_code = 6


class PlanInfeasible(PlanError):
    pass


class PlanUnbounded(PlanError):
    pass


class PlanNotOptimal(PlanError):
    pass


class PlanCheckFailed(PlanError):
    pass
