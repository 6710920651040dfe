"""The fleet state's invariants, as tables of stories that must be accepted or refused."""

from __future__ import annotations

from datetime import date

import pytest

from builders import Story, two_party_fleet
from gpufleet.domain import events as ev
from gpufleet.errors import InvariantViolation, UnknownReference


def delivered(gpus: int = 100, **site) -> Story:
    """a owns ``gpus`` H100 in its warehouse; site s1 (owned by a) is online."""
    return (two_party_fleet(**site).po("p1", "a", {"l1": (gpus, "2024-02-01")})
            .on("2024-02-01").deliver("l1"))


def installed(gpus: int = 100) -> Story:
    return delivered(gpus).on("2024-02-02").install("a", "s1", gpus)


# story -> (expected error type, words the message must contain)
REFUSED = {
    "install more than the warehouse holds": (
        lambda: delivered(100).install("a", "s1", 101), InvariantViolation, "has 100 h100 in its warehouse"),
    "install beyond the site's slots": (
        lambda: delivered(100, slots=50).install("a", "s1", 51), InvariantViolation, "50 slots"),
    "install beyond the site's power": (
        lambda: delivered(100, mw=0.05).install("a", "s1", 100), InvariantViolation, "MW"),
    "install before the site comes online": (
        lambda: (Story().entity("a").model().site("s1", "a", 100, 1, online="2024-06-01")
                 .po("p1", "a", {"l1": (10, "2024-02-01")}).on("2024-02-01").deliver("l1").install("a", "s1", 10)),
        InvariantViolation, "0 slots online"),
    "lend more than the lender holds": (
        lambda: installed(100).lend("ln", "a", "b", "s1", 101, "2024-06-01"), InvariantViolation, "cannot lend 101"),
    "lend GPUs already lent": (
        lambda: installed(100).lend("ln", "a", "b", "s1", 60, "2024-06-01").lend("ln2", "a", "b", "s1", 60,
                                                                                  "2024-06-01"),
        InvariantViolation, "holds 40"),
    "reclaim before the notice period ends": (
        lambda: (installed().on("2024-03-01").lend("ln", "a", "b", "s1", 10, "2024-12-01", notice_days=30)
                 .on("2024-03-10").reclaim("ln", 10, notice="2024-03-01")),
        InvariantViolation, "2024-03-31 at the earliest"),
    "reclaim more than is out": (
        lambda: installed().lend("ln", "a", "b", "s1", 10, "2024-12-01").reclaim("ln", 11, notice="2024-02-02"),
        InvariantViolation, "has 10 GPUs out"),
    "close a loan twice": (
        lambda: installed().lend("ln", "a", "b", "s1", 10, "2024-12-01").close("ln").close("ln"),
        InvariantViolation, "was closed"),
    "loan that ends before it starts": (
        lambda: installed().lend("ln", "a", "b", "s1", 10, "2024-01-01"), InvariantViolation, "not after its start"),
    "fail GPUs that are lent out": (
        lambda: installed(100).lend("ln", "a", "b", "s1", 100, "2024-12-01").fail("a", 1, site="s1"),
        InvariantViolation, "cannot fail 1"),
    "retire more failed GPUs than failed": (
        lambda: installed().fail("a", 2, site="s1").retire("a", 3, from_failed=True), InvariantViolation,
        "has 2 h100 failed"),
    "deliver a lot twice": (lambda: delivered().deliver("l1"), InvariantViolation, "already delivered"),
    "ship a delivered lot": (lambda: delivered().ship("l1"), InvariantViolation, "cannot ship"),
    "duplicate entity": (lambda: two_party_fleet().entity("a"), InvariantViolation, "already recorded"),
    "unknown parent": (lambda: Story().entity("a", parent="zz"), UnknownReference, "no entity 'zz'"),
    "install at an unknown site": (lambda: delivered().install("a", "nowhere", 1), UnknownReference, "no site"),
    "deliver an unknown lot": (lambda: two_party_fleet().deliver("l9"), UnknownReference, "no lot 'l9'"),
    "swap lots of one owner": (
        lambda: delivered().po("p2", "a", {"x1": (5, "2024-05-01"), "x2": (5, "2024-06-01")})
        .add(ev.DeliverySlotSwap(swap="s", lots_a=["x1"], lots_b=["x2"])), InvariantViolation, "both sides"),
    "swap unequal lots": (
        lambda: two_party_fleet().po("p1", "a", {"x1": (5, "2024-05-01")}).po("p2", "b", {"y1": (6, "2024-06-01")})
        .add(ev.DeliverySlotSwap(swap="s", lots_a=["x1"], lots_b=["y1"])), InvariantViolation, "5 GPUs for 6"),
    "swap a delivered lot": (
        lambda: delivered().po("p2", "b", {"y1": (100, "2024-06-01")})
        .add(ev.DeliverySlotSwap(swap="s", lots_a=["l1"], lots_b=["y1"])), InvariantViolation, "delivered"),
    "capacity slip that strands installed GPUs": (
        lambda: installed().on("2024-03-01").add(ev.SiteCapacitySlipped(site="s1", step="s1-1",
                                                                         online_date=date(2024, 9, 1))),
        InvariantViolation, "0 slots online"),
    "event out of date order": (lambda: installed().on("2023-12-01").fail("a", 1, site="s1"), InvariantViolation,
                                "date order"),
}


