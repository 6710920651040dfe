"""Snapshots: a derived cache of the folded state, checked before it is trusted.

A snapshot ``(S, D)`` holds the fold of events 1..S (all effective on or before D,
the latest effective date then). It is stored with two checks:

* ``chain_hash``: the hash of event S when the snapshot was written. A snapshot left
  from a chain that was later rewritten no longer matches event S's stored hash.
* ``digest``: SHA-256 over the netstrings of ``seq, effective_date, chain_hash, state``.
  An edit of any of them that does not also recompute the digest shows.

A reader checks both before using a snapshot; one that fails is reported as a
:class:`SnapshotDistrusted` warning naming it, and the reader folds the events
instead, so a forged snapshot never changes a figure silently. ``Ledger.verify``
checks every snapshot the same way.

The digest is no secret: someone who can write the database and recomputes it is
found only by rebuilding each snapshot from the events (``Ledger.snapshot_mismatch``,
run by ``gpufleet ledger verify --replay``). Snapshots written before the digest
existed have none and are ignored (they are only a cache).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

from sqlalchemy import Connection, insert, select

from gpufleet.domain.state import FleetState
from gpufleet.ledger.schema import events, snapshots

SNAPSHOT_FORMAT = 5  # bump whenever FleetState.to_dict changes: older snapshots are then ignored
# Snapshots found untrustworthy in this process, by database URL: reported once, never read again.
_DISTRUSTED: set[tuple[str, int]] = set()


class SnapshotDistrusted(UserWarning):
    """A snapshot failed its check: it was not used, the figures come from the events."""

    def __init__(self, seq: int, reason: str):
        self.seq = seq
        self.reason = reason
        super().__init__(f"{reason}; it was not used: these figures are folded from the events "
                         "(run `gpufleet ledger verify`)")


@dataclass(frozen=True)
class StoredSnapshot:
    """A snapshot row with the hash event ``seq`` has now (None: no such event)."""

    seq: int
    effective_date: str
    chain_hash: str
    digest: str
    event_hash: str | None


def snapshot_digest(seq: int, effective_date: str, chain_hash: str, state: str) -> str:
    """SHA-256 (hex) of the netstrings of the fields, as event hashes are built (``domain.chain``)."""
    parts = [str(seq).encode(), effective_date.encode(), chain_hash.encode(), state.encode()]
    return hashlib.sha256(b"".join(b"%d:%b," % (len(p), p) for p in parts)).hexdigest()


def encode(state: FleetState) -> str:
    return json.dumps({"format": SNAPSHOT_FORMAT, "state": state.to_dict()}, separators=(",", ":"),
                      check_circular=False)


def write(conn: Connection, state: FleetState, seq: int, on: date, chain_hash: str) -> None:
    """Store the snapshot of events 1..``seq`` (``chain_hash``: event ``seq``'s hash)."""
    text = encode(state)
    day = on.isoformat()
    conn.execute(insert(snapshots).values(seq=seq, effective_date=day, state=text, chain_hash=chain_hash,
                                          digest=snapshot_digest(seq, day, chain_hash, text)))


def problem(snap: StoredSnapshot, text: str) -> str | None:
    """Why the snapshot cannot be trusted, or None."""
    if snap.event_hash is None:
        return f"the snapshot at event {snap.seq} is past the end of the chain"
    if snap.chain_hash != snap.event_hash:
        return (f"the snapshot at event {snap.seq} belongs to another chain: it records a hash for event "
                f"{snap.seq} that is not the event's")
    if snapshot_digest(snap.seq, snap.effective_date, snap.chain_hash, text) != snap.digest:
        return f"the snapshot at event {snap.seq} was altered: its content does not match its digest"
    return None


def _stored(conn: Connection, seq: int | None = None, after: int = 0) -> list[StoredSnapshot]:
    """Snapshots that carry a digest (older ones are ignored), in seq order; those past event ``after``."""
    query = (select(snapshots.c.seq, snapshots.c.effective_date, snapshots.c.chain_hash, snapshots.c.digest,
                    events.c.hash)
             .select_from(snapshots.outerjoin(events, events.c.seq == snapshots.c.seq))
             .where(snapshots.c.digest.is_not(None)).order_by(snapshots.c.seq))
    if seq is not None:
        query = query.where(snapshots.c.seq == seq)
    if after:
        query = query.where(snapshots.c.seq > after)
    return [StoredSnapshot(*row) for row in conn.execute(query)]


def _text(conn: Connection, seq: int) -> str:
    return conn.execute(select(snapshots.c.state).where(snapshots.c.seq == seq)).scalar_one()


def load(conn: Connection, seq: int) -> dict | None:
    """The snapshot at ``seq`` as stored (format and state), if it passes its check.

    One that fails is reported once per process (a :class:`SnapshotDistrusted` warning)
    and None is returned, so the caller folds the events instead.
    """
    key = (str(conn.engine.url), seq)
    if key in _DISTRUSTED:
        return None
    found = _stored(conn, seq)
    if not found:
        return None
    text = _text(conn, seq)
    reason = problem(found[0], text)
    if reason is not None:
        _DISTRUSTED.add(key)
        warnings.warn(SnapshotDistrusted(seq, reason), stacklevel=3)
        return None
    return json.loads(text)


def check_all(conn: Connection, after: int = 0) -> tuple[int, tuple[int, str] | None]:
    """Check every snapshot with a digest (of events past ``after`` only, if given): how many passed, and
    the first that failed (seq, reason)."""
    checked = 0
    for snap in _stored(conn, after=after):
        reason = problem(snap, _text(conn, snap.seq))
        if reason is not None:
            return checked, (snap.seq, reason)
        checked += 1
    return checked, None


def seqs(conn: Connection) -> Iterator[int]:
    """The sequence numbers of the snapshots readers may use, in order."""
    for snap in _stored(conn):
        yield snap.seq
