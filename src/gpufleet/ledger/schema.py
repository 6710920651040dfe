"""Tables of the ledger (SQLAlchemy Core). The Alembic migrations create them.

Dates and instants are stored as fixed-format ISO text so that they hash, sort and
compare identically on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Integer, MetaData, String, Table, Text

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

# -- verifiable disclosure (migration 0004) --------------------------------------------------

# The root of every perfect subtree of the RFC 9162 tree over the events in seq order: (level L,
# idx i) covers events i*2**L + 1 .. (i+1)*2**L; level 0 holds the leaf hashes. Hex SHA-256.
merkle_nodes = Table(
    "merkle_nodes",
    metadata,
    Column("level", Integer, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
)

# Signed tree heads (C2SP tlog-checkpoint): the note body; its signature lines are kept apart so
# that cosigners can add theirs to an append-only record.
checkpoints = Table(
    "checkpoints",
    metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("origin", String(200), nullable=False),
    Column("root_hash", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", String(27), nullable=False),
)

checkpoint_signatures = Table(
    "checkpoint_signatures",
    metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("key_name", String(200), primary_key=True, autoincrement=False),
    Column("key_id", String(8), primary_key=True, autoincrement=False),  # hex of the signed-note key hash
    Column("line", Text, nullable=False),  # the whole signature line, "— name base64"
    Column("added_at", String(27), nullable=False),
)

# -- the service's own records (not part of the hash chain) ------------------------------------

# The principals that may sign in (a person or a service account of the ledger), enabled by an admin.
users = Table(
    "users",
    metadata,
    Column("principal", String(80), primary_key=True, autoincrement=False),
    Column("created_at", String(27), nullable=False),
    Column("disabled_at", String(27), nullable=True),
)

# API tokens: only a SHA-256 of the secret is kept; ``token_id`` is the public part of the token.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_id", String(32), primary_key=True, autoincrement=False),
    Column("principal", String(80), nullable=False),
    Column("name", String(200), nullable=False),
    Column("secret_sha256", String(64), nullable=False),
    Column("scope", String(8), nullable=False),
    Column("created_at", String(27), nullable=False),
    Column("expires_at", String(27), nullable=False),
    Column("revoked_at", String(27), nullable=True),
    Index("ix_api_tokens_principal", "principal"),
)

# Work that outlives one request; ``state`` in queued, running, succeeded, failed, interrupted.
jobs = Table(
    "jobs",
    metadata,
    Column("job_id", String(32), primary_key=True, autoincrement=False),
    Column("kind", String(32), nullable=False),
    Column("principal", String(80), nullable=False),
    Column("state", String(16), nullable=False),
    Column("progress", Float, nullable=False),
    Column("message", Text, nullable=False),
    Column("params", Text, nullable=False),
    Column("result", Text, nullable=True),
    Column("problem", Text, nullable=True),
    Column("created_at", String(27), nullable=False),
    Column("updated_at", String(27), nullable=False),
    Index("ix_jobs_state", "state"),
)

# The first answer to each (principal, Idempotency-Key) of a write request, replayed to retries.
api_requests = Table(
    "api_requests",
    metadata,
    Column("principal", String(80), primary_key=True, autoincrement=False),
    Column("idempotency_key", String(200), primary_key=True, autoincrement=False),
    Column("request_sha256", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", String(27), nullable=False),
)
