"""Folding events into a :class:`FleetState`, in effective-date order.

The state as of date ``D``, as known at recorded time ``T``, is the fold of the
events recorded by ``T`` whose effective date is on or before ``D``, ordered by
``(effective_date, seq)``, skipping events voided by a correction recorded by ``T``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date

from gpufleet.domain.events import EVENT_TYPES, EventVoided, Payload
from gpufleet.domain.state import FleetState
from gpufleet.errors import GpufleetError, InvariantViolation

# (seq, effective_date, event_type, payload_json)
Row = tuple[int, date, str, str]


def parse_payload(event_type: str, payload_json: str) -> Payload:
    return EVENT_TYPES[event_type].model_validate_json(payload_json)


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
        try:
            state.apply(parse_payload(event_type, payload_json), effective)
        except GpufleetError as exc:
            raise InvariantViolation(f"event {seq} ({event_type}, effective {effective}): {exc}") from exc
    return state
