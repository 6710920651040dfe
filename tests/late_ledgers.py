"""Random small ledgers whose recording order differs from their effective order: claims, a reschedule and
a failure recorded late (back-dated), a purchase order recorded long before its date, maybe a void."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import strategies as st

from builders import two_party_fleet
from gpufleet.domain import events as ev
from gpufleet.ledger.store import Draft

START = date(2024, 1, 1)


def stamp(day: date) -> str:
    return f"{day.isoformat()}T00:00:00.000000Z"


def day_in(low: date, high: date) -> st.SearchStrategy[date]:
    return st.integers(0, (high - low).days).map(lambda n: low + timedelta(days=n))


claim_specs = st.lists(st.tuples(
    st.sampled_from(["a", "b"]), st.sampled_from(["active_gpus", "gpu_spend_usd"]),
    day_in(START, date(2024, 11, 1)),  # stated on
    st.integers(10, 420),  # deadline: days after
    st.integers(0, 120),  # recorded this many days after it was stated
    st.booleans(),  # a period start (spend claims)
), min_size=1, max_size=6)


@st.composite
def ledgers(draw) -> tuple[list[Draft], int]:
    """A two-party fleet whose claims, a reschedule and a failure are recorded late (back-dated), with a
    purchase order dated after every deadline recorded early, and maybe a void; and where to split it."""
    story = two_party_fleet(START.isoformat()).po("p1", "a", {"l1": (50, "2024-02-01"), "l2": (60, "2024-06-01"),
                                                             "l3": (40, "2024-09-01")})
    story.po("p2", "b", {"m1": (30, "2024-04-01")}, price=25_000)
    story.on("2024-02-01").deliver("l1").on("2024-02-05").install("a", "s1", 50)
    story.on("2024-04-03").deliver("m1").on("2024-04-05").install("b", "s1", 30)
    story.on("2024-06-10").deliver("l2").on("2024-06-12").install("a", "s1", 40)
    timed = [(p, d, d) for p, d in story.items]  # (payload, effective, recorded)
    for i, (who, metric, said, ahead, late, period) in enumerate(draw(claim_specs)):
        target = draw(st.sampled_from([50, 90, 3e6]))
        claim = ev.ClaimRecorded(claim=f"c{i}", claimant=who, metric=metric, target=target, model="h100",
                                 deadline=said + timedelta(days=ahead),
                                 period_start=said if period and metric == "gpu_spend_usd" else None)
        timed.append((claim, said, said + timedelta(days=late)))
    moved = draw(day_in(date(2024, 3, 1), date(2024, 8, 1)))
    timed.append((ev.LotRescheduled(lot="l3", planned_date=draw(day_in(date(2024, 9, 1), date(2025, 6, 1)))),
                  moved, moved + timedelta(days=draw(st.integers(0, 90)))))
    failed = draw(day_in(date(2024, 7, 1), date(2024, 10, 1)))
    timed.append((ev.GpusFailed(owner="a", model="h100", gpus=5, site="s1"), failed,
                  failed + timedelta(days=draw(st.integers(0, 60)))))
    timed.append((ev.PurchaseOrderPlaced(po="p3", buyer="b", vendor="nvidia", model="h100", unit_price_usd=28_000,
                                         lots=[ev.LotSpec(lot="n1", gpus=20, planned_date=date(2026, 9, 1))]),
                  date(2026, 6, 1), draw(day_in(START, date(2024, 12, 1)))))
    timed.sort(key=lambda t: t[2])  # recording order is the chain's order
    drafts = [Draft(p, eff, "t", recorded_at=stamp(rec)) for p, eff, rec in timed]
    if draw(st.booleans()):  # void a claim or the reschedule, some days after it was recorded
        target = draw(st.sampled_from([i for i, (p, _e, _r) in enumerate(timed)
                                       if isinstance(p, ev.ClaimRecorded | ev.LotRescheduled)]))
        when = timed[target][2] + timedelta(days=draw(st.integers(1, 60)))
        at = next((i for i, t in enumerate(timed) if t[2] > when), len(timed))
        drafts.insert(at, Draft(ev.EventVoided(seq=target + 1, reason="entered wrong"), timed[target][1], "t",
                                recorded_at=stamp(when)))
    return drafts, draw(st.integers(1, len(drafts)))


