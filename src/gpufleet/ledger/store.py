"""The append-only, bitemporal, hash-chained event store.

A :class:`Ledger` works inside a transaction that its caller (a service) owns:
``with engine.begin() as conn: Ledger(conn).append(...)``. If anything raises,
the caller's transaction rolls back and nothing is written.

Appends are serialized by locking the head row (``SELECT ... FOR UPDATE`` on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite). Each append checks the fleet's
invariants over the whole effective timeline from the new event's date on: an
event recorded late (effective before the latest effective date) refolds the
timeline after it, and is refused if any later event would become impossible.

Recorded times never go backwards along the chain, so "as known at T" is always a
prefix of the chain, and every prefix was checked when it was written.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Connection, and_, func, insert, select, update

from gpufleet.domain import chain
from gpufleet.domain import merkle
from gpufleet.domain.chain import GENESIS_HASH, Event
from gpufleet.domain.events import EventVoided, Payload
from gpufleet.domain.fold import Row, fold, voided_seqs
from gpufleet.domain.state import FleetState
from gpufleet.errors import ConflictError, GpufleetError, InputError, InvariantViolation
from gpufleet.ledger import merkle_store
from gpufleet.ledger import snapshots as snapshot_store
from gpufleet.ledger.schema import events, ledger_head, snapshots
from gpufleet.ledger.snapshots import SNAPSHOT_FORMAT

SNAPSHOT_EVERY = 5_000  # events between snapshots; a query folds at most about this many
# The head state each database had after this process's last append, keyed by URL and checked
# against the head's (seq, hash) before use: a rollback misses it; another writer's events since are
# applied on top when they continue its chain in date order (Ledger.caught_up).
_HEAD_STATES: dict[str, tuple[int, str, FleetState]] = {}
CATCH_UP_MAX = 1_000  # events another writer appended that a cached head state is brought over, at most
_ROW_COLUMNS = (events.c.seq, events.c.effective_date, events.c.type, events.c.payload)
# A rule every draft must pass, given the head state before it (the services' approval gate);
# it raises a GpufleetError to refuse the draft, and so the whole batch.
Gate = Callable[[FleetState, Payload, date], None]


@dataclass(frozen=True)
class Draft:
    """An event to append. ``recorded_at`` defaults to now (set it only to backfill history)."""

    payload: Payload
    effective_date: date
    actor: str
    idempotency_key: str | None = None
    recorded_at: str | None = None
    origin: str | None = None  # where the draft came from (file:line), for error messages


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str
    recorded_at: str
    frontier: date | None


@dataclass(frozen=True)
class Anchor:
    """A hash published earlier: event ``seq`` had ``hash`` then. ``seq`` None (the older
    ``--expect-head``): some event of the chain had it."""

    seq: int | None
    hash: str


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    events_checked: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    reason: str | None = None
    anchors_checked: int = 0
    snapshots_checked: int = 0
    bad_snapshot_seq: int | None = None  # set when the problem is the snapshot at this seq, not an event
    bad_tree_node: tuple[int, int] | None = None  # (level, idx) of merkle_nodes when the problem is that node


class Ledger:
    def __init__(self, conn: Connection, snapshot_every: int = SNAPSHOT_EVERY):
        self.conn = conn
        self.snapshot_every = snapshot_every
        self.last_state: FleetState | None = None  # the head state after the last append, built incrementally

    # -- reading ------------------------------------------------------------------------

    def head(self, lock: bool = False) -> Head:
        query = select(ledger_head).where(ledger_head.c.id == 1)
        if lock:
            query = query.with_for_update()
        row = self.conn.execute(query).one()
        frontier = date.fromisoformat(row.frontier) if row.frontier else None
        return Head(row.seq, row.hash, row.recorded_at, frontier)

    def known_seq(self, known_at: str | None) -> int:
        """The last sequence number recorded at or before ``known_at`` (``None``: now)."""
        if known_at is None:
            return self.head().seq
        # recorded times never go backwards along the chain (checked on append and by verify), so the
        # last such event is found at the end of an index range, not by scanning it (ms, not 0.1 s, at 1M)
        found = self.conn.execute(select(events.c.seq).where(events.c.recorded_at <= known_at)
                                  .order_by(events.c.recorded_at.desc(), events.c.seq.desc()).limit(1)).scalar()
        return found or 0

    def hash_at(self, seq: int) -> str | None:
        """The chain hash of event ``seq`` (the genesis hash for 0; None if there is no such event): it
        names the prefix 1..``seq``."""
        if seq == 0:
            return GENESIS_HASH
        return self.conn.execute(select(events.c.hash).where(events.c.seq == seq)).scalar()

    def first_effective_after(self, seq: int, known: int) -> date | None:
        """The earliest effective date of the events ``seq`` + 1 .. ``known`` (None: there are none).
        A fold as of a date before it is the same over either prefix: a void is stored with the date of
        the event it voids."""
        found = self.conn.execute(select(func.min(events.c.effective_date)).where(
            events.c.seq > seq, events.c.seq <= known)).scalar()
        return None if found is None else date.fromisoformat(found)

    def events(
        self, since_seq: int = 0, until_seq: int | None = None, types: Sequence[str] = (), limit: int | None = None
    ) -> Iterator[Event]:
        query = select(events).where(events.c.seq > since_seq).order_by(events.c.seq)
        if until_seq is not None:
            query = query.where(events.c.seq <= until_seq)
        if types:
            query = query.where(events.c.type.in_(list(types)))
        if limit is not None:
            query = query.limit(limit)
        for r in self.conn.execute(query):
            yield Event(
                r.seq, r.recorded_at, date.fromisoformat(r.effective_date), r.actor, r.type, r.payload,
                r.idempotency_key, r.prev_hash, r.hash,
            )

    def state(self, as_of: date | None = None, known_at: str | None = None, use_snapshots: bool = True) -> FleetState:
        """The fleet on ``as_of`` (default: every effective date), as recorded by ``known_at``."""
        return self._state(as_of, self.known_seq(known_at), use_snapshots=use_snapshots)

    def state_at(self, seq: int) -> FleetState:
        """The fold of events 1..``seq`` at every date (from the newest snapshot it may start from)."""
        return self._state(None, seq)

    def states_on(self, days: Sequence[date], known: int,
                  whole: FleetState | None = None) -> Iterator[tuple[date, FleetState]]:
        """The fold as of each of ``days`` (ascending), as recorded by event ``known``: one pass in
        effective-date order, from the newest snapshot usable for the first day. It yields one state,
        moved forward in place: read what you need from it before asking for the next day.

        ``whole``: the fold of events 1..``known`` at every date, if the caller holds one (the head's); the
        days from its last effective date on are read from it, unfolded and unchanged (read it only)."""
        late = [d for d in days if whole is not None and (whole.as_of is None or d >= whole.as_of)]
        early = days[:len(days) - len(late)]
        if early:
            voided = self._voided(known)
            found = self._usable_snapshot(early[0], known)
            state, after = found if found is not None else (FleetState(), None)
            rows = self._rows(known, after=after, upto=early[-1])
            pending = next(rows, None)
            for day in early:
                chunk = []
                while pending is not None and pending[1] <= day:
                    chunk.append(pending)
                    pending = next(rows, None)
                fold(state, chunk, voided)
                yield day, state
        for day in late:
            yield day, whole

    def _state(self, as_of: date | None, known: int, extra_voided: set[int] = frozenset(),
               use_snapshots: bool = True, snapshot_before: int | None = None) -> FleetState:
        voided = self._voided(known) | extra_voided
        base, base_date = FleetState(), None
        if use_snapshots:
            found = self._usable_snapshot(as_of, known, snapshot_before)
            if found is not None:
                base, base_date = found
        rows = self._rows(known, after=base_date, upto=as_of)
        return fold(base, rows, voided)

    def _rows(self, known: int, after: date | None, upto: date | None) -> Iterator[Row]:
        query = select(*_ROW_COLUMNS).where(events.c.seq <= known)
        if after is not None:
            query = query.where(events.c.effective_date > after.isoformat())
        if upto is not None:
            query = query.where(events.c.effective_date <= upto.isoformat())
        query = query.order_by(events.c.effective_date, events.c.seq)
        for seq, eff, kind, payload in self.conn.execute(query):
            yield seq, date.fromisoformat(eff), kind, payload

    def _voided(self, known: int) -> set[int]:
        query = select(events.c.payload).where(events.c.type == EventVoided.event_type, events.c.seq <= known)
        return voided_seqs(self.conn.execute(query).scalars())

    def _usable_snapshot(self, as_of: date | None, known: int,
                         before: int | None = None) -> tuple[FleetState, date] | None:
        """The newest snapshot that is exactly the fold of its prefix for this query.

        A snapshot ``(S, D)`` holds every event with seq <= S and effective <= D. It is
        usable when ``S <= known``, ``D <= as_of``, no event in ``(S, known]`` is effective
        on or before D. Voids are stored with the voided event's effective date, so a
        later correction of an event inside the snapshot makes it unusable too. A snapshot
        that fails its check (``snapshots.load``) is reported and passed over; one with no
        digest (written before the digest existed) is ignored. ``before``: only snapshots
        with ``S < before``.
        """
        query = select(snapshots.c.seq, snapshots.c.effective_date).where(
            snapshots.c.seq <= known, snapshots.c.digest.is_not(None))
        if as_of is not None:
            query = query.where(snapshots.c.effective_date <= as_of.isoformat())
        if before is not None:
            query = query.where(snapshots.c.seq < before)
        for seq, eff in self.conn.execute(query.order_by(snapshots.c.seq.desc()).limit(4)).all():
            later = select(events.c.seq).where(
                and_(events.c.seq > seq, events.c.seq <= known, events.c.effective_date <= eff)
            ).limit(1)
            if self.conn.execute(later).first() is not None:
                continue
            image = snapshot_store.load(self.conn, seq)
            if image is None or image.get("format") != SNAPSHOT_FORMAT:
                continue  # written by another version of the state: a cache, so fold past it
            return FleetState.from_dict(image["state"]), date.fromisoformat(eff)
        return None

    # -- appending ----------------------------------------------------------------------

    def append(self, drafts: Sequence[Draft], now: datetime | None = None, gate: Gate | None = None) -> list[Event]:
        """Validate and append ``drafts`` in order; return their events (the stored ones for retries).

        Each new draft passes ``gate`` (on the state with the drafts before it) before the fleet's
        invariants. Either every draft is accepted or an error is raised; the caller's transaction
        then rolls back and nothing is written.
        """
        head = self.head(lock=True)  # taken before reading the clock, so recorded times stay ordered
        now_text = chain.format_instant(now or datetime.now(UTC))
        key = str(self.conn.engine.url)
        cached = _HEAD_STATES.pop(key, None)  # taken out: a failed batch must not leave a half-applied state
        writer = _Writer(self, head, gate)
        if cached is not None:
            writer.state = self.caught_up(cached, head)
        out = []
        for draft in drafts:
            try:
                out.append(writer.add(draft, now_text))
            except GpufleetError as exc:
                exc.location = exc.location or draft.origin
                raise
        writer.finish()
        self.last_state = writer.state
        if writer.state is not None:
            _HEAD_STATES[key] = (writer.head.seq, writer.head.hash, writer.state)
        return out

    def caught_up(self, cached: tuple[int, str, FleetState], head: Head) -> FleetState | None:
        """``cached``, the head state this process had at an earlier (seq, hash), brought to ``head`` by
        applying the events other writers appended since (a server's workers take turns), when they
        continue its chain in date order: no void, none effective before the state's last date (which
        would refold). None when it cannot be: the caller folds from the latest snapshot instead."""
        seq, digest, state = cached
        if (seq, digest) == (head.seq, head.hash):
            return state
        if not seq < head.seq <= seq + CATCH_UP_MAX:
            return None
        rows = self.conn.execute(select(*_ROW_COLUMNS, events.c.prev_hash, events.c.hash).where(
            events.c.seq > seq, events.c.seq <= head.seq).order_by(events.c.seq)).all()
        if len(rows) != head.seq - seq or rows[0].prev_hash != digest or rows[-1].hash != head.hash:
            return None
        last = state.as_of
        for row in rows:
            if row.type == EventVoided.event_type or (last is not None and row.effective_date < last.isoformat()):
                return None
            last = date.fromisoformat(row.effective_date)
        try:
            return fold(state, [(r.seq, date.fromisoformat(r.effective_date), r.type, r.payload) for r in rows])
        except GpufleetError:  # the state is this call's own (taken out of the cache): drop it
            return None

    # -- verification -------------------------------------------------------------------

    def _raw_rows(self, sql: str, batch: int = 20_000) -> Iterator[tuple]:
        """Stream rows straight from the driver (a server-side cursor on PostgreSQL): verifying a
        million events is bound by hashing, so the ORM-free path is worth it here."""
        driver = self.conn.connection.driver_connection
        cursor = driver.cursor(name="gpufleet_verify") if self.conn.dialect.name == "postgresql" else driver.cursor()
        try:
            cursor.execute(sql)
            while chunk := cursor.fetchmany(batch):
                yield from chunk
        finally:
            cursor.close()

    def verify(self, anchors: Sequence[Anchor] = (), workers: int = 1,
               progress: Callable[[int, int], None] | None = None) -> VerifyReport:
        """Walk the chain; report the first event that was edited, deleted, inserted or moved; then
        check each anchor (an event's hash published earlier) and every snapshot (its chain hash and
        digest, as a reader checks it).

        With ``workers > 1`` and a large file-backed ledger, contiguous ranges of the chain are
        hashed in parallel processes and stitched: each range must start from the previous
        range's last hash, so the result is the same as one walk. With ``progress`` (one worker), the
        walk goes range by range of ``VERIFY_STEP`` events, calling ``progress(events walked, head seq)``
        after each.
        """
        head = self.head()
        url = self.conn.engine.url
        if workers > 1 and head.seq >= PARALLEL_VERIFY_MIN and url.database not in (None, "", ":memory:"):
            bounds = [1 + head.seq * i // workers for i in range(workers)] + [None]
            start = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(start)) as pool:
                segments = list(pool.map(_verify_segment, [url.render_as_string(hide_password=False)] * workers,
                                         bounds[:-1], [b - 1 if b else None for b in bounds[1:]]))
        elif progress is not None:
            segments = []
            for first in range(1, max(head.seq, 1) + 1, VERIFY_STEP):
                last = first + VERIFY_STEP - 1
                segments.append(self.segment(first, last if last < head.seq else None))
                progress(min(last, head.seq), head.seq)
                if segments[-1].bad is not None:
                    break
        else:
            segments = [self.segment(1, None)]
        report = _stitch(segments, head)
        if report.ok:
            report = self._check_tree(report, segments)
        if report.ok:
            report = self._check_anchors(report, anchors)
        if report.ok:
            report = self._check_snapshots(report)
        return report

    def _check_tree(self, report: VerifyReport, segments: list[Segment]) -> VerifyReport:
        """The Merkle tree holds exactly the nodes of a tree of ``events_checked`` leaves, and every
        parent is the hash of its children (the leaves were checked against the events in the walk, the
        parents by the walk of the range where they start)."""
        bad = merkle_store.shape_problem(self.conn, report.events_checked)
        if bad is None:
            bad = next((seg.bad_node for seg in segments if seg.bad_node is not None), None)
        if bad is None:
            return report
        (level, idx), reason = bad
        return replace(report, ok=False, first_bad_seq=(idx << level) + 1, reason=reason, bad_tree_node=(level, idx))

    def _check_anchors(self, report: VerifyReport, anchors: Sequence[Anchor]) -> VerifyReport:
        """Each anchored event still has the hash published. The chain verified, so a stored hash is
        its event's own: a rewrite at or before the anchor, or a cut below it, shows here."""
        for checked, anchor in enumerate(anchors):
            reason = self._anchor_problem(anchor, report.events_checked)
            if reason is not None:
                bad = report.events_checked if anchor.seq is None else anchor.seq
                return replace(report, ok=False, first_bad_seq=bad, reason=reason, anchors_checked=checked)
        return replace(report, anchors_checked=len(anchors))

    def _anchor_problem(self, anchor: Anchor, last: int) -> str | None:
        expected = f"{anchor.hash[:16]}..."
        if anchor.seq is None:
            found = self.conn.execute(select(events.c.seq).where(events.c.hash == anchor.hash).limit(1)).first()
            if found is None and anchor.hash != GENESIS_HASH:
                return f"no event has the expected hash {expected}: the ledger was cut or rewritten since"
            return None
        if anchor.seq > last:
            return (f"event {anchor.seq} is not in the ledger (the chain ends at event {last}): it was cut "
                    f"after {anchor.seq}:{expected} was published")
        stored = GENESIS_HASH if anchor.seq == 0 else \
            self.conn.execute(select(events.c.hash).where(events.c.seq == anchor.seq)).scalar_one()
        if stored != anchor.hash:
            return (f"event {anchor.seq}'s hash is {stored[:16]}..., not the expected {expected}: the ledger "
                    f"was rewritten at or before event {anchor.seq}")
        return None

    def _check_snapshots(self, report: VerifyReport) -> VerifyReport:
        checked, bad = snapshot_store.check_all(self.conn)
        if bad is None:
            return replace(report, snapshots_checked=checked)
        return replace(report, ok=False, first_bad_seq=bad[0], reason=bad[1], snapshots_checked=checked,
                       bad_snapshot_seq=bad[0])

    def snapshot_mismatch(self) -> int | None:
        """The first snapshot whose state is not the fold of events 1..S, or None. Each is rebuilt
        from the snapshot before it, checked in the same pass, so a forged one is never a base.
        This catches a forgery whose digest was recomputed, which the digest cannot."""
        for seq in list(snapshot_store.seqs(self.conn)):
            image = snapshot_store.load(self.conn, seq)
            if image is None or image.get("format") != SNAPSHOT_FORMAT:
                continue  # not used by readers either
            rebuilt = self._state(None, seq, snapshot_before=seq)
            if FleetState.from_dict(image["state"]).to_dict() != rebuilt.to_dict():
                return seq
        return None

    def segment(self, first: int, last: int | None) -> Segment:
        """Check the events ``first..last`` (to the end if None) among themselves, and each one's leaf
        in the Merkle tree."""
        where = f"WHERE e.seq >= {int(first)}" + (f" AND e.seq <= {int(last)}" if last is not None else "")
        rows = self._raw_rows(
            "SELECT e.seq, e.recorded_at, e.effective_date, e.actor, e.type, e.idempotency_key, e.prev_hash, "
            "e.payload, e.hash, m.hash FROM events e LEFT JOIN merkle_nodes m ON m.level = 0 AND m.idx = e.seq - 1 "
            f"{where} ORDER BY e.seq")
        found = walk_chain(rows, first, last)
        if found.bad is not None:
            return found
        parents = self._raw_rows(merkle_store.parents_sql(first - 1, last))
        return replace(found, bad_node=merkle_store.first_bad_parent(parents))


PARALLEL_VERIFY_MIN = 50_000  # below this, starting processes costs more than it saves
VERIFY_STEP = 50_000  # events per range of a verify that reports its progress


@dataclass(frozen=True)
class Segment:
    """What a walk over a contiguous range of the chain found."""

    first: int
    count: int
    first_prev: str | None  # prev_hash of the first event in the range
    first_recorded: str
    last_hash: str | None
    last_recorded: str
    bad: tuple[int, str] | None = None
    bad_leaf: tuple[int, str] | None = None  # the first event whose Merkle leaf is wrong (the chain comes first)
    bad_node: tuple[tuple[int, int], str] | None = None  # the first Merkle parent starting in the range that is wrong


def walk_chain(rows, first: int, last: int | None) -> Segment:
    """Recompute every hash and link in ``rows`` (events ``first..last`` in seq order, each with its
    stored Merkle leaf), and every leaf hash."""
    encode, sha256 = chain.canonical_bytes, hashlib.sha256
    expected, prev_hash, last_recorded = first, None, ""
    first_prev = first_recorded = bad_leaf = None
    for seq, rec, eff, actor, kind, key, prev, payload, digest, leaf in rows:
        bad, data = None, encode(seq, rec, eff, actor, kind, key, prev, payload)
        if seq != expected:
            bad = (expected, f"event {expected} is missing (next stored is {seq})") if seq > expected else \
                (seq, f"event {seq} appears twice or out of order")
        elif prev_hash is not None and prev != prev_hash:
            bad = (seq, f"event {seq} does not link to event {seq - 1} (prev_hash differs)")
        elif sha256(data).hexdigest() != digest:
            bad = (seq, f"event {seq} was altered: its content does not match its hash")
        elif rec < last_recorded:
            bad = (seq, f"event {seq} is recorded before event {seq - 1}")
        elif bad_leaf is None and leaf != sha256(b"\x00" + data).hexdigest():
            bad_leaf = (seq, _leaf_problem(seq, leaf))
        if first_prev is None:
            first_prev, first_recorded = prev, rec
        if bad:
            rows.close()
            return Segment(first, expected - first, first_prev, first_recorded or "", prev_hash, last_recorded, bad)
        prev_hash, expected, last_recorded = digest, seq + 1, rec
    if last is not None and expected <= last:
        return Segment(first, expected - first, first_prev, first_recorded or "", prev_hash, last_recorded,
                       (expected, f"event {expected} is missing"))
    return Segment(first, expected - first, first_prev, first_recorded or "", prev_hash, last_recorded,
                   bad_leaf=bad_leaf)


def _leaf_problem(seq: int, leaf: str | None) -> str:
    node = merkle_store.describe(0, seq - 1)
    return f"{node} is missing" if leaf is None else f"{node} was altered: it is not event {seq}'s leaf hash"


def _stitch(segments: list[Segment], head: Head) -> VerifyReport:
    prev_hash, last_recorded, count = GENESIS_HASH, "", 0
    for seg in segments:
        if seg.bad is not None and seg.first_prev is None:  # nothing read before the problem
            return VerifyReport(False, count, head.seq, head.hash, *seg.bad)
        if seg.count or seg.bad:
            if seg.first_prev != prev_hash:
                return VerifyReport(False, count, head.seq, head.hash, seg.first,
                                    f"event {seg.first} does not link to event {seg.first - 1} (prev_hash differs)")
            if seg.first_recorded < last_recorded:
                return VerifyReport(False, count, head.seq, head.hash, seg.first,
                                    f"event {seg.first} is recorded before event {seg.first - 1}")
        if seg.bad is not None:
            return VerifyReport(False, count + seg.count, head.seq, head.hash, *seg.bad)
        count += seg.count
        if seg.count:
            prev_hash, last_recorded = seg.last_hash, seg.last_recorded
    if head.seq != count:
        where = count + 1 if head.seq > count else head.seq + 1
        return VerifyReport(False, count, head.seq, head.hash, where,
                            f"the ledger head records event {head.seq} but the chain ends at event {count}")
    if head.hash != prev_hash:
        return VerifyReport(False, count, head.seq, head.hash, count,
                            f"the ledger head's hash is not the hash of event {count}")
    for seg in segments:  # the chain is whole: now the leaves derived from it
        if seg.bad_leaf is not None:
            seq, reason = seg.bad_leaf
            return VerifyReport(False, count, head.seq, head.hash, seq, reason, bad_tree_node=(0, seq - 1))
    return VerifyReport(True, count, head.seq, head.hash)


def _verify_segment(url: str, first: int, last: int | None) -> Segment:
    """One worker's share of a parallel verify: its own connection, its own range."""
    from gpufleet.ledger.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return Ledger(conn).segment(first, last)
    finally:
        engine.dispose()


class _Writer:
    """One append batch: keeps the head state in memory and buffers inserts."""

    def __init__(self, ledger: Ledger, head: Head, gate: Gate | None = None):
        self.ledger, self.conn, self.head, self.gate = ledger, ledger.conn, head, gate
        self.state: FleetState | None = None  # fold of every event, loaded lazily
        self.buffer: list[dict] = []
        self.by_key: dict[str, Event] = {}
        self.last_snapshot = self.conn.execute(select(func.max(snapshots.c.seq))).scalar() or 0

    def add(self, draft: Draft, now_text: str) -> Event:
        if draft.idempotency_key is not None:
            existing = self._existing(draft.idempotency_key)
            if existing is not None:
                return self._same_or_conflict(existing, draft)
        # a clock a little behind the last writer's (another host) must not break the order
        recorded = draft.recorded_at or max(now_text, self.head.recorded_at)
        if recorded > max(now_text, self.head.recorded_at):
            raise InputError(f"recorded time {recorded} is in the future", field="recorded_at")
        if self.head.recorded_at and recorded < self.head.recorded_at:
            raise ConflictError(
                f"recorded time {recorded} is before the ledger's last record ({self.head.recorded_at}); "
                "the ledger's recorded time never goes backwards"
            )
        payload_json = chain.canonical_json(draft.payload)
        effective = self._effective(draft)
        if self.gate is not None:
            self.gate(self._head_state(), draft.payload, effective)
        self._check(draft.payload, effective)
        event = chain.seal(self.head.seq + 1, recorded, effective, draft.actor, draft.payload.event_type,
                           payload_json, draft.idempotency_key, self.head.hash)
        self.buffer.append(_row(event))
        if draft.idempotency_key is not None:
            self.by_key[draft.idempotency_key] = event
        frontier = max(self.head.frontier, effective) if self.head.frontier else effective
        self.head = Head(event.seq, event.hash, recorded, frontier)
        return event

    def finish(self) -> None:
        self._flush()
        self.conn.execute(
            update(ledger_head).where(ledger_head.c.id == 1).values(
                seq=self.head.seq, hash=self.head.hash, recorded_at=self.head.recorded_at,
                frontier=self.head.frontier.isoformat() if self.head.frontier else None,
            )
        )

    # -- invariant checks ------------------------------------------------------------------

    def _check(self, payload: Payload, effective: date) -> None:
        state = self._head_state()
        frontier = self.head.frontier
        is_void = isinstance(payload, EventVoided)
        if not is_void and (frontier is None or effective >= frontier):
            if frontier is not None and effective > frontier and self._snapshot_due(state):
                self._snapshot(state, self.head.seq, frontier)
            try:
                state.apply(payload, effective)
            except GpufleetError as exc:
                self.state = None  # a handler may have been part-way; reload if the batch goes on
                raise _refused(payload, effective, exc) from None
            return
        self.state = self._refold(payload, effective)

    def _snapshot_due(self, state: FleetState) -> bool:
        """Every ``snapshot_every`` events, and at least a quarter as many events as the state holds
        records: writing a snapshot costs about as much as folding that many events, so the
        cost per event stays constant however large the fleet grows."""
        since = self.head.seq - self.last_snapshot
        return since >= self.ledger.snapshot_every and 4 * since >= state.record_count()

    def _refold(self, payload: Payload, effective: date) -> FleetState:
        """Fold the timeline from ``effective`` on with the new event in place; refuse if it breaks."""
        self._flush()
        extra = {payload.seq} if isinstance(payload, EventVoided) else set()
        known = self.head.seq
        base = self.ledger._state(effective - timedelta(days=1), known, extra)
        voided = self.ledger._voided(known) | extra
        later = list(self.ledger._rows(known, after=effective - timedelta(days=1), upto=None))
        new_seq = known + 1
        rows = sorted([*later, (new_seq, effective, payload.event_type, chain.canonical_json(payload))],
                      key=lambda r: (r[1], r[0]))
        try:
            return fold(base, rows, voided)
        except InvariantViolation as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, GpufleetError) else exc
            if f"event {new_seq} (" in exc.message:
                raise _refused(payload, effective, cause) from None
            raise InvariantViolation(
                f"{payload.event_type} effective {effective} would break the later history: {exc.message}"
            ) from None

    def _head_state(self) -> FleetState:
        if self.state is None:
            self._flush()
            self.state = self.ledger._state(None, self.head.seq)
        return self.state

    def _effective(self, draft: Draft) -> date:
        if not isinstance(draft.payload, EventVoided):
            return draft.effective_date
        self._flush()  # the event voided may be earlier in this batch
        target = self.conn.execute(select(events.c.effective_date, events.c.type)
                                   .where(events.c.seq == draft.payload.seq)).first()
        if target is None:
            raise InputError(f"there is no event {draft.payload.seq} to void", field="seq")
        if target.type == EventVoided.event_type:
            raise InputError(f"event {draft.payload.seq} is itself a correction; record the event again instead",
                             field="seq")
        if draft.payload.seq in self.ledger._voided(self.head.seq):
            raise ConflictError(f"event {draft.payload.seq} is already voided")
        return date.fromisoformat(target.effective_date)

    def _snapshot(self, state: FleetState, seq: int, on: date) -> None:
        self._flush()
        snapshot_store.write(self.conn, state, seq, on, chain_hash=self.head.hash)  # the head is event seq
        self.last_snapshot = seq

    # -- idempotency --------------------------------------------------------------------

    def _existing(self, key: str) -> Event | None:
        if key in self.by_key:
            return self.by_key[key]
        row = self.conn.execute(select(events.c.seq).where(events.c.idempotency_key == key)).first()
        return next(self.ledger.events(row.seq - 1, row.seq)) if row else None

    @staticmethod
    def _same_or_conflict(existing: Event, draft: Draft) -> Event:
        same = (existing.event_type == draft.payload.event_type
                and existing.payload == chain.canonical_json(draft.payload)
                and (isinstance(draft.payload, EventVoided) or existing.effective_date == draft.effective_date))
        if not same:
            raise ConflictError(
                f"idempotency key '{draft.idempotency_key}' was used by event {existing.seq} for a different change",
                field="idempotency_key",
            )
        return existing

    def _flush(self) -> None:
        """Write the buffered events in this transaction, by the fastest path each driver has:
        ``COPY`` on PostgreSQL (about 4x executemany), the DB-API ``executemany`` on SQLite; then their
        leaves and the Merkle tree nodes they complete (one more bulk insert)."""
        if not self.buffer:
            return
        self._insert_events()
        leaf = merkle.leaf_hash
        merkle_store.add_leaves(self.conn, self.buffer[0][0], [leaf(_canonical(row)) for row in self.buffer])
        self.buffer = []

    def _insert_events(self) -> None:
        dialect = self.conn.dialect.name
        if dialect not in ("postgresql", "sqlite"):
            self.conn.execute(insert(events), [dict(zip(_COLUMNS, row, strict=True)) for row in self.buffer])
        else:
            cursor = self.conn.connection.driver_connection.cursor()
            try:
                if dialect == "postgresql":
                    with cursor.copy(f"COPY events ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
                        for row in self.buffer:
                            copy.write_row(row)
                else:
                    cursor.executemany(_SQLITE_INSERT, self.buffer)
            finally:
                cursor.close()


_COLUMNS = ("seq", "recorded_at", "effective_date", "actor", "type", "payload", "idempotency_key", "prev_hash",
            "hash")
_SQLITE_INSERT = f"INSERT INTO events ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


def _canonical(row: tuple) -> bytes:
    """The canonical bytes of an event given as a row in ``_COLUMNS`` order."""
    seq, recorded, effective, actor, kind, payload, key, prev, _hash = row
    return chain.canonical_bytes(seq, recorded, effective, actor, kind, key, prev, payload)


def _row(e: Event) -> tuple:
    """An event as a row in ``_COLUMNS`` order."""
    return (e.seq, e.recorded_at, e.effective_date.isoformat(), e.actor, e.event_type, e.payload,
            e.idempotency_key, e.prev_hash, e.hash)


def _refused(payload: Payload, effective: date, exc: GpufleetError) -> InvariantViolation:
    error = InvariantViolation(f"{payload.event_type} effective {effective} refused: {exc.message}",
                               field=exc.field)
    if isinstance(exc, InputError):
        error = type(exc)(f"{payload.event_type} effective {effective} refused: {exc.message}", field=exc.field)
    return error
