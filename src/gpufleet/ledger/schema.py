"""Tables of the ledger (SQLAlchemy Core). The Alembic migrations create them.

Dates and instants are stored as fixed-format ISO text so that they hash, sort and
compare identically on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

events = Table(
    "events",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("recorded_at", String(27), nullable=False),
    Column("effective_date", String(10), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("type", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("idempotency_key", String(200), nullable=True, unique=True),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_events_effective_seq", "effective_date", "seq"),
    Index("ix_events_recorded_at", "recorded_at"),
    Index("ix_events_type", "type"),
)

# One row (id = 1): the chain's head, locked by every append.
ledger_head = Table(
    "ledger_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("recorded_at", String(27), nullable=False),
    Column("frontier", String(10), nullable=True),  # the latest effective date recorded
)

# Derived caches: the state of all events with seq <= seq and effective_date <= effective_date.
# chain_hash is event seq's hash when the snapshot was written; digest covers seq, effective_date,
# chain_hash and state (ledger.snapshots). Snapshots without a digest (written before 0002) are ignored.
snapshots = Table(
    "snapshots",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("effective_date", String(10), nullable=False),
    Column("state", Text, nullable=False),
    Column("chain_hash", String(64), nullable=True),
    Column("digest", String(64), nullable=True),
)
