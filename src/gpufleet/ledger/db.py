"""Opening a database: one code path for SQLite (the embedded default) and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from gpufleet.errors import InputError, NotInitialized

DEFAULT_DB = "./gpufleet.db"
_MIGRATIONS = Path(__file__).parent / "migrations"


def database_url(db: str) -> str:
    """A SQLAlchemy URL; a plain path means an SQLite file."""
    return db if "://" in db else f"sqlite:///{db}"


def make_engine(db: str = DEFAULT_DB) -> Engine:
    url = database_url(db)
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise InputError(f"cannot open database '{db}': {exc}", field="db") from None
    if engine.dialect.name == "sqlite":
        _serialize_sqlite_writers(engine)
    return engine


def _serialize_sqlite_writers(engine: Engine) -> None:
    """Every SQLite transaction takes the write lock up front (BEGIN IMMEDIATE).

    That gives SQLite the same guarantee as ``SELECT ... FOR UPDATE`` on the head row
    in PostgreSQL: appends are serialized, so no two writers extend the chain at once.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # let us emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _alembic_config(engine: Engine, connection=None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine) -> None:
    """Create or migrate the schema to the newest revision (idempotent)."""
    try:
        with engine.begin() as conn:
            command.upgrade(_alembic_config(engine, conn), "head")
    except OperationalError as exc:
        raise InputError(f"cannot open database: {exc.orig}", field="db") from None


def require_schema(engine: Engine) -> None:
    """Raise :class:`NotInitialized` unless the schema is at the newest revision."""
    head = ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise InputError(f"cannot open database: {exc.orig}", field="db") from None
    if current is None:
        raise NotInitialized(f"database {engine.url!r} has no gpufleet ledger: run `gpufleet init` first")
    if current != head:
        raise NotInitialized(f"database schema is at revision {current}, not {head}: run `gpufleet init` to migrate")
