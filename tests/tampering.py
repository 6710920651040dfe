"""What someone with write access to the database can do to a ledger, on SQLite and PostgreSQL.

Each attack takes a SQLAlchemy connection inside a transaction, after :func:`disable_guards`
(an insider with the database's password can drop the append-only triggers). The tamper
table (``test_tampering.py``) and the CLI's wording tests (``test_cli.py``) share them.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlalchemy import Connection, text

from gpufleet.domain.chain import canonical_bytes, event_hash
from gpufleet.domain.merkle import leaf_hash
from gpufleet.ledger import merkle_store
from gpufleet.ledger.snapshots import snapshot_digest

Attack = Callable[[Connection], None]
_COLUMNS = ("recorded_at", "effective_date", "actor", "type", "payload", "idempotency_key", "prev_hash", "hash")


def disable_guards(conn: Connection) -> None:
    """Drop what refuses updates and deletes of events, the head and snapshots."""
    if conn.dialect.name == "postgresql":
        for table in ("events", "ledger_head", "snapshots", "merkle_nodes"):
            conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        return
    for (name,) in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).all():
        conn.execute(text(f'DROP TRIGGER "{name}"'))


def row(conn: Connection, seq: int) -> dict:
    return dict(conn.execute(text("SELECT * FROM events WHERE seq = :s"), {"s": seq}).mappings().one())


def last_seq(conn: Connection) -> int:
    return conn.execute(text("SELECT max(seq) FROM events")).scalar_one()


def snapshot_seqs(conn: Connection) -> list[int]:
    return list(conn.execute(text("SELECT seq FROM snapshots ORDER BY seq")).scalars())


def rebuild_tree(conn: Connection) -> None:
    """Recompute the whole Merkle tree from the events as stored (it is derived data: no secret)."""
    conn.execute(text("DELETE FROM merkle_nodes"))
    rows = conn.execute(text("SELECT seq, recorded_at, effective_date, actor, type, idempotency_key, prev_hash, "
                             "payload FROM events ORDER BY seq")).all()
    merkle_store.add_leaves(conn, 1, [leaf_hash(canonical_bytes(*r)) for r in rows])


def _rehash(conn: Connection, first: int) -> None:
    """Recompute the hash of every event from ``first`` on, the head and the Merkle tree: a consistent
    ledger again."""
    prev = row(conn, first - 1)["hash"] if first > 1 else "0" * 64
    for seq in range(first, last_seq(conn) + 1):
        r = row(conn, seq)
        digest = event_hash(seq, r["recorded_at"], r["effective_date"], r["actor"], r["type"], r["idempotency_key"],
                            prev, r["payload"])
        conn.execute(text("UPDATE events SET prev_hash = :p, hash = :h WHERE seq = :s"),
                     {"p": prev, "h": digest, "s": seq})
        prev = digest
    end = last_seq(conn)
    conn.execute(text("UPDATE ledger_head SET seq = :s, hash = :h, recorded_at = :r"),
                 {"s": end, "h": prev, "r": row(conn, end)["recorded_at"]})
    rebuild_tree(conn)


def reseal_snapshots(conn: Connection, first: int = 1, edit: Callable[[str], str] = lambda s: s) -> None:
    """Give every snapshot from ``first`` on the chain hash of its event now and a matching digest
    (the digest is no secret), after ``edit`` of its content."""
    for seq in [s for s in snapshot_seqs(conn) if s >= first]:
        snap = conn.execute(text("SELECT effective_date, state FROM snapshots WHERE seq = :s"), {"s": seq}).one()
        state, chain = edit(snap.state), row(conn, seq)["hash"]
        conn.execute(text("UPDATE snapshots SET state = :t, chain_hash = :c, digest = :d WHERE seq = :s"),
                     {"t": state, "c": chain, "d": snapshot_digest(seq, snap.effective_date, chain, state), "s": seq})


def fewer_installed(state_text: str, gpus: int = 5) -> str:
    """A snapshot's content with ``gpus`` fewer GPUs in its first installed group (still well-formed)."""
    image = json.loads(state_text)
    image["state"]["installed"][0][-1] -= gpus
    return json.dumps(image, separators=(",", ":"))


# -- attacks on events -------------------------------------------------------------------------


def edit_payload(seq: int) -> Attack:
    """Change the GPU count in event ``seq``'s payload (its stored hash stays)."""
    def attack(conn):
        done = conn.execute(text("UPDATE events SET payload = replace(payload, :old, :new) WHERE seq = :s"),
                            {"old": '"gpus":', "new": '"gpus":1', "s": seq})
        assert done.rowcount == 1
    return attack


def edit_column(column: str, value: str, seq: int) -> Attack:
    def attack(conn):
        conn.execute(text(f"UPDATE events SET {column} = :v WHERE seq = :s"), {"v": value, "s": seq})
    return attack


def delete_event(seq: int) -> Attack:
    def attack(conn):
        conn.execute(text("DELETE FROM events WHERE seq = :s"), {"s": seq})
    return attack


def swap_contents(a: int, b: int) -> Attack:
    """Swap everything but the sequence numbers of events ``a`` and ``b``."""
    def attack(conn):
        ra, rb = row(conn, a), row(conn, b)
        sets = ", ".join(f"{c} = :{c}" for c in _COLUMNS)
        conn.execute(text(f"UPDATE events SET {sets} WHERE seq = :seq"), {c: rb[c] for c in _COLUMNS} | {"seq": a})
        conn.execute(text(f"UPDATE events SET {sets} WHERE seq = :seq"), {c: ra[c] for c in _COLUMNS} | {"seq": b})
    return attack