@pytest.mark.parametrize("build, error, words", REFUSED.values(), ids=REFUSED.keys())
def test_refused_events_raise_and_leave_the_state_unchanged(build, error, words):
    story = build()
    *accepted, (last, day) = story.items
    state = Story()
    state.items = accepted
    before = state.state()
    image = before.to_dict()
    with pytest.raises(error, match=None) as info:
        before.apply(last, day)
    assert words in str(info.value)
    assert before.to_dict() == image, "a refused event must not change the state"
    assert before.conservation_errors() == []


ACCEPTED = {
    "deliver and install": (installed(100), {"installed_owned": {("a", "h100"): 100}}),
    "ship then deliver": (
        two_party_fleet().po("p1", "a", {"l1": (10, "2024-02-01")}).ship("l1").deliver("l1"),
        {"warehouse": {("a", "h100"): 10}}),
    "lend and reclaim part": (
        installed(100).lend("ln", "a", "b", "s1", 40, "2024-06-01").on("2024-03-01").reclaim("ln", 15, "2024-03-01"),
        {"installed": {("s1", "a", "h100", "a"): 75, ("s1", "a", "h100", "b"): 25}}),
    "fail, repair, reinstall": (
        installed(100).fail("a", 10, site="s1").add(ev.GpusRepaired(owner="a", model="h100", gpus=10))
        .install("a", "s1", 10), {"installed_owned": {("a", "h100"): 100}, "failed": {}}),
    "retire from site and from failed": (
        installed(100).fail("a", 10, site="s1").retire("a", 10, from_failed=True).retire("a", 5, site="s1"),
        {"retired": {("a", "h100"): 15}, "installed_owned": {("a", "h100"): 85}}),
    "swap undelivered lots": (
        two_party_fleet().po("p1", "a", {"x1": (12, "2024-01-10")}).ship("x1")
        .po("p2", "b", {"y1": (6, "2024-03-01"), "y2": (6, "2024-06-01")})
        .add(ev.DeliverySlotSwap(swap="dec", lots_a=["x1"], lots_b=["y1", "y2"])),
        {"in_transit": {("b", "h100"): 12}, "on_order": {("a", "h100"): 12}}),
}


@pytest.mark.parametrize("story, expected", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted_stories_keep_every_gpu_in_one_state(story, expected):
    state = story.state()
    assert state.conservation_errors() == []
    for counter, values in expected.items():
        assert {k: v for k, v in getattr(state, counter).items() if v} == values


def test_a_slip_moves_capacity_later_and_is_visible_in_site_views():
    from gpufleet.domain.views import site_usage

    story = (Story().entity("a").model().site("s1", "a", 100, 1, online="2024-03-01")
             .on("2024-02-01").add(ev.SiteCapacitySlipped(site="s1", step="s1-1", online_date=date(2024, 5, 1))))
    state = story.state()
    assert state.sites["s1"].slots_online(date(2024, 4, 1)) == 0
    usage = site_usage(state, date(2024, 4, 1))[0]
    assert (usage.next_online_date, usage.slip_days) == ("2024-05-01", 61)


def test_loan_fees_accrue_per_gpu_hour_until_returned():
    story = (installed(100).on("2024-03-01").lend("ln", "a", "b", "s1", 10, "2024-12-01", fee=2.0)
             .on("2024-03-11").reclaim("ln", 5, "2024-03-11").on("2024-03-21").close("ln"))
    loan = story.state().loans["ln"]
    # 10 GPUs x 10 days x 24 h + 5 GPUs x 10 days x 24 h
    assert loan.gpu_hours_through(date(2025, 1, 1)) == 3600
    assert loan.gpus_out == 0 and loan.closed_on == date(2024, 3, 21)


def test_snapshot_image_round_trips():
    state = (installed(100).lend("ln", "a", "b", "s1", 40, "2024-06-01")
             .add(ev.ClaimRecorded(claim="c", claimant="a", metric="active_gpus", target=5, deadline=date(2024, 12, 31)))
             .state())
    assert type(state).from_dict(state.to_dict()).to_dict() == state.to_dict()
