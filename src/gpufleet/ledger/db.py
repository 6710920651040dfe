"""Opening a database: one code path for SQLite (the embedded default) and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, ProgrammingError

from gpufleet.errors import InputError, NotInitialized

DEFAULT_DB = "./gpufleet.db"
HEAD_REVISION = "0004"  # the newest migration; a test checks it against Alembic's own view
_MIGRATIONS = Path(__file__).parent / "migrations"


def database_url(db: str) -> str:
    """A SQLAlchemy URL; a plain path means an SQLite file."""
    return db if "://" in db else f"sqlite:///{db}"


# An acknowledged event must survive power loss and an OS crash: in WAL mode, NORMAL can lose the
# last commits (fsync only at checkpoints); FULL syncs the WAL at every commit (bench/ledger.py: cost).
SQLITE_SYNCHRONOUS = ("FULL", "EXTRA", "NORMAL")


def make_engine(db: str = DEFAULT_DB, *, must_exist: bool = False, synchronous: str = "FULL") -> Engine:
    """An engine for ``db``. With ``must_exist``, a missing SQLite file is an error, not a new file.
    ``synchronous`` is SQLite's setting (FULL, the durable default; NORMAL only to measure its cost)."""
    if synchronous not in SQLITE_SYNCHRONOUS:
        raise InputError(f"'{synchronous}' is not one of {', '.join(SQLITE_SYNCHRONOUS)}", field="synchronous")
    url = database_url(db)
    if must_exist and url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            raise NotInitialized(f"no database at {path}: run `gpufleet init` (or pass --db / set GPUFLEET_DB)")
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise InputError(f"cannot open database '{db}': {exc}", field="db") from None
    if engine.dialect.name == "sqlite":
        _serialize_sqlite_writers(engine, synchronous)
    return engine


READ_ONLY = "gpufleet_read_only"  # an execution option: see read_only()


def _serialize_sqlite_writers(engine: Engine, synchronous: str) -> None:
    """Every SQLite transaction that may write takes the write lock up front (BEGIN IMMEDIATE).

    That gives SQLite the same guarantee as ``SELECT ... FOR UPDATE`` on the head row
    in PostgreSQL: appends are serialized, so no two writers extend the chain at once.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # let us emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")


def read_only(engine: Engine) -> Engine:
    """The same database for transactions that only read: on SQLite they begin DEFERRED, so in WAL mode
    they read a snapshot beside the one writer instead of queueing for the write lock (a server's
    token checks and head reads under appends); on PostgreSQL they are READ ONLY. Sharing the pool."""
    return engine.execution_options(**{READ_ONLY: True}, postgresql_readonly=True)


def alembic_config(connection=None):
    """Alembic's configuration for gpufleet's migrations (imported late: Alembic is slow to load)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine) -> None:
    """Create or migrate the schema to the newest revision (idempotent)."""
    from alembic import command

    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
    except OperationalError as exc:
        raise InputError(f"cannot open database: {exc.orig}", field="db") from None


def require_schema(engine: Engine) -> None:
    """Raise :class:`NotInitialized` unless the schema is at the newest revision."""
    head = HEAD_REVISION
    try:
        with engine.connect() as conn:
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (OperationalError, ProgrammingError) as exc:
        if "alembic_version" not in str(exc.orig):
            raise InputError(f"cannot open database: {exc.orig}", field="db") from None
        current = None
    if current is None:
        raise NotInitialized(f"database {engine.url!r} has no gpufleet ledger: run `gpufleet init` first")
    if current != head:
        raise NotInitialized(f"database schema is at revision {current}, not {head}: run `gpufleet init` to migrate")
