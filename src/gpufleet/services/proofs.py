"""Proofs over the ledger's Merkle tree, as ``gpufleet prove`` / ``gpufleet tree`` and the API serve them.

Each answer is read in one connection (the head and the nodes agree), as JSON-ready dicts with hashes
in lower-case hex; the formats are in ``docs/disclosure.md``. Sizes default to the ledger's head.
"""

from __future__ import annotations

from gpufleet.domain.chain import Event
from gpufleet.ledger import merkle_store
from gpufleet.ledger.store import Ledger
from gpufleet.services.fleet import FleetService

ENVELOPE = ("seq", "recorded_at", "effective_date", "actor", "type", "idempotency_key", "prev_hash", "payload",
            "hash")


def envelope(e: Event) -> dict:
    """The event's envelope fields as stored: ``payload`` is the canonical JSON text, so that
    ``leaf_hash(canonical_bytes(...))`` of these fields is the event's leaf (docs/ledger.md)."""
    return {"seq": e.seq, "recorded_at": e.recorded_at, "effective_date": e.effective_date.isoformat(),
            "actor": e.actor, "type": e.event_type, "idempotency_key": e.idempotency_key, "prev_hash": e.prev_hash,
            "payload": e.payload, "hash": e.hash}


def tree_root(fleet: FleetService, size: int | None = None) -> dict:
    """``{"tree_size", "root_hash"}`` of the tree over events 1..size (default: every event)."""
    with fleet.engine.connect() as conn:
        size = merkle_store.tree_size(conn) if size is None else size
        return {"tree_size": size, "root_hash": merkle_store.root_hash(conn, size).hex()}


def inclusion(fleet: FleetService, seq: int, size: int | None = None) -> tuple[dict, Event]:
    """The inclusion proof of event ``seq`` in the tree of ``size`` events (default: every event), as
    ``{"leaf_index", "seq", "tree_size", "leaf_hash", "root_hash", "audit_path"}``, and the event itself
    (the caller decides whether it may be shown)."""
    with fleet.engine.connect() as conn:
        size = merkle_store.tree_size(conn) if size is None else size
        proof = merkle_store.inclusion(conn, seq, size)
        event = next(Ledger(conn).events(seq - 1, seq))
    return proof.to_json(), event


def consistency(fleet: FleetService, old: int, new: int | None = None) -> dict:
    """The proof that the tree of ``old`` events is a prefix of the tree of ``new`` (default: every event),
    as ``{"old_size", "new_size", "old_root", "new_root", "proof"}``."""
    with fleet.engine.connect() as conn:
        new = merkle_store.tree_size(conn) if new is None else new
        return merkle_store.consistency(conn, old, new).to_json()
