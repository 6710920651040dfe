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
    asked = [service.head_status(), service.status(D2), service.status(D2, known_at="2199-01-01")]
    assert service.head_status() is asked[0] and service.status(D2) is asked[1]  # kept, not recomputed
    _append(engine, ev.EntityRegistered(entity="b", name="B"), D1)  # the ledger moves on: every answer changes
    fresh = FleetService(engine)
    now = [service.head_status(), service.status(D2), service.status(D2, known_at="2199-01-01")]
    assert now == [fresh.head_status(), fresh.status(D2), fresh.status(D2, known_at="2199-01-01")]
    assert [a["ledger_seq"] for a in asked] == [2, 2, 2] and [a["ledger_seq"] for a in now] == [3, 3, 3]
