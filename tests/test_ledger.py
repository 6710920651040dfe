"""The ledger on SQLite and PostgreSQL: append, idempotency, bitemporal reads, corrections,
snapshots, replay equality and tamper detection."""

from __future__ import annotations

import json
import warnings
from datetime import date

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

import tampering
from builders import Story, two_party_fleet
from gpufleet.domain import events as ev
from gpufleet.domain.state import FleetState
from gpufleet.errors import ConflictError, InputError, InvariantViolation
from gpufleet.ledger import db
from gpufleet.ledger.schema import events, snapshots
from gpufleet.ledger.snapshots import SNAPSHOT_FORMAT, SnapshotDistrusted
from gpufleet.ledger.store import Draft, Ledger


def append(engine, drafts, snapshot_every: int = 3, now=None):
    with engine.begin() as conn:
        ledger = Ledger(conn, snapshot_every=snapshot_every)
        written = ledger.append(drafts, now=now)
        return written, ledger.last_state


def read(engine, fn):
    with engine.connect() as conn:
        return fn(Ledger(conn))


def count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(events)).scalar_one()


def story() -> Story:
    return (two_party_fleet().po("p1", "a", {"l1": (100, "2024-02-01"), "l2": (50, "2024-04-01")})
            .on("2024-02-01").deliver("l1").on("2024-02-02").install("a", "s1", 100)
            .on("2024-03-01").lend("ln", "a", "b", "s1", 40, "2024-06-01", fee=2.0)
            .on("2024-04-01").deliver("l2").on("2024-04-15").reclaim("ln", 10, "2024-04-15")
            .on("2024-05-01").fail("a", 5, site="s1"))


def test_appended_events_chain_and_verify(engine):
    written, _ = append(engine, story().drafts())
    assert [e.seq for e in written] == list(range(1, len(written) + 1))
    assert all(b.prev_hash == a.hash for a, b in zip(written, written[1:]))
    report = read(engine, lambda led: led.verify())
    assert report.ok and report.events_checked == len(written) and report.head_hash == written[-1].hash


def test_replay_rebuilds_exactly_the_incremental_state(engine):
    drafts = story().drafts()
    _, incremental = append(engine, drafts[:7])
    _, incremental = append(engine, drafts[7:])
    scratch = read(engine, lambda led: led.state(use_snapshots=False))
    cached = read(engine, lambda led: led.state())
    assert read(engine, lambda led: led.conn.execute(select(func.count()).select_from(snapshots)).scalar()) > 0
    assert incremental.to_dict() == scratch.to_dict() == cached.to_dict()
    assert scratch.conservation_errors() == []


@pytest.mark.parametrize("as_of", ["2024-01-01", "2024-02-01", "2024-03-15", "2024-04-20", "2025-01-01"])
def test_state_as_of_any_date_matches_a_fold_without_snapshots(engine, as_of):
    append(engine, story().drafts(), snapshot_every=1)
    day = date.fromisoformat(as_of)
    via_snapshots = read(engine, lambda led: led.state(day))
    scratch = read(engine, lambda led: led.state(day, use_snapshots=False))
    assert via_snapshots.to_dict() == scratch.to_dict()


def test_a_refused_event_writes_nothing(engine):
    append(engine, story().drafts())
    before = read(engine, lambda led: led.head())
    bad = Draft(ev.GpusInstalled(owner="a", model="h100", site="s1", gpus=10_000), date(2024, 6, 1), "t")
    with pytest.raises(InvariantViolation, match="cannot install 10000"):
        append(engine, [bad])
    assert read(engine, lambda led: led.head()) == before
    assert count(engine) == before.seq


def test_a_batch_is_all_or_nothing(engine):
    good = Draft(ev.EntityRegistered(entity="c", name="C"), date(2024, 1, 1), "t")
    bad = Draft(ev.EntityRegistered(entity="d", name="D", parent="nobody"), date(2024, 1, 1), "t")
    with pytest.raises(InputError, match="no entity 'nobody'"):
        append(engine, [good, bad])
    assert count(engine) == 0


