"""A process's cached head state is brought over events other writers appended (a server's workers)."""

from __future__ import annotations

from datetime import date

import pytest

from gpufleet.domain import events as ev
from gpufleet.errors import InvariantViolation
from gpufleet.ledger import store
from gpufleet.ledger.store import Draft, Ledger

D1, D2 = date(2024, 1, 1), date(2024, 2, 1)


def _append(engine, payload, on: date, *, other_writer: bool = False):
    """Append as this process, or as another one: its append leaves this process's cache as it was."""
    key = str(engine.url)
    saved = store._HEAD_STATES.pop(key, None) if other_writer else None
    with engine.begin() as conn:
        event = Ledger(conn).append([Draft(payload, on, "w")])[0]
    if other_writer:
        store._HEAD_STATES.pop(key, None)
        if saved is not None:
            store._HEAD_STATES[key] = saved
    return event


def _demand(name: str, entity: str = "a") -> ev.DemandRecorded:
    return ev.DemandRecorded(demand=name, entity=entity, start=D1, end=D2, gpus=1, value_usd_per_gpu_hour=1.0)


@pytest.mark.parametrize("other_on", [D2, D1], ids=["in date order", "back-dated (refold)"])
def test_the_cached_head_state_takes_in_other_writers_events(engine, other_on, monkeypatch):
    _append(engine, ev.EntityRegistered(entity="a", name="A"), D1)
    _append(engine, _demand("mine"), D2)
    _append(engine, ev.EntityRegistered(entity="b", name="B"), other_on, other_writer=True)
    _append(engine, _demand("theirs", "b"), D2, other_writer=True)
    folds = []
    full_fold = Ledger._state
    monkeypatch.setattr(Ledger, "_state", lambda self, *a, **k: folds.append(a) or full_fold(self, *a, **k))
    _append(engine, _demand("b-needs-b", "b"), D2)  # only valid if the state has the other writer's entity
    assert len(folds) == (0 if other_on == D2 else 1)  # caught up; a back-dated event means a fold instead
    monkeypatch.undo()
    cached = store._HEAD_STATES[str(engine.url)]
    with engine.connect() as conn:
        ledger = Ledger(conn)
        assert cached[:2] == (ledger.head().seq, ledger.head().hash) == (5, cached[1])
        assert cached[2].to_dict() == ledger.state().to_dict()
        assert ledger.verify().ok
    with pytest.raises(InvariantViolation):  # and its invariants: the other writer's demand id is taken
        _append(engine, _demand("theirs", "b"), D2)


def test_a_kept_status_answer_is_never_one_of_an_older_ledger(engine):
    from gpufleet.services.fleet import FleetService

    service = FleetService(engine)
    _append(engine, ev.EntityRegistered(entity="a", name="A"), D1)
    _append(engine, _demand("first"), D1)
    asked = [service.head_status().data, service.status(D2), service.status(D2, known_at="2199-01-01")]
    assert service.head_status().data is asked[0] and service.status(D2) is asked[1]  # kept, not recomputed
    _append(engine, ev.EntityRegistered(entity="b", name="B"), D1)  # the ledger moves on: every answer changes
    fresh = FleetService(engine)
    now = [service.head_status().data, service.status(D2), service.status(D2, known_at="2199-01-01")]
    assert now == [fresh.head_status().data, fresh.status(D2), fresh.status(D2, known_at="2199-01-01")]
    assert [a["ledger_seq"] for a in asked] == [2, 2, 2] and [a["ledger_seq"] for a in now] == [3, 3, 3]


def _counting_folds(monkeypatch) -> list:
    folds: list = []
    full_fold = Ledger.state_at
    monkeypatch.setattr(Ledger, "state_at", lambda self, seq: folds.append(seq) or full_fold(self, seq))
    return folds


