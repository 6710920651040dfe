"""Verifiable disclosure: the ledger's Merkle tree (RFC 9162) and its signed checkpoints.

``merkle_nodes`` holds the root of every perfect subtree of the tree over the events in sequence
order: the node at ``level`` L and index ``idx`` i covers the leaves (events seq = i·2^L + 1 ..
(i+1)·2^L); level 0 holds the leaf hashes. Any inclusion or consistency proof is built from
O(log n) of them. ``checkpoints`` holds each signed tree head's note body (C2SP tlog-checkpoint)
and ``checkpoint_signatures`` its signature lines (the log's own and any cosigner's). All three
are append-only, as the events are.

The upgrade fills ``merkle_nodes`` for the events already in the ledger (:func:`_backfill`): it reads
them in seq order, ``BATCH`` at a time, and stores each batch's leaves and completed parents as an
append does (``merkle_store.add_leaves``), in the migration's transaction.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = ("merkle_nodes", "checkpoints", "checkpoint_signatures")
BATCH = 50_000  # events read and stored per step of the backfill
_EVENTS = ("SELECT seq, recorded_at, effective_date, actor, type, idempotency_key, prev_hash, payload FROM events "
           "WHERE seq > :after ORDER BY seq LIMIT :n")


def _sqlite_guards(table: str) -> list[str]:
    return [f"CREATE TRIGGER {table}_no_{verb} BEFORE {verb.upper()} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, 'gpufleet {table} is append-only'); END" for verb in ("update", "delete")]


def _postgres_guards(table: str) -> list[str]:
    return [f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION gpufleet_refuse()",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION gpufleet_refuse()"]


def upgrade() -> None:
    op.create_table(
        "merkle_nodes",
        sa.Column("level", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "checkpoints",
        sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("origin", sa.String(200), nullable=False),
        sa.Column("root_hash", sa.String(64), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(27), nullable=False),
    )
    op.create_table(
        "checkpoint_signatures",
        sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("key_name", sa.String(200), primary_key=True, autoincrement=False),
        sa.Column("key_id", sa.String(8), primary_key=True, autoincrement=False),
        sa.Column("line", sa.Text, nullable=False),
        sa.Column("added_at", sa.String(27), nullable=False),
    )
    guards = _postgres_guards if op.get_bind().dialect.name == "postgresql" else _sqlite_guards
    for table in TABLES:
        for statement in guards(table):
            op.execute(statement)
    _backfill(op.get_bind())


def _backfill(conn: sa.Connection) -> None:
    """The Merkle tree of the events already recorded: leaf hash = SHA-256(0x00 || canonical bytes),
    each batch appended to the tree as ``_Writer._flush`` does. The events must be 1..n without a gap."""
    from gpufleet.domain.chain import canonical_bytes
    from gpufleet.domain.merkle import leaf_hash
    from gpufleet.errors import LedgerCorrupt
    from gpufleet.ledger.merkle_store import add_leaves

    done = 0
    while rows := conn.execute(sa.text(_EVENTS), {"after": done, "n": BATCH}).all():
        if rows[0][0] != done + 1 or rows[-1][0] != done + len(rows):
            raise LedgerCorrupt(f"the events after {done} are not numbered {done + 1}, {done + 2}, ...: run "
                                "`gpufleet ledger verify` on the ledger before migrating it", seq=done + 1)
        add_leaves(conn, done + 1, [leaf_hash(canonical_bytes(*row)) for row in rows])
        done += len(rows)


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
