"""Claims against the record (services/claims.py) are read from one pass and a carried fold, and kept
across heads; they must equal the definition: one fold per (as-of, known-at) point and claim."""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders import two_party_fleet
from late_ledgers import day_in, ledgers
from gpufleet.domain import events as ev
from gpufleet.domain import views
from gpufleet.domain.chain import end_of_day
from gpufleet.ledger import db
from gpufleet.ledger.store import Draft, Ledger
from gpufleet.services.claims import claim_forecasts, supported_when_stated
from gpufleet.services.fleet import FleetService

START = date(2024, 1, 1)


def reference(service: FleetService, on: date, known_at: str | None) -> list[tuple]:
    """Each claim made by ``on``: (claim, recorded, supported when stated), one fold per point."""
    state = service.state(on, known_at)
    out = []
    for claim_id, c in sorted(state.claims.items()):
        if c.stated_on > on:
            continue
        day = min(on, c.deadline)
        actual = views.claim_values(service.state(day, known_at), day, [c])[0]
        supported = supported_when_stated(service.state(c.deadline, end_of_day(c.stated_on)), c)
        out.append((claim_id, actual, supported))
    return out


def read(service: FleetService, on: date, known_at: str | None) -> list[tuple]:
    rows = claim_forecasts(service, service.state(on, known_at), on, known_at)
    return [(r["claim"], r["actual"], r["supported_when_stated"]) for r in rows]


def append(engine, drafts: list[Draft]) -> None:
    with engine.begin() as conn:
        Ledger(conn).append(drafts)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ledger=ledgers(), on=day_in(date(2024, 2, 1), date(2025, 12, 31)),
       known=st.one_of(st.none(), day_in(date(2024, 2, 1), date(2025, 1, 31))))
def test_claims_equal_one_fold_per_point_before_and_after_a_write(ledger, on, known):
    drafts, split = ledger
    known_at = None if known is None else known.isoformat()
    with tempfile.TemporaryDirectory() as home:
        engine = db.make_engine(str(Path(home) / "ledger.db"))
        db.upgrade(engine)
        try:
            service = FleetService(engine)  # one service: what it kept at the first head is reused after
            append(engine, drafts[:split])
            assert read(service, on, known_at) == reference(service, on, known_at)
            append(engine, drafts[split:])
            assert read(service, on, known_at) == reference(service, on, known_at)
            assert read(service, on, None) == reference(service, on, None)
        finally:
            engine.dispose()


@pytest.mark.parametrize("write_on, reread", [
    (date(2024, 12, 1), {"c-open"}),  # after the first claim's deadline: only the open one is read again
    (date(2024, 3, 1), {"c-past", "c-open"}),  # back-dated before both: both are read again
], ids=["dated-today", "back-dated"])
def test_a_write_rereads_only_the_claims_it_can_change(sqlite_engine, monkeypatch, write_on, reread):
    story = two_party_fleet(START.isoformat()).po("p1", "a", {"l1": (50, "2024-02-01")})
    story.on("2024-02-01").deliver("l1").install("a", "s1", 50)
    story.add(ev.ClaimRecorded(claim="c-past", claimant="a", metric="active_gpus", target=50, model="h100",
                               deadline=date(2024, 6, 30)))
    story.add(ev.ClaimRecorded(claim="c-open", claimant="a", metric="active_gpus", target=50, model="h100",
                               deadline=date(2025, 6, 30)))
    append(sqlite_engine, story.drafts())
    service = FleetService(sqlite_engine)
    on = date(2025, 1, 1)
    first = read(service, on, None)
    read_days: list[date] = []
    real = views.claim_values
    monkeypatch.setattr(views, "claim_values", lambda s, day, cs: read_days.append(day) or real(s, day, cs))
    append(sqlite_engine, [Draft(ev.GpusFailed(owner="a", model="h100", gpus=10, site="s1"), write_on, "t")])
    after = read(service, on, None)
    days = {"c-past": date(2024, 6, 30), "c-open": on}
    assert set(read_days) == {days[c] for c in reread}
    assert after == reference(service, on, None)
    assert [r[1] for r in first] == [50.0, 50.0] and dict((r[0], r[1]) for r in after)["c-open"] == 40.0
