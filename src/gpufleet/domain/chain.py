"""The ledger's envelope and its hash chain (pure: no storage here).

Canonical encoding (documented in ``docs/ledger.md``): the fields below, in this
order, each written as ``<byte length>:<UTF-8 bytes>,`` (a netstring), so no
field can bleed into another::

    seq, recorded_at, effective_date, actor, type, idempotency_key, prev_hash, payload

``recorded_at`` is ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC), ``effective_date`` is
``YYYY-MM-DD``, a missing idempotency key is the empty field ``~`` (which is not
a netstring), and ``payload`` is the payload as canonical JSON (fields in the order
the payload model declares them, no spaces, UTF-8). ``hash = sha256(canonical).hexdigest()``; the first event's
``prev_hash`` is 64 zeros.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime

from pydantic import BaseModel

from gpufleet.errors import InputError

GENESIS_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class Event:
    """One ledger entry. ``payload`` is canonical JSON text of a registered payload."""

    seq: int
    recorded_at: str
    effective_date: date
    actor: str
    event_type: str
    payload: str
    idempotency_key: str | None
    prev_hash: str
    hash: str


def canonical_json(model: BaseModel) -> str:
    """The payload as canonical JSON: every field in the order its model declares it, no spaces,
    dates as ISO strings, UTF-8 (pydantic's serializer: one payload has exactly one encoding)."""
    return model.model_dump_json()


def canonical_bytes(
    seq: int,
    recorded_at: str,
    effective_date: str,
    actor: str,
    event_type: str,
    idempotency_key: str | None,
    prev_hash: str,
    payload: str,
) -> bytes:
    """The netstrings of the fields, concatenated (one formatting step: this is the verify hot path)."""
    s, r, e, h = str(seq).encode(), recorded_at.encode(), effective_date.encode(), prev_hash.encode()
    a, t, p = actor.encode(), event_type.encode(), payload.encode()
    k = b"~" if idempotency_key is None else b"%d:%b," % (len(kb := idempotency_key.encode()), kb)
    return b"%d:%b,%d:%b,%d:%b,%d:%b,%d:%b,%b%d:%b,%d:%b," % (
        len(s), s, len(r), r, len(e), e, len(a), a, len(t), t, k, len(h), h, len(p), p)


def event_hash(*fields) -> str:
    """SHA-256 of :func:`canonical_bytes` over the same fields, as hex."""
    return hashlib.sha256(canonical_bytes(*fields)).hexdigest()


def seal(
    seq: int,
    recorded_at: str,
    effective_date: date,
    actor: str,
    event_type: str,
    payload: str,
    idempotency_key: str | None,
    prev_hash: str,
) -> Event:
    """Build the event that follows ``prev_hash`` in the chain."""
    digest = event_hash(
        seq, recorded_at, effective_date.isoformat(), actor, event_type, idempotency_key, prev_hash, payload
    )
    return Event(seq, recorded_at, effective_date, actor, event_type, payload, idempotency_key, prev_hash, digest)


def format_instant(moment: datetime) -> str:
    """A UTC instant in the ledger's fixed format (microseconds, ``Z``)."""
    if moment.tzinfo is None:
        raise InputError("a time must carry a timezone (e.g. 2024-04-23T00:00:00Z)", field="recorded_at")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_instant(text: str, field: str = "time") -> datetime:
    """Parse an ISO date or date-time; a date means 00:00 UTC, a naive time means UTC."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"'{text}' is not an ISO date or date-time", field=field) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def end_of_day(day: date) -> str:
    """The last instant of ``day`` in the ledger's format: what was known by that day."""
    return f"{day.isoformat()}T23:59:59.999999Z"
