"""The fleet service: every read and write of the ledger goes through here.

Each public method owns exactly one transaction. The shells (CLI, API) call these
methods and format what they return; they never touch the database themselves.
Every write goes through :meth:`FleetService._append`, where each event passes the approval
gate (:func:`gpufleet.domain.governance.approval_gate`) before the ledger's invariants.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import gzip
import hashlib
import json
import os
import secrets
import sqlite3
import threading
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import DatabaseError

from gpufleet.domain import access, views, vote_signing
from gpufleet.domain.access import Principal
from gpufleet.domain.chain import Event, end_of_day, format_instant, parse_instant
from gpufleet.domain.events import AccessGranted, ApprovalRecorded, Payload, payload_class
from gpufleet.domain.governance import GovernancePolicy, approval_gate
from gpufleet.domain.state import FleetState
from gpufleet.domain.types import FIRST_DAY, LAST_DAY, EnvelopeText
from gpufleet.errors import ConflictError, InputError, LedgerCorrupt, NotInitialized
from gpufleet.ledger import db
from gpufleet.ledger.schema import events
from gpufleet.ledger.store import Anchor, Draft, Ledger, VerifyReport
from gpufleet.services.head_state import HeadFold, HeadStates

STATUS_MEMO = 32  # status answers a long-lived process keeps
K = TypeVar("K")


class KeptAnswer:
    """An answer kept for the ledger prefix it was read from (a status, the claims), and its encodings,
    each made once (a status answer at a million events is megabytes)."""

    def __init__(self, data):
        self.data = data

    @functools.cached_property
    def json(self) -> bytes:
        """Compact UTF-8 JSON, as the API sends it."""
        return json.dumps(self.data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()

    @functools.cached_property
    def etag(self) -> str:
        """A strong entity tag (RFC 9110) of :attr:`json`."""
        return '"' + hashlib.sha256(self.json).hexdigest()[:32] + '"'

    @functools.cached_property
    def gzip(self) -> bytes:
        """:attr:`json`, gzip-compressed (reproducibly: no time stamp)."""
        return gzip.compress(self.json, compresslevel=6, mtime=0)


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


AlsoWrite = Callable[[Connection, list[Event]], None]  # more writes inside an append's transaction


@dataclass(frozen=True)
class LoadResult:
    path: str
    events: int
    first_seq: int | None
    last_seq: int | None
    head_hash: str


@dataclass(frozen=True)
class ReplayReport:
    ok: bool
    problems: list[str]


class FleetService:
    """The system of record for one database (``--db``)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.reader = db.read_only(engine)  # for transactions that only read (``engine`` writes)
        self._head_states = HeadStates()
        # status answers by (query, seq, hash of that event): a ledger prefix never changes, so neither do they
        self._status_memo: OrderedDict[tuple, KeptAnswer] = OrderedDict()
        self._computing: dict[tuple, Future] = {}  # status answers being computed, by key
        self._memo_lock = threading.Lock()
        self._keepers: dict[str, object] = {}

    def reading_head(self) -> contextlib.AbstractContextManager[HeadFold]:
        """Hold the fold of every event at the head (or newer) for the block: shared, so read it only.
        A long-lived process (the server) keeps it in memory and brings it forward in place as the
        head moves (:class:`gpufleet.services.head_state.HeadStates`)."""
        return self._head_states.reading(self.reader)

    @classmethod
    def open(cls, database: str = db.DEFAULT_DB, *, create: bool = False) -> FleetService:
        engine = db.make_engine(database, must_exist=not create)
        with _opening(database):
            if create:
                db.upgrade(engine)
            else:
                db.require_schema(engine)
        return cls(engine)

    # -- writes -------------------------------------------------------------------------

    def record(self, payload: Payload, on: date | None = None, actor: str | None = None,
               idempotency_key: str | None = None, *, policy: GovernancePolicy | None = None,
               after_the_fact: bool = False, principal: Principal | None = None,
               then: AlsoWrite | None = None) -> Event:
        """Append one event (effective ``on``, default today); refused if it breaks an invariant, or
        executes a transaction that needs approval without it (unless it is history ``after_the_fact``).
        With ``principal`` (the service's authenticated caller), it is the actor, and its access roles
        at the head of the ledger must allow the event (:func:`gpufleet.domain.access.require_record`)."""
        return self.record_many([(payload, on or datetime.now(UTC).date(), idempotency_key)], actor, policy=policy,
                                after_the_fact=after_the_fact, principal=principal, then=then)[0]

    def record_many(self, items: Sequence[tuple[Payload, date, str | None]], actor: str | None = None, *,
                    policy: GovernancePolicy | None = None, after_the_fact: bool = False,
                    principal: Principal | None = None, then: AlsoWrite | None = None) -> list[Event]:
        """Append several events (payload, effective date, idempotency key) in one transaction;
        ``then(conn, events)`` writes what must commit with them (the service's stored answer), or
        raises to write nothing."""
        actor = principal.id if principal is not None else actor
        drafts = [Draft(p, on, *_envelope(actor, key)) for p, on, key in items]
        with self.engine.begin() as conn:
            written = self._append(Ledger(conn), drafts, policy, after_the_fact, principal)
            if then is not None:
                then(conn, written)
            return written

    def load(self, path: Path, actor: str | None = None, *, parsed: tuple | None = None,
             migrate: bool = False, principal: Principal | None = None) -> LoadResult:
        """Validate a scenario file and append all of it in one transaction, or nothing; ``parsed``:
        what :func:`read_scenario` returned for it; ``migrate``: create or migrate the schema in that
        same transaction (so a refused load leaves no schema behind either). A local load is history
        recorded after the fact; a service ``principal``'s load passes its access roles and the
        approval rules event by event, and is recorded now, like any other write."""
        from gpufleet.domain.scenario import scenario_events  # builds many models: import when needed
        from gpufleet.services.scenario_io import location, read_scenario

        scenario, lines = parsed or read_scenario(path)
        items = sorted(scenario_events(scenario), key=_recorded)
        actor = principal.id if principal else _envelope(actor, None)[0] if actor else scenario.actor
        drafts = [Draft(e.payload, e.effective_date, actor, recorded_at=None if principal else _recorded(e),
                        origin=location(path, lines, e.path)) for e in items]
        with self.engine.begin() as conn:
            if migrate:
                from alembic import command

                with _opening(str(self.engine.url)):
                    command.upgrade(db.alembic_config(conn), "head")
            ledger = Ledger(conn)
            written = self._append(ledger, drafts, None, principal is None, principal)
            head = ledger.head()
        first = written[0].seq if written else None
        return LoadResult(str(path), len(written), first, written[-1].seq if written else None, head.hash)

    @staticmethod
    def _append(ledger: Ledger, drafts: Sequence[Draft], policy: GovernancePolicy | None,
                after_the_fact: bool, principal: Principal | None = None) -> list[Event]:
        """The one way events enter the ledger: each passes the gate (the caller's access roles, when
        a service principal calls; the approval rules), then the invariants, all on the head state
        inside the append's transaction, so a role revoked a moment earlier is already gone. Access is
        judged on the state at the ledger's frontier, so a grant takes effect when it is recorded: it
        cannot be dated after today (history recorded ``after_the_fact`` excepted)."""
        policy = policy or GovernancePolicy()
        approvals = partial(approval_gate, policy=policy, after_the_fact=after_the_fact)
        today = datetime.now(UTC).date()

        def order() -> dict[str, int]:  # the transactions' recording order, read only for a signed vote's series
            created = ledger.events(types=list(vote_signing.CREATORS))
            return vote_signing.recording_order((e.seq, e.event_type, e.payload) for e in created)

        def gate(state: FleetState, payload: Payload, on: date) -> None:
            if isinstance(payload, AccessGranted) and on > today and not after_the_fact:
                raise InputError(f"an access grant takes effect when it is recorded; it cannot be dated {on}, after "
                                 f"today ({today})", field="on")
            if principal is not None:
                access.require_record(state, principal, payload)
            approvals(state, payload, on)
            if isinstance(payload, ApprovalRecorded):
                vote_signing.check_vote(state, payload, policy, on, after_the_fact, order)

        return ledger.append(drafts, gate=gate)

    # -- reads --------------------------------------------------------------------------

    def state(self, as_of: date | None = None, known_at: str | None = None) -> FleetState:
        with self.reader.connect() as conn:
            return Ledger(conn).state(as_of, known_at_instant(known_at))

    def status(self, as_of: date | None = None, known_at: str | None = None, entity: str | None = None) -> dict:
        """The documented ``status`` JSON: the query, then holdings, sites, loans, transfers, claims."""
        return self.status_answer(as_of, known_at, entity).data

    def status_answer(self, as_of: date | None = None, known_at: str | None = None,
                      entity: str | None = None) -> KeptAnswer:
        """:meth:`status`, kept (shared: do not change it) for the ledger prefix it was read from, so a
        long-lived process answers a repeated query with two small reads and no encoding."""
        known = known_at_instant(known_at)
        with self.reader.connect() as conn:
            ledger = Ledger(conn)
            if known is None:
                head = ledger.head()
                seq, digest = head.seq, head.hash
            else:
                seq = ledger.known_seq(known)
                digest = conn.execute(select(events.c.hash).where(events.c.seq == seq)).scalar()
            key = ("as_of", as_of, known, seq, digest, entity, datetime.now(UTC).date())
            found = self._memo(key)
            if found is not None:
                return found
            state = ledger._state(as_of, seq)
        return self._memo(key, lambda: self._status(state, as_of, known, seq, entity))

    def head_status(self, entity: str | None = None, fold: HeadFold | None = None) -> KeptAnswer:
        """``status`` with no as_of or known_at, from the head fold kept in memory (:meth:`reading_head`;
        ``fold``: one the caller holds), kept for the head's (seq, hash)."""
        if fold is None:
            with self.reading_head() as held:
                return self.head_status(entity, held)
        key = ("head", fold.seq, fold.hash, entity, datetime.now(UTC).date())
        return self._memo(key) or self._memo(key, lambda: self._status(fold.state, None, None, fold.seq, entity))

    @staticmethod
    def _status(state: FleetState, as_of: date | None, known: str | None, seq: int, entity: str | None) -> dict:
        if entity is not None:
            state.entity(entity, "entity")
        on = as_of or state.as_of or datetime.now(UTC).date()
        header = {"as_of": on.isoformat(), "known_at": known, "ledger_seq": seq, "entity": entity}
        return header | views.status_report(state, on, entity)

    def keeper(self, name: str, make: Callable[[], K]) -> K:
        """The service's one ``name`` object, made on first use: where a module keeps what it derived from
        the ledger for later requests of a long-lived process. What it keeps names the ledger prefix it
        was read from, and is checked against the ledger before each reuse."""
        with self._memo_lock:
            if name not in self._keepers:
                self._keepers[name] = make()
            return self._keepers[name]

    def kept(self, key: tuple, compute: Callable[[], object]) -> KeptAnswer:
        """``compute()``'s answer, kept for ``key`` (the newest 32 answers), which must name the ledger
        prefix the answer reads, e.g. the head's seq and hash: an answer kept for a head reflects that
        head or a later one, and a write changes the key. One thread computes; the others asking wait."""
        return self._memo(key, compute, encode=False)

    def _memo(self, key: tuple, compute=None, encode: bool = True) -> KeptAnswer | None:
        """The status answer kept for ``key``, or (with ``compute``) compute and keep it (the newest 32).
        One thread computes a missing answer; the others asking for it meanwhile wait for that one
        (an answer costs half a second at a million events, and a new head is asked for by every client)."""
        with self._memo_lock:
            if key in self._status_memo:
                self._status_memo.move_to_end(key)
                return self._status_memo[key]
            if compute is None:
                return None
            pending, mine = self._computing.get(key), False
            if pending is None:
                pending, mine = self._computing.setdefault(key, Future()), True
        if not mine:
            return pending.result()  # or the computing thread's error
        try:
            answer = KeptAnswer(compute())
            if encode:
                answer.json  # encoded once, here, rather than by the first of the waiting requests
        except BaseException as exc:
            with self._memo_lock:
                del self._computing[key]
            pending.set_exception(exc)
            raise
        with self._memo_lock:
            self._status_memo[key] = answer
            del self._computing[key]
            while len(self._status_memo) > STATUS_MEMO:
                self._status_memo.popitem(last=False)
        pending.set_result(answer)
        return answer

    def events(self, since_seq: int = 0, until_seq: int | None = None, types: Sequence[str] = (),
               limit: int | None = None) -> list[Event]:
        with self.reader.connect() as conn:
            return list(Ledger(conn).events(since_seq, until_seq, types, limit))

    def head(self):
        with self.reader.connect() as conn:
            return Ledger(conn).head()

    def verify(self, anchors: Sequence[Anchor] = (), workers: int | None = None) -> VerifyReport:
        """Check the hash chain, each anchor (see :func:`parse_anchor`) and every snapshot; ``workers``
        processes hash ranges of a large ledger in parallel (default: one per CPU, at most 4)."""
        workers = workers or min(os.cpu_count() or 1, 4)
        with self.reader.connect() as conn:
            return Ledger(conn).verify(anchors, workers)

    def replay(self) -> ReplayReport:
        """Rebuild the state from the first event, with no snapshot, and compare it with the
        state built through the snapshots; rebuild every snapshot from the events and compare
        it with what is stored; also recount every invariant from scratch."""
        with self.reader.connect() as conn:
            ledger = Ledger(conn)
            report = ledger.verify()
            if not report.ok:
                raise LedgerCorrupt(report.reason or "ledger does not verify", seq=report.first_bad_seq)
            scratch = ledger.state(use_snapshots=False)
            cached = ledger.state()
            forged = ledger.snapshot_mismatch()
        problems = scratch.conservation_errors()
        if scratch.to_dict() != cached.to_dict():
            problems.append("the state built from snapshots differs from a full replay")
        if forged is not None:
            problems.append(f"the snapshot at event {forged} is not the fold of events 1..{forged}: it was "
                            "forged with its digest recomputed")
        return ReplayReport(not problems, problems)