def test_a_retried_write_is_applied_once(engine):
    append(engine, two_party_fleet().drafts())
    draft = Draft(ev.EntityRegistered(entity="c", name="C"), date(2024, 1, 2), "t", idempotency_key="k1")
    first, _ = append(engine, [draft])
    again, _ = append(engine, [draft])
    assert first[0].seq == again[0].seq and count(engine) == first[0].seq
    changed = Draft(ev.EntityRegistered(entity="c", name="Other"), date(2024, 1, 2), "t", idempotency_key="k1")
    with pytest.raises(ConflictError, match="idempotency key 'k1'"):
        append(engine, [changed])


def test_known_at_gives_the_state_as_recorded_then(engine):
    base = two_party_fleet("2023-01-01").po("p1", "a", {"l1": (100, "2024-03-01")})
    drafts = [Draft(p, d, "t", recorded_at="2023-01-01T00:00:00.000000Z") for p, d in base.items]
    slip = Draft(ev.LotRescheduled(lot="l1", planned_date=date(2024, 9, 1)), date(2024, 2, 1), "t",
                 recorded_at="2024-02-01T00:00:00.000000Z")
    append(engine, [*drafts, slip])

    def planned(known_at):
        return read(engine, lambda led: led.state(date(2024, 12, 31), known_at).lots["l1"].planned_date)

    assert planned("2023-06-01T00:00:00.000000Z") == date(2024, 3, 1)
    assert planned(None) == date(2024, 9, 1)


def test_recorded_time_never_goes_backwards(engine):
    append(engine, [Draft(ev.EntityRegistered(entity="a", name="A"), date(2024, 1, 1), "t",
                          recorded_at="2024-05-01T00:00:00.000000Z")])
    late = Draft(ev.EntityRegistered(entity="b", name="B"), date(2024, 1, 1), "t",
                 recorded_at="2024-04-01T00:00:00.000000Z")
    with pytest.raises(ConflictError, match="never goes backwards"):
        append(engine, [late])


def test_a_late_event_that_fits_the_history_is_accepted(engine):
    append(engine, story().drafts())
    late = Draft(ev.GpusFailed(owner="a", model="h100", gpus=3, site="s1"), date(2024, 2, 10), "t")
    _, state = append(engine, [late])
    assert state.failed[("a", "h100")] == 8
    assert state.to_dict() == read(engine, lambda led: led.state(use_snapshots=False)).to_dict()


def test_a_late_event_that_breaks_later_history_is_refused(engine):
    append(engine, story().drafts())
    late = Draft(ev.GpusFailed(owner="a", model="h100", gpus=70, site="s1"), date(2024, 2, 10), "t")
    with pytest.raises(InvariantViolation, match="would break the later history.*loan_opened"):
        append(engine, [late])


def test_a_voided_event_stops_counting_from_the_correction_on(engine):
    written, _ = append(engine, story().drafts())
    failure = written[-1]
    assert failure.event_type == "gpus_failed"
    correction, state = append(engine, [Draft(ev.EventVoided(seq=failure.seq, reason="sensor glitch"),
                                              date(2026, 1, 1), "t")])
    assert correction[0].effective_date == failure.effective_date
    assert state.failed[("a", "h100")] == 0
    before = read(engine, lambda led: led.state(known_at=written[-1].recorded_at))
    after = read(engine, lambda led: led.state())
    assert (before.failed[("a", "h100")], after.failed[("a", "h100")]) == (5, 0)
    with pytest.raises(ConflictError, match="already voided"):
        append(engine, [Draft(ev.EventVoided(seq=failure.seq, reason="again"), date(2026, 1, 1), "t")])


