"""Several processes append to one PostgreSQL ledger at once: nothing lost, nothing doubled."""

from __future__ import annotations

import multiprocessing as mp
from datetime import date

import pytest

from gpufleet.domain import events as ev
from gpufleet.ledger import db
from gpufleet.ledger.store import Draft, Ledger

pytestmark = pytest.mark.postgres
WRITERS, APPENDS = 4, 25


def _writer(url: str, worker: int, barrier) -> None:
    engine = db.make_engine(url)
    barrier.wait()
    for i in range(APPENDS):
        payload = ev.DemandRecorded(demand=f"w{worker}-{i}", entity="a", start=date(2024, 1, 1),
                                    end=date(2024, 2, 1), gpus=1 + i, value_usd_per_gpu_hour=2.0)
        # every second write is retried with its idempotency key, as a client would after a timeout
        key = f"w{worker}-{i}"
        for _attempt in range(2 if i % 2 else 1):
            with engine.begin() as conn:
                Ledger(conn).append([Draft(payload, date(2024, 1, 1), f"writer-{worker}", idempotency_key=key)])
    engine.dispose()


def test_concurrent_appends_are_serialized_and_the_chain_verifies(pg_url):
    engine = db.make_engine(pg_url)
    db.upgrade(engine)
    with engine.begin() as conn:
        Ledger(conn).append([Draft(ev.EntityRegistered(entity="a", name="A"), date(2024, 1, 1), "setup")])
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(WRITERS)
    procs = [ctx.Process(target=_writer, args=(pg_url, w, barrier)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    with engine.connect() as conn:
        ledger = Ledger(conn)
        report = ledger.verify()
        assert report.ok, report.reason
        assert report.events_checked == 1 + WRITERS * APPENDS
        demands = ledger.state().demand
    assert sorted(demands) == sorted(f"w{w}-{i}" for w in range(WRITERS) for i in range(APPENDS))
    engine.dispose()
