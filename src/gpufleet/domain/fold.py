"""Folding events into a :class:`FleetState`, in effective-date order.

The state as of date ``D``, as known at recorded time ``T``, is the fold of the
events recorded by ``T`` whose effective date is on or before ``D``, ordered by
``(effective_date, seq)``, skipping events voided by a correction recorded by ``T``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date

from pydantic import ValidationError

from gpufleet.domain.events import EVENT_TYPES, EventVoided, Payload
from gpufleet.domain.state import FleetState
from gpufleet.errors import GpufleetError, InvariantViolation, LedgerCorrupt

# (seq, effective_date, event_type, payload_json)
Row = tuple[int, date, str, str]


def parse_payload(event_type: str, payload_json: str, seq: int | None = None) -> Payload:
    """A stored event's payload, validated as when it was written.

    One that no longer validates (recorded under looser bounds by an older version, or edited
    in the database) raises :class:`LedgerCorrupt` naming the event, not a bare validation error.
    """
    try:
        return EVENT_TYPES[event_type].model_validate_json(payload_json)
    except (KeyError, ValidationError) as exc:
        what = f"event {seq}" if seq is not None else "a stored event"
        reason = f"unknown event type '{event_type}'" if isinstance(exc, KeyError) else \
            "; ".join(f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in exc.errors()[:3])
        raise LedgerCorrupt(f"{what} ({event_type}) does not pass today's validation: {reason}. It was written "
                            "under looser rules or edited in the database; `gpufleet ledger verify` tells which",
                            seq=seq) from None


def voided_seqs(void_payloads: Iterable[str]) -> set[int]:
    """The sequence numbers voided by these ``event_voided`` payloads."""
    return {json.loads(p)["seq"] for p in void_payloads}


def fold(state: FleetState, rows: Iterable[Row], voided: set[int] = frozenset()) -> FleetState:
    """Apply ``rows`` (already in ``(effective_date, seq)`` order) to ``state`` in place.

    Raises :class:`InvariantViolation` naming the event that cannot be applied.
    """
    for seq, effective, event_type, payload_json in rows:
        if seq in voided or event_type == EventVoided.event_type:
            continue
        payload = parse_payload(event_type, payload_json, seq)
        try:
            state.apply(payload, effective)
        except GpufleetError as exc:
            raise InvariantViolation(f"event {seq} ({event_type}, effective {effective}): {exc}") from exc
    return state
