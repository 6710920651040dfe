"""Snapshots carry the chain hash at their seq and a digest; the head and the snapshots get guards.

The head row may only move forward, to an event that is in the chain (same seq and hash),
and can be neither inserted nor deleted; snapshots can be neither updated nor deleted.
Snapshots written before this revision have no digest and are ignored from now on.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_HEAD_MOVES_BACK = (
    "NEW.id <> OLD.id OR NEW.seq < OLD.seq OR NEW.recorded_at {c}< OLD.recorded_at "
    "OR NEW.hash IS {distinct} COALESCE((SELECT hash FROM events WHERE seq = NEW.seq), "
    "CASE WHEN NEW.seq = 0 THEN OLD.hash END)"
)
_HEAD_MESSAGE = "gpufleet ledger is append-only: the head only moves forward, to an event in the chain"
_SQLITE_MOVES_BACK = _HEAD_MOVES_BACK.format(c="", distinct="NOT")
_POSTGRES_MOVES_BACK = _HEAD_MOVES_BACK.format(c='COLLATE "C" ', distinct="DISTINCT FROM")  # ISO text, bytewise

_SQLITE_GUARDS = [
    "CREATE TRIGGER ledger_head_no_insert BEFORE INSERT ON ledger_head "
    "BEGIN SELECT RAISE(ABORT, 'gpufleet ledger is append-only: the head has one row'); END",
    "CREATE TRIGGER ledger_head_no_delete BEFORE DELETE ON ledger_head "
    "BEGIN SELECT RAISE(ABORT, 'gpufleet ledger is append-only: the head cannot be deleted'); END",
    f"CREATE TRIGGER ledger_head_forward_only BEFORE UPDATE ON ledger_head "
    f"WHEN {_SQLITE_MOVES_BACK} "
    f"BEGIN SELECT RAISE(ABORT, '{_HEAD_MESSAGE}'); END",
    "CREATE TRIGGER snapshots_no_update BEFORE UPDATE ON snapshots "
    "BEGIN SELECT RAISE(ABORT, 'gpufleet ledger is append-only: snapshots cannot be updated'); END",
    "CREATE TRIGGER snapshots_no_delete BEFORE DELETE ON snapshots "
    "BEGIN SELECT RAISE(ABORT, 'gpufleet ledger is append-only: snapshots cannot be deleted'); END",
]
_POSTGRES_GUARDS = [
    "CREATE FUNCTION gpufleet_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN RAISE EXCEPTION 'gpufleet ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME; END $$",
    "CREATE FUNCTION gpufleet_head_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN IF TG_OP <> 'UPDATE' THEN "
    "RAISE EXCEPTION 'gpufleet ledger is append-only: % on ledger_head refused', TG_OP; END IF; "
    f"IF {_POSTGRES_MOVES_BACK} THEN "
    f"RAISE EXCEPTION '{_HEAD_MESSAGE}'; END IF; RETURN NEW; END $$",
    "CREATE TRIGGER ledger_head_forward_only BEFORE INSERT OR UPDATE OR DELETE ON ledger_head "
    "FOR EACH ROW EXECUTE FUNCTION gpufleet_head_forward_only()",
    "CREATE TRIGGER ledger_head_no_truncate BEFORE TRUNCATE ON ledger_head "
    "FOR EACH STATEMENT EXECUTE FUNCTION gpufleet_refuse()",
    "CREATE TRIGGER snapshots_append_only BEFORE UPDATE OR DELETE ON snapshots "
    "FOR EACH ROW EXECUTE FUNCTION gpufleet_refuse()",
    "CREATE TRIGGER snapshots_no_truncate BEFORE TRUNCATE ON snapshots "
    "FOR EACH STATEMENT EXECUTE FUNCTION gpufleet_refuse()",
]


def upgrade() -> None:
    op.add_column("snapshots", sa.Column("chain_hash", sa.String(64), nullable=True))
    op.add_column("snapshots", sa.Column("digest", sa.String(64), nullable=True))
    guards = _POSTGRES_GUARDS if op.get_bind().dialect.name == "postgresql" else _SQLITE_GUARDS
    for statement in guards:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for trigger, table in [("ledger_head_forward_only", "ledger_head"), ("ledger_head_no_truncate", "ledger_head"),
                               ("snapshots_append_only", "snapshots"), ("snapshots_no_truncate", "snapshots")]:
            op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
        op.execute("DROP FUNCTION IF EXISTS gpufleet_head_forward_only()")
        op.execute("DROP FUNCTION IF EXISTS gpufleet_refuse()")
    else:
        for trigger in ("ledger_head_no_insert", "ledger_head_no_delete", "ledger_head_forward_only",
                        "snapshots_no_update", "snapshots_no_delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    with op.batch_alter_table("snapshots") as batch:
        batch.drop_column("digest")
        batch.drop_column("chain_hash")