def swap_seqs(a: int, b: int) -> Attack:
    """Exchange the sequence numbers of events ``a`` and ``b`` (a reorder)."""
    def attack(conn):
        conn.execute(text("UPDATE events SET seq = -1 WHERE seq = :a"), {"a": a})
        conn.execute(text("UPDATE events SET seq = :a WHERE seq = :b"), {"a": a, "b": b})
        conn.execute(text("UPDATE events SET seq = :b WHERE seq = -1"), {"b": b})
    return attack


def _forged(conn: Connection, seq: int, prev: dict) -> None:
    """A self-consistent event ``seq`` that links to ``prev`` with a valid hash."""
    payload = '{"entity":"x","kind":"company","name":"X","parent":null}'
    digest = event_hash(seq, prev["recorded_at"], prev["effective_date"], "mallory", "entity_registered", None,
                        prev["hash"], payload)
    conn.execute(text("INSERT INTO events (seq, recorded_at, effective_date, actor, type, payload, idempotency_key, "
                      "prev_hash, hash) VALUES (:s, :r, :e, 'mallory', 'entity_registered', :p, NULL, :prev, :h)"),
                 {"s": seq, "r": prev["recorded_at"], "e": prev["effective_date"], "p": payload,
                  "prev": prev["hash"], "h": digest})


def insert_forged_by_renumbering(at: int) -> Attack:
    """Shift events ``at``.. up by one and slip in a forged event ``at`` that links to event ``at - 1``
    with a valid hash. The forged event itself is self-consistent: the first link that breaks is
    event ``at + 1``'s."""
    def attack(conn):
        conn.execute(text("UPDATE events SET seq = -(seq + 1) WHERE seq >= :a"), {"a": at})
        conn.execute(text("UPDATE events SET seq = -seq WHERE seq < 0"))
        _forged(conn, at, row(conn, at - 1))
        conn.execute(text("UPDATE ledger_head SET seq = seq + 1"))
    return attack


def append_forged(conn: Connection) -> None:
    """A forged event at the end, linked and hashed correctly, with the head moved to it: what any
    writer of the database can do without dropping a trigger (its leaf added to the Merkle tree too)."""
    end = last_seq(conn)
    _forged(conn, end + 1, row(conn, end))
    forged = row(conn, end + 1)
    merkle_store.add_leaves(conn, end + 1, [leaf_hash(canonical_bytes(
        end + 1, *(forged[c] for c in ("recorded_at", "effective_date", "actor", "type", "idempotency_key",
                                       "prev_hash", "payload"))))])
    conn.execute(text("UPDATE ledger_head SET seq = :s, hash = :h"), {"s": end + 1, "h": row(conn, end + 1)["hash"]})


def truncate(keep: int, rebuild_head: bool = False, drop_snapshots: bool = False) -> Attack:
    """Delete the events after ``keep``; optionally point the head at event ``keep`` and delete the
    snapshots past it, so that nothing inside the database shows the cut (with the head, the Merkle tree is
    rebuilt)."""
    def attack(conn):
        conn.execute(text("DELETE FROM events WHERE seq > :k"), {"k": keep})
        if rebuild_head:
            r = row(conn, keep)
            conn.execute(text("UPDATE ledger_head SET seq = :s, hash = :h, recorded_at = :r"),
                         {"s": keep, "h": r["hash"], "r": r["recorded_at"]})
            rebuild_tree(conn)
        if drop_snapshots:
            conn.execute(text("DELETE FROM snapshots WHERE seq > :k"), {"k": keep})
    return attack


def head_seq_minus_one(conn: Connection) -> None:
    conn.execute(text("UPDATE ledger_head SET seq = seq - 1"))


def head_hash_edited(conn: Connection) -> None:
    conn.execute(text("UPDATE ledger_head SET hash = :h"), {"h": "f" * 64})


def consistent_rewrite(seq: int, reseal: bool = True) -> Attack:
    """Rewrite who recorded event ``seq`` and recompute every later hash and the head (and, with
    ``reseal``, the snapshots' chain hashes and digests): the chain is whole again."""
    def attack(conn):
        conn.execute(text("UPDATE events SET actor = 'mallory' WHERE seq = :s"), {"s": seq})
        _rehash(conn, seq)
        if reseal:
            reseal_snapshots(conn, seq)
    return attack


# -- attacks on snapshots ----------------------------------------------------------------------


def edit_last_snapshot(conn: Connection) -> None:
    """Take 5 GPUs off the newest snapshot's content; its digest stays."""
    seq = snapshot_seqs(conn)[-1]
    state = conn.execute(text("SELECT state FROM snapshots WHERE seq = :s"), {"s": seq}).scalar_one()
    conn.execute(text("UPDATE snapshots SET state = :t WHERE seq = :s"), {"t": fewer_installed(state), "s": seq})


def forge_last_snapshot_with_its_digest(conn: Connection) -> None:
    """As :func:`edit_last_snapshot`, and recompute the digest too."""
    reseal_snapshots(conn, snapshot_seqs(conn)[-1], fewer_installed)