def load_scenario(database: str, path: Path, actor: str | None = None) -> LoadResult:
    """``gpufleet load``: a refused file or event leaves the database as it was, and a new SQLite
    file appears only whole: it is built beside its path and linked into place after the commit."""
    from gpufleet.services.scenario_io import read_scenario

    parsed = read_scenario(path)  # a bad file touches no database
    target = _new_sqlite_file(database)
    if target is None:
        engine = db.make_engine(database)
        try:
            with _opening(database):
                db.require_schema(engine)
            migrate = False
        except NotInitialized:
            migrate = True
        return FleetService(engine).load(path, actor, parsed=parsed, migrate=migrate)
    building = target.with_name(f".{target.name}.{secrets.token_hex(6)}.loading")
    name = str(building)
    try:  # created as SQLite would create it (the umask applies), and only if new
        os.close(os.open(building, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except OSError as exc:
        raise InputError(f"cannot create database '{database}': {exc.strerror or exc}", field="db") from None
    try:
        engine = db.make_engine(name)
        try:
            result = FleetService(engine).load(path, actor, parsed=parsed, migrate=True)
        finally:
            engine.dispose()
        with contextlib.closing(sqlite3.connect(building)) as con:  # the WAL into the one file, emptied
            busy = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:
            raise ConflictError(f"'{building}' is in use by another process; nothing was written", field="db")
        _link_new(building, target)
    finally:
        for leftover in ("", "-wal", "-shm", "-journal"):
            Path(name + leftover).unlink(missing_ok=True)
    return result


def _new_sqlite_file(database: str) -> Path | None:
    """The path of ``database`` if it is an SQLite file that does not exist yet."""
    url = db.database_url(database)
    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        return None
    path = Path(url.removeprefix("sqlite:///"))
    return None if path.exists() else path


def _link_new(built: Path, target: Path) -> None:
    """Give ``built`` the name ``target`` in one step, never over a file that appeared meanwhile."""
    try:
        os.link(built, target)
    except FileExistsError:
        raise ConflictError(f"'{target}' was created by someone else during the load; nothing was written "
                            "to it", field="db") from None
    except OSError:  # a file system without hard links
        if target.exists():
            raise ConflictError(f"'{target}' was created by someone else during the load", field="db") from None
        os.replace(built, target)


@contextlib.contextmanager
def _opening(database: str):
    """A file that is not a database (or a damaged one) is bad ``--db`` input, not a crash."""
    try:
        yield
    except DatabaseError as exc:
        raise InputError(f"'{database}' cannot be opened as a gpufleet database: {exc.orig}", field="db") from None


_ENVELOPE = TypeAdapter(EnvelopeText)


def _envelope(actor: str | None, idempotency_key: str | None) -> tuple[str, str | None]:
    """The actor (default: the user's name) and key, checked before the database sees them."""
    checked = []
    for field, value in (("actor", actor or default_actor()), ("idempotency_key", idempotency_key)):
        try:
            checked.append(None if value is None else _ENVELOPE.validate_python(value))
        except ValidationError as exc:
            raise InputError(exc.errors()[0]["msg"].removeprefix("Value error, "), field=field) from None
    return checked[0], checked[1]


def _recorded(item) -> str:
    """A scenario event's recorded instant in the ledger's format."""
    value = item.recorded if item.recorded is not None else item.effective_date
    if isinstance(value, datetime):
        return format_instant(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, date):
        return f"{value.isoformat()}T00:00:00.000000Z"
    return format_instant(parse_instant(value, "recorded"))


def known_at_instant(known_at: str | None) -> str | None:
    """A ``--known-at`` value in the ledger's format; a bare date means the end of that day."""
    if known_at is None:
        return None
    if len(known_at) == 10:
        return end_of_day(parse_date(known_at, "known_at"))
    instant = parse_instant(known_at, "known_at")
    _in_range(instant.date(), "known_at")  # its own calendar day: before a conversion can overflow
    return format_instant(instant)


def make_payload(event_type: str, data: dict) -> Payload:
    """Validate user-given fields into a payload; errors name the field and the reason."""
    cls = payload_class(event_type)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise InputError(err["msg"].removeprefix("Value error, "), field=field) from None


_ANCHOR = re.compile(r"\s*([0-9]+)(?:\s*:\s*|\s+)([0-9a-fA-F]{64})\s*")


def parse_anchor(text: str, field: str = "expect", *, seq_optional: bool = False) -> Anchor:
    """``SEQ:HASH`` or ``SEQ HASH`` (as ``gpufleet ledger head`` prints it): event SEQ had HASH.
    With ``seq_optional``, a bare HASH too: some event had it (the older ``--expect-head``)."""
    if seq_optional and re.fullmatch(r"\s*[0-9a-fA-F]{64}\s*", text):
        return Anchor(None, text.strip().lower())
    found = _ANCHOR.fullmatch(text)
    if found is None:
        also = "a 64-digit hex hash or " if seq_optional else ""
        raise InputError(f"'{text}' is not {also}SEQ:HASH (a sequence number and a 64-digit hex hash, as "
                         "`gpufleet ledger head` prints them)", field=field)
    return Anchor(int(found[1]), found[2].lower())


def parse_date(text: str | None, field: str) -> date | None:
    if text is None:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise InputError(f"'{text}' is not a date (YYYY-MM-DD)", field=field) from None
    return _in_range(day, field)


def _in_range(day: date, field: str) -> date:
    """Dates are bounded like the payloads' (``types.Day``): a ledger's days are walked one by one."""
    if not FIRST_DAY <= day <= LAST_DAY:
        raise InputError(f"{day} is outside the dates gpufleet takes, {FIRST_DAY} to {LAST_DAY}", field=field)
    return day
