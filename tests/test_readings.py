"""Series read over time (web/series.over_time with DatedReadings and the head's fold) equal one fold per
day, before and after a write, whatever the recording order; a write dated today reads only today again."""

from __future__ import annotations

import tempfile
from datetime import date, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders import two_party_fleet
from gpufleet.domain import events as ev
from gpufleet.ledger import db
from gpufleet.ledger.store import Draft, Ledger
from gpufleet.services.fleet import FleetService
from gpufleet.web import series
from late_ledgers import day_in, ledgers


def whole(state, _day) -> dict:
    return state.to_dict()


def reference(service: FleetService, days: list[date], known_at: str | None) -> list[dict]:
    return [service.state(day, known_at).to_dict() for day in days]


def read(service: FleetService, days: list[date], known_at: str | None, take=whole) -> list:
    with service.reading_head() as head:
        return series.over_time(service, days, take, known_at, ("test", take), head)


def append(engine, drafts: list[Draft]) -> None:
    with engine.begin() as conn:
        Ledger(conn).append(drafts)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ledger=ledgers(), first=day_in(date(2024, 1, 1), date(2024, 12, 1)), step=st.integers(5, 60),
       known=st.one_of(st.none(), day_in(date(2024, 2, 1), date(2025, 1, 31))))
def test_series_equal_one_fold_per_day_before_and_after_a_write(ledger, first, step, known):
    drafts, split = ledger
    days = [first + timedelta(days=step * i) for i in range(12)] + [date(2026, 7, 1)]  # the last after every event
    known_at = None if known is None else known.isoformat()
    with tempfile.TemporaryDirectory() as home:
        engine = db.make_engine(str(Path(home) / "ledger.db"))
        db.upgrade(engine)
        try:
            service = FleetService(engine)
            append(engine, drafts[:split])
            assert read(service, days, known_at) == reference(service, days, known_at)
            append(engine, drafts[split:])
            assert read(service, days, known_at) == reference(service, days, known_at)
            assert read(service, days, None) == reference(service, days, None)
        finally:
            engine.dispose()


def test_a_write_dated_today_reads_only_the_days_from_today(sqlite_engine):
    story = two_party_fleet("2024-01-01").po("p1", "a", {"l1": (50, "2024-02-01")})
    story.on("2024-02-01").deliver("l1").install("a", "s1", 50)
    append(sqlite_engine, story.drafts())
    service = FleetService(sqlite_engine)
    days = [date(2024, 1, 1), date(2024, 3, 1), date(2024, 6, 1), date(2024, 9, 1)]
    seen: list[date] = []

    def installed(state, day):
        seen.append(day)
        return state.installed_owned[("a", "h100")]

    assert read(service, days, None, installed) == [0, 50, 50, 50] and seen == days
    seen.clear()
    append(sqlite_engine, [Draft(ev.GpusFailed(owner="a", model="h100", gpus=10, site="s1"), date(2024, 6, 1), "t")])
    assert read(service, days, None, installed) == [0, 50, 40, 40]
    assert seen == [date(2024, 6, 1), date(2024, 9, 1)]  # the days before the write's date are kept
