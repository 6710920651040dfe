"""Series over time for the dashboard's charts: one fold of the ledger, read at a few dozen dates.

``service.state(day)`` for each date would fold the ledger once per date; :func:`over_time` folds it
once, in effective-date order (:meth:`gpufleet.ledger.store.Ledger.states_on`), and reads
``take(state, day)`` whenever the fold passes a sampled date, bounded by "as known at" as
``service.state(as_of, known_at)`` is.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import TypeVar

from sqlalchemy import func, select

from gpufleet.domain.state import FleetState
from gpufleet.ledger.schema import events
from gpufleet.ledger.store import Ledger
from gpufleet.services.fleet import FleetService, known_at_instant

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


def over_time(fleet: FleetService, days: list[date], take: Callable[[FleetState, date], T],
              known_at: str | None = None) -> list[T]:
    """``take(state on day, day)`` for each of ``days`` (ascending), from one fold of the ledger."""
    if not days:
        return []
    with fleet.reader.connect() as conn:
        ledger = Ledger(conn)
        return [take(state, day) for day, state in ledger.states_on(days, ledger.known_seq(known_at_instant(known_at)))]
