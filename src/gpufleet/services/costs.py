"""``gpufleet costs``: chargeback per entity per month, read from the ledger.

One read transaction: the state on the day before the period (one fold, through the
ledger's snapshots), then the period's events applied a day at a time to that state
(:func:`gpufleet.domain.costs.daily_summaries`). The ledger is never refolded per day.
The rules and definitions live in :mod:`gpufleet.domain.costs`.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, timedelta

from gpufleet.domain.costs import Chargeback, CostPolicy, daily_summaries, month_bounds, monthly_chargeback
from gpufleet.domain.events import EventVoided
from gpufleet.domain.fold import parse_payload, voided_seqs
from gpufleet.ledger.store import Ledger
from gpufleet.services.fleet import FleetService

_USD_DIGITS, _KWH_DIGITS = 2, 1


def chargeback(service: FleetService, month: str | None = None, entity: str | None = None,
               policy: CostPolicy = CostPolicy()) -> list[dict]:
    """One row per entity and month (``month`` 'YYYY-MM'; default: every month from the
    first effective date to the last), as documented by :class:`Chargeback`.

    Raises :class:`InputError` (field 'month') for a bad month and
    :class:`UnknownReference` (field 'entity') for an entity the ledger does not know.
    """
    bounds = month_bounds(month) if month is not None else None
    with service.reader.connect() as conn:
        ledger = Ledger(conn)
        rows = _live_rows(ledger)
        if not rows:
            return []
        first, last = bounds or (rows[0][0].replace(day=1), month_bounds(rows[-1][0].strftime("%Y-%m"))[1])
        state = ledger.state(first - timedelta(days=1))
    period = [(on, parse_payload(kind, text, seq)) for on, seq, kind, text in rows if first <= on <= last]
    days = daily_summaries(state, period, first, last)
    found = monthly_chargeback(days, policy, entity)
    if entity is not None:
        state.entity(entity, "entity")  # the state at the end of the period
    return [_json(row) for row in found]


def _live_rows(ledger: Ledger) -> list[tuple[date, int, str, str]]:
    """Every event not voided, as (effective date, seq, type, payload), in effective order."""
    events = list(ledger.events())
    voided = voided_seqs(e.payload for e in events if e.event_type == EventVoided.event_type)
    return sorted((e.effective_date, e.seq, e.event_type, e.payload) for e in events
                  if e.seq not in voided and e.event_type != EventVoided.event_type)


def _json(row: Chargeback) -> dict:
    out = asdict(row)
    for name, value in out.items():
        if name.endswith("_usd"):
            out[name] = round(value, _USD_DIGITS)
        elif name.endswith("_kwh"):
            out[name] = round(value, _KWH_DIGITS)
    return out
