"""Verifiable disclosure: the ledger's Merkle tree (RFC 9162) and its signed checkpoints.

``merkle_nodes`` holds the root of every perfect subtree of the tree over the events in sequence
order: the node at ``level`` L and index ``idx`` i covers the leaves (events seq = i·2^L + 1 ..
(i+1)·2^L); level 0 holds the leaf hashes. Any inclusion or consistency proof is built from
O(log n) of them. ``checkpoints`` holds each signed tree head's note body (C2SP tlog-checkpoint)
and ``checkpoint_signatures`` its signature lines (the log's own and any cosigner's). All three
are append-only, as the events are.

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


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