def test_an_event_and_its_void_in_one_batch(engine):
    drafts = story().drafts()
    void = Draft(ev.EventVoided(seq=len(drafts), reason="entered twice"), date(2026, 1, 1), "t")
    written, state = append(engine, [*drafts, void])
    assert written[-2].event_type == "gpus_failed" and written[-1].effective_date == written[-2].effective_date
    assert state.failed[("a", "h100")] == 0
    assert state.to_dict() == read(engine, lambda led: led.state(use_snapshots=False)).to_dict()


def test_voiding_a_delivery_that_later_events_need_is_refused(engine):
    written, _ = append(engine, story().drafts())
    delivery = next(e for e in written if e.event_type == "lot_delivered")
    with pytest.raises(InvariantViolation, match="would break the later history"):
        append(engine, [Draft(ev.EventVoided(seq=delivery.seq, reason="wrong"), date(2026, 1, 1), "t")])


def test_events_cannot_be_updated_or_deleted(engine):
    append(engine, two_party_fleet().drafts())
    for statement in ("UPDATE events SET actor = 'mallory' WHERE seq = 1", "DELETE FROM events WHERE seq = 1"):
        with pytest.raises(DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.execute(text(statement))
    assert count(engine) == len(two_party_fleet().items)


def test_the_schema_check_knows_the_newest_migration():
    from alembic.script import ScriptDirectory

    from gpufleet.ledger.db import HEAD_REVISION, alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION


@pytest.mark.parametrize("tamper, first_bad", [
    (None, None),
    ("UPDATE events SET actor = 'mallory' WHERE seq = 9", 9),     # inside the second range
    ("UPDATE events SET actor = 'mallory' WHERE seq = 6", 6),     # the first event of the second range
    ("DELETE FROM events WHERE seq = 6", 6),                      # a missing first event
], ids=["clean", "edited-in-a-range", "edited-at-a-boundary", "deleted-at-a-boundary"])
def test_a_parallel_verify_finds_what_a_single_walk_finds(engine, monkeypatch, tamper, first_bad):
    from gpufleet.ledger import store

    written, _ = append(engine, story().drafts())
    if tamper:
        with engine.begin() as conn:
            tampering.disable_guards(conn)
            conn.execute(text(tamper))
    monkeypatch.setattr(store, "PARALLEL_VERIFY_MIN", 1)
    single = read(engine, lambda led: led.verify())
    parallel = read(engine, lambda led: led.verify(workers=2))
    assert (parallel.ok, parallel.first_bad_seq) == (single.ok, single.first_bad_seq) == (tamper is None, first_bad)


def test_a_snapshot_of_another_format_is_ignored_not_misread(engine):
    append(engine, story().drafts(), snapshot_every=1)
    with engine.begin() as conn:
        tampering.disable_guards(conn)
        tampering.reseal_snapshots(conn, edit=lambda _: '{"format": 1, "state": {}}')  # digests that match
    with warnings.catch_warnings():
        warnings.simplefilter("error", SnapshotDistrusted)
        assert read(engine, lambda led: led.state()).to_dict() == \
            read(engine, lambda led: led.state(use_snapshots=False)).to_dict()


# -- what a reader trusts: snapshots and the head --------------------------------------------------


def test_a_forged_snapshot_is_reported_and_the_figures_come_from_the_events(engine):
    """The issue's forgery: 5 GPUs taken off the newest snapshot. Without the check, the state read
    through it shows 60 installed at s1 for a where the events say 65, and verify passes; with it, a
    warning names the snapshot, the state is the fold of the events, verify names the snapshot, and
    older snapshots are still used."""
    append(engine, story().drafts(), snapshot_every=1)
    truth = read(engine, lambda led: led.state(use_snapshots=False)).to_dict()
    with engine.begin() as conn:
        tampering.disable_guards(conn)
        tampering.edit_last_snapshot(conn)
    with pytest.warns(SnapshotDistrusted, match="snapshot at event 10 was altered") as caught:
        assert read(engine, lambda led: led.state()).to_dict() == truth
    assert caught[0].message.seq == 10
    with warnings.catch_warnings():
        warnings.simplefilter("error", SnapshotDistrusted)  # once per process: not again
        assert read(engine, lambda led: led.state()).to_dict() == truth
        early = read(engine, lambda led: led.state(date(2024, 3, 15)))  # through the snapshot at 7
    assert early.to_dict() == read(engine, lambda led: led.state(date(2024, 3, 15), use_snapshots=False)).to_dict()
    report = read(engine, lambda led: led.verify())
    assert (report.ok, report.bad_snapshot_seq, report.first_bad_seq, report.snapshots_checked) == \
        (False, 10, 10, 2)
    assert "does not match its digest" in report.reason


def test_snapshots_written_before_the_digest_are_ignored(db_url):
    """A snapshot from revision 0001 has no digest: after the upgrade it is never read, even a wrong one."""
    from alembic import command

    engine = db.make_engine(db_url)
    with engine.begin() as conn:
        command.upgrade(db.alembic_config(conn), "0001")
        ghost = FleetState()
        ghost.apply(ev.EntityRegistered(entity="ghost", name="Ghost"), date(2024, 1, 1))
        image = json.dumps({"format": SNAPSHOT_FORMAT, "state": ghost.to_dict()})
        conn.execute(snapshots.insert().values(seq=11, effective_date="2024-05-01", state=image))
    db.upgrade(engine)
    append(engine, story().drafts(), snapshot_every=10**6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SnapshotDistrusted)
        state = read(engine, lambda led: led.state())
    assert "ghost" not in state.entities
    assert state.to_dict() == read(engine, lambda led: led.state(use_snapshots=False)).to_dict()
    report = read(engine, lambda led: led.verify())
    assert report.ok and report.snapshots_checked == 0
    engine.dispose()


HEAD_WRITES = {
    "delete": "DELETE FROM ledger_head",
    "second row": "INSERT INTO ledger_head (id, seq, hash, recorded_at) VALUES (2, 0, 'x', '')",
    "rewind seq": "UPDATE ledger_head SET seq = seq - 1",
    "rewind to an earlier event": "UPDATE ledger_head SET seq = 10, hash = (SELECT hash FROM events WHERE seq = 10)",
    "hash of no event": "UPDATE ledger_head SET hash = 'ffff'",
    "past the chain": "UPDATE ledger_head SET seq = 12",
    "snapshot update": "UPDATE snapshots SET state = '{}'",
    "snapshot delete": "DELETE FROM snapshots",
}


@pytest.mark.parametrize("statement", HEAD_WRITES.values(), ids=HEAD_WRITES.keys())
def test_the_head_only_moves_forward_and_snapshots_never_change(engine, statement):
    append(engine, story().drafts(), snapshot_every=1)
    before = read(engine, lambda led: led.head())
    with pytest.raises(DBAPIError, match="append-only"):
        with engine.begin() as conn:
            conn.execute(text(statement))
    assert read(engine, lambda led: led.head()) == before
    append(engine, [Draft(ev.EntityRegistered(entity="c", name="C"), date(2024, 6, 1), "t")])  # appends go on
    assert read(engine, lambda led: led.verify()).ok


def test_sqlite_commits_are_durable(tmp_path):
    """synchronous=FULL: in WAL mode NORMAL may lose the last acknowledged commits on power loss."""
    engine = db.make_engine(str(tmp_path / "durable.db"))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def test_the_migration_goes_down_and_up_again(engine):
    from alembic import command

    append(engine, story().drafts(), snapshot_every=1)
    with engine.begin() as conn:
        command.downgrade(db.alembic_config(conn), "0001")
    db.upgrade(engine)
    assert read(engine, lambda led: led.verify()).ok  # the old snapshots are now ignored
    assert read(engine, lambda led: led.state()).to_dict() == \
        read(engine, lambda led: led.state(use_snapshots=False)).to_dict()