def test_the_read_side_head_fold_is_brought_forward_in_place_not_refolded(engine, monkeypatch):
    from gpufleet.services.fleet import FleetService

    service = FleetService(engine)
    _append(engine, ev.EntityRegistered(entity="a", name="A"), D1)
    folds = _counting_folds(monkeypatch)
    for n in range(6):
        _append(engine, _demand(f"d{n}"), D2)
        with service.reading_head() as fold:
            assert fold.seq == n + 2 and fold.state.to_dict() == FleetService(engine).state().to_dict()
    assert folds == [2]  # folded once (nothing to bring forward yet), then caught up over each new event


def test_a_held_fold_is_never_changed_and_a_void_or_late_record_refolds(engine, monkeypatch):
    from gpufleet.services.fleet import FleetService

    service = FleetService(engine)
    _append(engine, ev.EntityRegistered(entity="a", name="A"), D1)
    folds = _counting_folds(monkeypatch)
    with service.reading_head() as held:
        before = held.state.to_dict()
        _append(engine, _demand("late"), D1)
        _append(engine, _demand("later"), D2)
        with service.reading_head() as newer:  # the held fold is not free: a new fold
            assert (newer.seq, held.seq) == (3, 1) and newer.state is not held.state
        assert held.state.to_dict() == before
    _append(engine, _demand("back-dated"), D1)  # before the fold's last date: cannot be applied on top
    with service.reading_head() as fold:
        assert fold.seq == 4 and fold.state.to_dict() == FleetService(engine).state().to_dict()
    assert folds == [1, 3, 4]


def test_concurrent_readers_and_writers_see_only_whole_folds_of_the_head(engine):
    """Readers in threads while a writer appends: each fold read equals a fresh fold at its own seq."""
    import threading

    from gpufleet.services.fleet import FleetService

    service = FleetService(engine)
    _append(engine, ev.EntityRegistered(entity="a", name="A"), D1)
    seen, stop = [], threading.Event()

    def read():
        while not stop.is_set():
            with service.reading_head() as fold:
                seen.append((fold.seq, fold.state.to_dict()))

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    for n in range(25):
        _append(engine, _demand(f"c{n}"), D2)
    stop.set()
    for thread in readers:
        thread.join()
    with engine.connect() as conn:
        truth = {seq: Ledger(conn).state_at(seq).to_dict() for seq in {s for s, _ in seen}}
    assert seen and all(state == truth[seq] for seq, state in seen)


def test_concurrent_askers_of_a_new_status_answer_compute_it_once(engine, monkeypatch):
    import threading
    import time

    from gpufleet.services.fleet import FleetService

    _append(engine, ev.EntityRegistered(entity="a", name="A"), D1)
    service, computed, real = FleetService(engine), [], FleetService._status

    def slow(*args):
        computed.append(args)
        time.sleep(0.2)
        return real(*args)

    monkeypatch.setattr(FleetService, "_status", staticmethod(slow))
    answers = []
    askers = [threading.Thread(target=lambda: answers.append(service.head_status())) for _ in range(6)]
    for thread in askers:
        thread.start()
    for thread in askers:
        thread.join()
    assert len(computed) == 1 and len(answers) == 6 and all(a is answers[0] for a in answers)


def test_a_read_only_transaction_reads_beside_a_writer_and_cannot_write(engine):
    """Reads do not queue for the write lock (SQLite: DEFERRED beside BEGIN IMMEDIATE; PostgreSQL:
    never blocked by a row lock), and a read-only transaction refuses a write on PostgreSQL."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from gpufleet.ledger import db

    _append(engine, ev.EntityRegistered(entity="a", name="A"), D1)
    reader = db.read_only(engine)
    with engine.begin() as writer:
        Ledger(writer).head(lock=True)  # the append lock, held
        with reader.connect() as conn:
            assert Ledger(conn).head().seq == 1
    if engine.dialect.name == "postgresql":
        with reader.connect() as conn, pytest.raises(DBAPIError, match="read-only"):
            conn.execute(text("UPDATE ledger_head SET seq = seq WHERE id = 1"))
