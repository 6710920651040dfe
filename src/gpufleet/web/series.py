"""Series over time for the dashboard's charts: one fold of the ledger, read at a few dozen dates.

``service.state(day)`` for each date would fold the ledger once per date; :func:`over_time` folds it
once, in effective-date order (:meth:`gpufleet.ledger.store.Ledger.states_on`), and reads
``take(state, day)`` whenever the fold passes a sampled date, bounded by "as known at" as
``service.state(as_of, known_at)`` is.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from datetime import date, timedelta
from typing import TypeVar

from sqlalchemy import func, select

from gpufleet.domain.state import FleetState
from gpufleet.ledger.schema import events
from gpufleet.ledger.store import Ledger
from gpufleet.services.fleet import FleetService, known_at_instant
from gpufleet.services.head_state import HeadFold
from gpufleet.services.readings import DatedReadings

T = TypeVar("T")
SAMPLES = 40  # dates per chart: enough to see each step, few enough to answer at once


def span(fleet: FleetService, known_at: str | None = None) -> tuple[date, date] | None:
    """The first and last effective dates in the ledger (as known at ``known_at``); None if it is empty."""
    with fleet.reader.connect() as conn:
        known = Ledger(conn).known_seq(known_at_instant(known_at))
        low, high = conn.execute(select(func.min(events.c.effective_date), func.max(events.c.effective_date))
                                 .where(events.c.seq <= known)).one()
    return None if low is None else (date.fromisoformat(low), date.fromisoformat(high))


def sample_days(start: date, end: date, samples: int = SAMPLES) -> list[date]:
    """About ``samples`` evenly spaced dates from ``start`` to ``end``, both included."""
    if end <= start:
        return [end]
    step = max(1, -(-(end - start).days // (samples - 1)))
    days = [start + timedelta(days=i) for i in range(0, (end - start).days, step)]
    return [*days, end]


def known_seq(fleet: FleetService, known_at: str | None, head: HeadFold | None = None) -> int:
    """The last event recorded by ``known_at`` (the held ``head``'s, or the ledger's head, if None)."""
    if known_at is None and head is not None:
        return head.seq
    with fleet.reader.connect() as conn:
        return Ledger(conn).known_seq(known_at_instant(known_at))


def over_time(fleet: FleetService, days: list[date], take: Callable[[FleetState, date], T],
              known_at: str | None = None, what: Hashable | None = None, head: HeadFold | None = None) -> list[T]:
    """``take(state on day, day)`` for each of ``days`` (ascending), from one fold of the ledger.

    ``what``: names ``take`` (with everything it depends on but the fleet and the day) so that a later call
    reuses the readings a write did not change (:class:`gpufleet.services.readings.DatedReadings`).
    ``head``: the head's fold, if the caller holds it: with no ``known_at``, the days from its last
    effective date on are read from it rather than folded."""
    if not days:
        return []
    whole = head.state if head is not None and known_at is None else None
    with fleet.reader.connect() as conn:
        ledger = Ledger(conn)
        known = head.seq if whole is not None else ledger.known_seq(known_at_instant(known_at))
        if what is None:
            return [take(state, day) for day, state in ledger.states_on(days, known, whole)]
        readings = fleet.keeper("series", DatedReadings)
        return readings.read(ledger, what, days, take, known, whole)
