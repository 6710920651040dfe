"""The planner: hand-solved cases, properties on random small fleets, a second solver, errors, the CLI.

Every problem is built the way the service builds it: a :class:`Story` of ledger events,
``.state()``, ``problem_from_state``, then ``make_plan`` (which runs the independent checker).
Weeks start on the as-of date (2024-01-01, a Monday); one week is 168 hours.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builders import Story
from gpufleet.domain import events as ev
from gpufleet.domain.state import FleetState
from gpufleet.errors import InputError, PlanInfeasible
from gpufleet.planner import checker
from gpufleet.planner.model import TIE_BREAK_USD, stage_slack
from gpufleet.planner.plan import Variables, make_plan, objective_usd
from gpufleet.planner.policies import POLICIES, Decision, get_policy, own_served, smallest_share, solve_stage
from gpufleet.planner.problem import PlanningProblem, PlanOptions, problem_from_state
from gpufleet.planner.solver import SolveOptions
from gpufleet.services import planning
from planner_reference import TIE_BREAK_USD as REFERENCE_TIE_BREAK
from planner_reference import (KEEP_TOL, ReferenceInfeasible, ReferenceSolveError, Stage, check_point, index_sets,
                               reference_objective, solve_reference)

START = date(2024, 1, 1)
H = 168.0  # hours per week
GPUFLEET = Path(sys.executable).parent / "gpufleet"
ALL_POLICIES = ["hold", "max-value", "owner-first", "fair"]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "h100-2024.yaml"


def day(offset_days: int) -> str:
    return (START + timedelta(days=offset_days)).isoformat()


def demand(story: Story, demand_id: str, entity: str, start: str, end: str, gpus: int, value: float,
           tier: int = 1) -> Story:
    return story.add(ev.DemandRecorded(demand=demand_id, entity=entity, start=date.fromisoformat(start),
                                       end=date.fromisoformat(end), gpus=gpus, value_usd_per_gpu_hour=value,
                                       tier=tier))


def holds(story: Story, owner: str, gpus: int, site: str | None = None, model: str = "h100") -> Story:
    """An opening balance: in the warehouse, or installed at ``site``."""
    return story.add(ev.OpeningBalance(owner=owner, model=model, gpus=gpus, site=site))


def related(story: Story, person: str, *entities: str) -> Story:
    """``person`` is a director of every one of ``entities``: they become related parties."""
    story.add(ev.PersonRegistered(person=person, name=person.upper()))
    for e in entities:
        story.add(ev.RoleAssigned(person=person, entity=e, role="director"))
    return story


def served_by_entity(plan: dict) -> dict[str, float]:
    return {e: sum(tiers.values()) for e, tiers in plan["kpis"]["served_gpu_weeks"].items()}


# ---------------------------------------------------------------------------------------
# 1. Hand-solved cases
# ---------------------------------------------------------------------------------------


def one_owner(slots: int = 100, mw: float = 1.0, pue: float = 1.0, online: str | None = None) -> Story:
    """Entity a, model h100 (700 W), a's site s1."""
    return Story(START.isoformat()).entity("a").model().site("s1", "a", slots, mw, online=online, pue=pue)


def worked_example(relate: bool = True) -> Story:
    """a holds 100 GPUs but its site s1 comes online only in week 4; b's site s2 is online now.

    a wants 100 GPUs from week 4 (2024-01-29) to 2024-04-01 at $3/GPU-h; b wants 100 from now
    to 2024-03-01 at $2/GPU-h (week 8 covers 4 of its 7 days).
    """
    story = Story(START.isoformat()).entity("a").entity("b").model()
    if relate:
        related(story, "p", "a", "b")
    story.site("s1", "a", 1000, 10.0, online="2024-01-29").site("s2", "b", 1000, 10.0)
    holds(story, "a", 100)
    demand(story, "da", "a", "2024-01-29", "2024-04-01", 100, 3.0)
    return demand(story, "db", "b", "2024-01-01", "2024-03-01", 100, 2.0)


def existing_loan() -> Story:
    """a has 10 GPUs installed at s1 and has lent all 10 to (unrelated) b since the as-of date.

    a values its own use at $1/GPU-h, b at $2/GPU-h; both want 10 GPUs for the 4 weeks.
    """
    story = Story(START.isoformat()).entity("a").entity("b").model().site("s1", "a", 100, 1.0)
    holds(story, "a", 10, site="s1")
    story.lend("ln1", "a", "b", "s1", 10, end=day(60))
    demand(story, "da", "a", day(0), day(28), 10, 1.0)
    return demand(story, "db", "b", day(0), day(28), 10, 2.0)


def borrower_done(reverse_use: bool = False) -> Story:
    """existing_loan, but b's demand ended the day before the plan starts (2023-12-25..2024-01-01).

    With ``reverse_use``, b also holds 10 idle GPUs at s1 and a wants 10 more at $1.
    """
    story = Story("2023-12-25").entity("a").entity("b").model().site("s1", "a", 100, 1.0)
    holds(story, "a", 10, site="s1")
    if reverse_use:
        holds(story, "b", 10, site="s1")
    story.lend("ln1", "a", "b", "s1", 10, end=day(60))
    demand(story, "da", "a", day(0), day(28), 20 if reverse_use else 10, 1.0)
    return demand(story, "db", "b", "2023-12-25", day(0), 10, 2.0)


def loan_ends_as_owner_needs() -> Story:
    """existing_loan, but the loan ends on day 14 and a wants its 10 GPUs only from then, at $3."""
    story = Story(START.isoformat()).entity("a").entity("b").model().site("s1", "a", 100, 1.0)
    holds(story, "a", 10, site="s1")
    story.lend("ln1", "a", "b", "s1", 10, end=day(14))
    demand(story, "da", "a", day(14), day(28), 10, 3.0)
    return demand(story, "db", "b", day(0), day(28), 10, 2.0)


WORKED = PlanOptions(horizon_weeks=12, install_lead_weeks=1, move_cost_usd=200)


@dataclass(frozen=True)
class Case:
    story: Callable[[], Story]
    options: PlanOptions
    policy: str
    objective: float
    loans: int = 0
    idle_total: float | None = None
    via_service: bool = False  # plan through services.planning (GPUs lent on the as-of date count)
    extra: dict = field(default_factory=dict)


CASES = {
    # No demand: nothing is worth doing, and the tie-break keeps GPUs in the warehouse.
    # objective 0; idle = 10 GPUs x 4 weeks = 40.
    "nothing-to-do": Case(lambda: holds(one_owner(), "a", 10), PlanOptions(horizon_weeks=4), "max-value",
                          0.0, idle_total=40.0, extra={"installs": 0}),
    # 10 GPUs in the warehouse, demand 10 for 4 weeks at $1. Install week 0, burn in weeks 0-1 (lead 2),
    # serve weeks 2-3: 2 x 10 x 168 x $1 = 3,360. Idle: 10 x 2 burn-in weeks = 20.
    "own-gpus-burn-in": Case(lambda: demand(holds(one_owner(), "a", 10), "d", "a", day(0), day(28), 10, 1.0),
                             PlanOptions(horizon_weeks=4, install_lead_weeks=2), "hold", 3_360.0, idle_total=20.0,
                             extra={"installs": 1}),
    # The same 10 GPUs already installed: no burn-in, 4 x 10 x 168 = 6,720; nothing idle.
    "installed-serve-at-once": Case(
        lambda: demand(holds(one_owner(), "a", 10, site="s1"), "d", "a", day(0), day(28), 10, 1.0),
        PlanOptions(horizon_weeks=4, install_lead_weeks=2), "max-value", 6_720.0, idle_total=0.0),
    # Site s1 has 6 slots: 6 x 4 weeks x 168 x $1 = 4,032 (lead 0). Idle: 4 GPUs x 4 weeks = 16.
    "site-slots-bind": Case(
        lambda: demand(holds(one_owner(slots=6), "a", 10), "d", "a", day(0), day(28), 10, 1.0),
        PlanOptions(horizon_weeks=4, install_lead_weeks=0), "max-value", 4_032.0, idle_total=16.0),
    # 100 slots, but 5,040 W at PUE 1.2 = 6 x 700 W x 1.2: 6 GPUs again, 4,032; idle 16.
    "site-power-binds": Case(
        lambda: demand(holds(one_owner(mw=0.00504, pue=1.2), "a", 10), "d", "a", day(0), day(28), 10, 1.0),
        PlanOptions(horizon_weeks=4, install_lead_weeks=0), "max-value", 4_032.0, idle_total=16.0),
    # s1 comes online on 2024-01-10 (in week 1), so on the start of week 2. Lead 1: install week 2,
    # burn in week 2, serve week 3 only: 10 x 168 = 1,680. Idle: weeks 0-2 = 30.
    "no-install-before-site-online": Case(
        lambda: demand(holds(one_owner(online="2024-01-10"), "a", 10), "d", "a", day(0), day(28), 10, 1.0),
        PlanOptions(horizon_weeks=4, install_lead_weeks=1), "max-value", 1_680.0, idle_total=30.0),
    # A lot planned for 2024-01-10 (in week 1) counts from the start of week 2. Lead 0, demand 10 for
    # 4 weeks at $1: weeks 2-3, 2 x 10 x 168 = 3,360. Idle: 0 (no GPUs held before week 2).
    "lot-arrives-next-week": Case(
        lambda: demand(one_owner().po("po1", "a", {"lot1": (10, "2024-01-10")}), "d", "a", day(0), day(28), 10, 1.0),
        PlanOptions(horizon_weeks=4, install_lead_weeks=0), "max-value", 3_360.0, idle_total=0.0),
    # Demand for 7 GPUs over 10 days: week 0 wants 7, week 1 wants 7 x 3/7 = 3. With 10 GPUs
    # installed: 10 GPU-weeks x 168 = 1,680. Idle: 3 + 7 + 10 + 10 = 30.
    "demand-prorated-by-day": Case(
        lambda: demand(holds(one_owner(), "a", 10, site="s1"), "d", "a", day(0), day(10), 7, 1.0),
        PlanOptions(horizon_weeks=4), "max-value", 1_680.0, idle_total=30.0),
    # 10 installed GPUs failing at 10% a week (free moves): 10 + 9 + 8.1 GPUs serve demand of 10 for
    # 3 weeks: 27.1 x 168 = 4,552.8. Nothing idle.
    "failures-shrink-supply": Case(
        lambda: demand(holds(one_owner(), "a", 10, site="s1"), "d", "a", day(0), day(21), 10, 1.0),
        PlanOptions(horizon_weeks=3, failure_rate_per_gpu_week=0.1, move_cost_usd=0.0), "hold", 4_552.8,
        idle_total=0.0),
    # 10 installed GPUs; tier 0 wants 6 at $5, tier 1 wants 10 at $1, for 2 weeks:
    # (6 x 5 + 4 x 1) x 168 x 2 = 11,424. Served: tier 0 12 GPU-weeks, tier 1 8.
    "tiers-compete": Case(
        lambda: demand(demand(holds(one_owner(), "a", 10, site="s1"), "d0", "a", day(0), day(14), 6, 5.0, tier=0),
                       "d1", "a", day(0), day(14), 10, 1.0, tier=1),
        PlanOptions(horizon_weeks=2), "max-value", 11_424.0, idle_total=0.0,
        extra={"served": {"a": {"0": 12.0, "1": 8.0}}}),
    # Hold: a installs at s1 in week 4, burns in, serves weeks 5-11: 7 x 100 x 168 x $3 = 352,800.
    # Idle: weeks 0-4 = 500 GPU-weeks.
    "worked-hold": Case(worked_example, WORKED, "hold", 352_800.0, idle_total=500.0),
    # Max-value: install at b's s2 in week 0, lend weeks 1-3 (3 x 100 x 168 x $2 = 100,800), reclaim
    # in week 4 (100 x $500) and move to s1 (100 x $200): 352,800 + 100,800 - 50,000 - 20,000 = 383,600.
    # Idle: the burn-in weeks 0 and 4 = 200.
    "related-loan-worth-it": Case(worked_example, WORKED, "max-value", 383_600.0, loans=1, idle_total=200.0,
                                  extra={"reclaims": 1, "moves": 1}),
    # Owner-first keeps a's 700 GPU-weeks of hold and lends only the surplus weeks: the same 383,600.
    "owner-first-lends-surplus": Case(worked_example, WORKED, "owner-first", 383_600.0, loans=1, idle_total=200.0),
    # Moving costs $2,000 a GPU: 3 weeks on loan earn 1,008 per GPU, less 2,500 to move and reclaim.
    # Lending for good earns (7 + 4/7) x 336 - 500 = 2,044 < 3,528 of own use. So hold's 352,800.
    "loan-not-worth-move-cost": Case(worked_example, dataclasses.replace(WORKED, move_cost_usd=2_000),
                                     "max-value", 352_800.0, loans=0, idle_total=500.0),
    # No shared person: a may not lend to b, so max-value is hold's 352,800.
    "unrelated-cannot-lend": Case(lambda: worked_example(relate=False), WORKED, "max-value", 352_800.0, loans=0,
                                  idle_total=500.0),
    # Unrelated, but an explicit agreement lets a lend to b: 383,600 again.
    "explicit-agreement-lends": Case(lambda: worked_example(relate=False),
                                     dataclasses.replace(WORKED, extra_lending_pairs=(("a", "b"),)), "max-value",
                                     383_600.0, loans=1, idle_total=200.0),
    # A subsidiary: b (child of a) wants 10 GPUs for 4 weeks at $2; a has 10 in the warehouse and no use
    # for them. Install at b's s2 in week 0, lend weeks 1-3: 3 x 10 x 168 x $2 = 10,080.
    "parent-lends-to-subsidiary": Case(
        lambda: demand(holds(Story(START.isoformat()).entity("a").entity("b", parent="a").model()
                             .site("s2", "b", 100, 1.0), "a", 10), "d", "b", day(0), day(28), 10, 2.0),
        PlanOptions(horizon_weeks=4, install_lead_weeks=1), "max-value", 10_080.0, loans=1, idle_total=10.0),
    # GPUs lent on the as-of date (via the service). Hold must take them back in week 0 (10 x $500)
    # and a serves itself: 4 x 10 x 168 x $1 - 5,000 = 1,720.
    "existing-loan-hold-reclaims": Case(existing_loan, PlanOptions(horizon_weeks=4), "hold", 1_720.0,
                                        via_service=True, idle_total=0.0, extra={"reclaims": 1}),
    # Max-value keeps the loan (b pays more): 4 x 10 x 168 x $2 = 13,440, no reclaim.
    "existing-loan-kept": Case(existing_loan, PlanOptions(horizon_weeks=4), "max-value", 13_440.0, loans=1,
                               via_service=True, idle_total=0.0, extra={"reclaims": 0}),
    # Owner-first keeps a whole (its 40 GPU-weeks alone), so the loan is reclaimed: 1,720.
    "existing-loan-owner-first": Case(existing_loan, PlanOptions(horizon_weeks=4), "owner-first", 1_720.0,
                                      via_service=True, idle_total=0.0, extra={"reclaims": 1}),
    # The borrower's demand ended the day before the plan starts: the 10 lent GPUs serve no work of
    # b's, so they come back in week 0 for free (no reclaim): a serves itself, 4 x 10 x 168 = 6,720.
    # (Before week 0 allowed free returns, hold charged 10 x $500: 1,720.)
    "borrower-done-returns-free": Case(borrower_done, PlanOptions(horizon_weeks=4), "hold", 6_720.0,
                                       via_service=True, idle_total=0.0, extra={"reclaims": 0}),
    "borrower-done-max-value": Case(borrower_done, PlanOptions(horizon_weeks=4), "max-value", 6_720.0,
                                    via_service=True, idle_total=0.0, extra={"reclaims": 0}),
    # An open loan a -> b (unrelated) permits lending a -> b only: b's 10 idle GPUs at s1 may not serve
    # a's demand for 20, so a gets its own 10 back (free, as above): 4 x 10 x 168 = 6,720; b's 10 idle.
    "open-loan-permits-one-direction": Case(lambda: borrower_done(reverse_use=True), PlanOptions(horizon_weeks=4),
                                            "max-value", 6_720.0, via_service=True, idle_total=40.0,
                                            extra={"reclaims": 0}),
    # The loan ends on day 14; a wants its GPUs from then at $3, more than b's $2: they are lent in
    # weeks 0-1 (2 x 10 x 168 x $2 = 6,720) and come back for free at the end date to serve a in
    # weeks 2-3 (2 x 10 x 168 x $3 = 10,080): 16,800, no reclaim. (While the model ignored end_date,
    # taking them back cost 10 x $500, so they stayed with b: 13,440.)
    "loan-returns-free-at-its-end-date": Case(loan_ends_as_owner_needs, PlanOptions(horizon_weeks=4), "max-value",
                                              16_800.0, loans=1, via_service=True, idle_total=0.0,
                                              extra={"reclaims": 0}),
    # A demand's end is the first day it no longer covers: day 0 to day 6 covers 6 days of week 0,
    # 10 x 6/7 GPU-weeks x 168 = 1,440.
    "demand-end-day-excluded": Case(
        lambda: demand(holds(one_owner(), "a", 10, site="s1"), "d", "a", day(0), day(6), 10, 1.0),
        PlanOptions(horizon_weeks=1), "max-value", 1_440.0, idle_total=10 / 7),
    # A lot counts from the first week starting on or after its planned date: planned on day 7 (the
    # start of week 1), it serves weeks 1-3 (lead 0): 3 x 10 x 168 = 5,040.
    "lot-on-a-week-start": Case(
        lambda: demand(one_owner().po("po1", "a", {"lot1": (10, day(7))}), "d", "a", day(0), day(28), 10, 1.0),
        PlanOptions(horizon_weeks=4, install_lead_weeks=0), "max-value", 5_040.0, idle_total=0.0),
}


def plan_case(case: Case) -> dict:
    state = case.story().state()
    if case.via_service:
        return planning.plan(state, START, case.options, case.policy)
    return make_plan(problem_from_state(state, START, case.options), case.policy)


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_hand_solved(case: Case):
    plan = plan_case(case)
    assert plan["status"] == "optimal"
    assert plan["policy"] == case.policy
    # abs: owner-first's floors allow 1e-6 GPUs a week of slack, which the optimizer uses (worth < 0.01 USD)
    assert plan["objective"] == pytest.approx(case.objective, rel=1e-7, abs=1e-2)
    assert len(plan["loans"]) == case.loans, plan["loans"]
    if case.idle_total is not None:
        assert plan["kpis"]["idle_gpu_weeks"]["total"] == pytest.approx(case.idle_total, abs=1e-3)
    for key in ("installs", "reclaims", "moves"):
        if key in case.extra:
            assert len(plan[key]) == case.extra[key], plan[key]
    if "served" in case.extra:
        for entity, tiers in case.extra["served"].items():
            assert plan["kpis"]["served_gpu_weeks"][entity] == pytest.approx(tiers)


def test_worked_example_loan_details():
    plan = make_plan(problem_from_state(worked_example().state(), START, WORKED), "max-value")
    (loan,) = plan["loans"]
    assert (loan["lender"], loan["borrower"], loan["site"], loan["model"]) == ("a", "b", "s2", "h100")
    assert (loan["start"], loan["end"]) == ("2024-01-08", "2024-01-29")  # weeks 1-3, end exclusive
    assert loan["gpus"] == pytest.approx(100) and loan["gpu_weeks"] == pytest.approx(300)
    assert "p (director)" in loan["reason"]  # the related-party basis is named
    (reclaim,) = plan["reclaims"]
    assert (reclaim["week"], reclaim["gpus"], reclaim["cost_usd"]) == (4, pytest.approx(100), pytest.approx(50_000))
    (move,) = plan["moves"]
    assert (move["site"], move["week"], move["gpus"]) == ("s2", 4, pytest.approx(100))
    assert sorted((i["site"], i["week"]) for i in plan["installs"]) == [("s1", 4), ("s2", 0)]
    # Fees move money, not value: a earns 300 x 168 x $2 of fees, b pays them; values add up to V.
    values = plan["kpis"]["value_usd"]
    assert sum(values.values()) == pytest.approx(383_600.0)
    assert values["a"] == pytest.approx(352_800 + 300 * H * 2.0 - 20_000)


def test_plan_json_carries_supply_failures_and_loan_days():
    """Enough to check conservation from the JSON alone: GPUs held and expected to fail per week,
    the GPUs that did fail at each site; a loan's end is the first day back, last_day the day before."""
    case = CASES["failures-shrink-supply"]  # with moves charged, so that failed GPUs leave as failures
    plan = plan_case(dataclasses.replace(case, options=dataclasses.replace(case.options, move_cost_usd=100.0)))
    (supply,) = plan["supply"]
    assert (supply["owner"], supply["model"]) == ("a", "h100")
    assert supply["available_gpus"] == pytest.approx([10.0, 9.0, 8.1])
    assert supply["expected_failures"] == pytest.approx([1.0, 1.0, 0.9])  # f * A[t-1], A[0] in week 0
    failed = {f["week"]: f["gpus"] for f in plan["failures"]}
    assert failed == pytest.approx({1: 1.0, 2: 0.9})  # installed 10 -> 9 -> 8.1 as A falls
    plan = make_plan(problem_from_state(worked_example().state(), START, WORKED), "max-value")
    (loan,) = plan["loans"]
    assert (loan["start"], loan["last_day"], loan["end"]) == ("2024-01-08", "2024-01-28", "2024-01-29")


def test_a_reclaim_inside_a_loans_notice_is_flagged():
    """The model does not hold reclaims to notice periods (a hard limit made plans infeasible as soon as
    lent GPUs failed); a reclaim inside one names the GPUs still under notice, for the lender to wait."""
    plan = planning.plan(existing_loan().state(), START, PlanOptions(horizon_weeks=4), "hold")
    assert [r["under_notice_gpus"] for r in plan["reclaims"]] == [0.0]
    story = Story(START.isoformat()).entity("a").entity("b").model().site("s1", "a", 100, 1.0)
    holds(story, "a", 10, site="s1").lend("ln1", "a", "b", "s1", 10, end=day(60), notice_days=14)
    demand(story, "da", "a", day(0), day(28), 10, 1.0)
    plan = planning.plan(demand(story, "db", "b", day(0), day(28), 10, 2.0).state(), START,
                         PlanOptions(horizon_weeks=4), "hold")
    (reclaim,) = plan["reclaims"]
    assert (reclaim["week"], reclaim["gpus"], reclaim["under_notice_gpus"]) == (0, 10.0, 10.0)


def test_binding_site_has_a_shadow_price():
    # With free moves, one more slot at s1 is worth one more GPU-week of $1 demand: 168 USD a week
    # (give or take the 0.01 USD tie-break, which the duals carry).
    case = CASES["site-slots-bind"]
    plan = plan_case(dataclasses.replace(case, options=dataclasses.replace(case.options, move_cost_usd=0.0)))
    prices = plan["shadow_prices"]["site_slots"]
    assert sorted(p["week"] for p in prices) == [0, 1, 2, 3]
    assert all(p["site"] == "s1" and p["usd_per_gpu_week"] == pytest.approx(H, abs=0.02) for p in prices)
    assert plan["shadow_prices"]["owner_gpus"] == []  # a's 10 GPUs are not the limit


def test_tier_alone_does_not_outrank_value():
    """The model ranks demand by value only: a tier-0 record at $1 loses to tier 1 at $5 (documented here)."""
    story = demand(demand(holds(one_owner(), "a", 10, site="s1"), "d0", "a", day(0), day(7), 10, 1.0, tier=0),
                   "d1", "a", day(0), day(7), 10, 5.0, tier=1)
    plan = make_plan(problem_from_state(story.state(), START, PlanOptions(horizon_weeks=1)), "max-value")
    assert plan["kpis"]["served_gpu_weeks"]["a"] == pytest.approx({"0": 0.0, "1": 10.0})


def test_loan_ending_with_the_borrowers_demand_is_not_a_reclaim():
    # As parent-lends-to-subsidiary, but the horizon (6 weeks) outlasts b's demand (weeks 0-3).
    # Expected 3 x 10 x 168 x $2 = 10,080 and no reclaim; the model charges 10 x $500 in week 4: 5,080.
    case = CASES["parent-lends-to-subsidiary"]
    plan = plan_case(dataclasses.replace(case, options=dataclasses.replace(case.options, horizon_weeks=6)))
    assert plan["reclaims"] == []
    assert plan["objective"] == pytest.approx(10_080.0)


def test_expected_failures_are_not_charged_as_moves():
    # 10 GPUs installed at s1, no demand, 1% failures a week, 4 weeks: nothing to do, objective 0.
    # Actual: avail falls to 9.703, the lost 0.297 GPUs are "moved" at $2,000: -594.02, and
    # plan["moves"] is empty because each week's 0.1 GPU is below the 0.5 reporting threshold.
    problem = problem_from_state(holds(one_owner(), "a", 10, site="s1").state(), START,
                                 PlanOptions(horizon_weeks=4, failure_rate_per_gpu_week=0.01))
    assert make_plan(problem, "hold")["objective"] == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------------------
# 2. Properties on random small fleets
# ---------------------------------------------------------------------------------------

WATTS = {"h100": 700.0, "b200": 1000.0}


@dataclass
class Fleet:
    state: FleetState
    options: PlanOptions

    def problem(self, **changes) -> PlanningProblem:
        return problem_from_state(self.state, START, dataclasses.replace(self.options, **changes))

    def lent_now(self, problem: PlanningProblem) -> np.ndarray | None:
        return planning.lent_now(problem, self.state)


@st.composite
def fleets(draw, integral: bool | None = False, scale: int = 1) -> Fleet:
    """2-4 entities, 1-3 sites, a few holdings, lots, loans and demand records; 4-10 weeks.

    ``scale`` multiplies every count of GPUs and slots (and MW with them), for fleets of the
    bundled example's size (tens of thousands of GPUs), where solver tolerances bite.

    Every fleet holds some GPUs and has a demand record (possibly outside the horizon): the two
    degenerate fleets without them are covered by xfail tests of their own.
    """
    horizon = draw(st.integers(4, 10))
    n_entities = draw(st.integers(2, 4))
    ents = [f"e{i}" for i in range(n_entities)]
    story = Story(START.isoformat())
    for i, e in enumerate(ents):
        parent = ents[draw(st.integers(0, i - 1))] if i and draw(st.integers(0, 4)) == 0 else None
        story.entity(e, parent)
    models = ["h100", "b200"] if draw(st.booleans()) else ["h100"]
    for m in models:
        story.model(m, WATTS[m])
    for k in range(draw(st.integers(0, 2))):  # people with roles make pairs related
        members = draw(st.lists(st.sampled_from(ents), min_size=1, max_size=3, unique=True))
        related(story, f"p{k}", *members)

    free: dict[str, tuple[int, float, float]] = {}  # site online now -> (slots left, W left, pue)
    sites = []
    for k in range(draw(st.integers(1, 3))):
        site, pue = f"s{k}", draw(st.sampled_from([1.0, 1.25, 1.5]))
        slots = draw(st.integers(0, 40)) * scale
        mw = round(slots * 700 * pue * draw(st.sampled_from([0.5, 0.8, 1.0, 2.0])) / 1e6, 6)
        online_week = draw(st.integers(0, horizon)) if draw(st.booleans()) else 0
        online = START + timedelta(days=7 * online_week + (draw(st.integers(0, 6)) if online_week else 0))
        story.site(site, draw(st.sampled_from(ents)), slots, mw, online=online.isoformat(), pue=pue)
        sites.append(site)
        if online <= START:
            free[site] = (slots, mw * 1e6, pue)

    installed: list[tuple[str, str, int]] = []
    for e in ents:
        for m in models:
            if draw(st.integers(0, 2)):
                story.add(ev.OpeningBalance(owner=e, model=m, gpus=draw(st.integers(1, 30)) * scale))
            if free and m == "h100" and draw(st.booleans()):
                site = draw(st.sampled_from(sorted(free)))
                slots, watts, pue = free[site]
                most = min(slots, int(watts // (WATTS[m] * pue)) if watts else 0)
                if most > 0:
                    n = draw(st.integers(1, most))
                    story.add(ev.OpeningBalance(owner=e, model=m, gpus=n, site=site))
                    free[site] = (slots - n, watts - n * WATTS[m] * pue, pue)
                    installed.append((e, site, n))
            if draw(st.integers(0, 3)) == 0:
                week = draw(st.integers(0, horizon + 1))
                story.po(f"po-{e}-{m}", e, {f"lot-{e}-{m}": (draw(st.integers(1, 20)) * scale,
                                                             (START + timedelta(days=7 * week - 2)).isoformat())},
                         model=m)
    if not any(isinstance(p, ev.OpeningBalance) for p, _ in story.items):
        holds(story, ents[0], draw(st.integers(1, 30)) * scale)  # no GPUs at all: see test_a_fleet_without_gpus_...
    for k, (lender, site, n) in enumerate(installed):  # GPUs lent on the as-of date
        if draw(st.integers(0, 3)) == 0:
            borrower = draw(st.sampled_from([e for e in ents if e != lender]))
            story.lend(f"ln{k}", lender, borrower, site, draw(st.integers(1, n)), end=day(draw(st.integers(1, 80))),
                       notice_days=draw(st.sampled_from([0, 0, 7, 14, 30])))

    for k in range(draw(st.integers(1, 5))):  # at least one, or the model may be empty (see xfail above)
        first = draw(st.integers(-7, 7 * horizon))
        length = draw(st.integers(1, 7 * horizon))
        demand(story, f"d{k}", draw(st.sampled_from(ents)), day(first), day(first + length),
               draw(st.integers(1, 30)) * scale, draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5, 5.0])),
               tier=draw(st.integers(0, 2)))

    pairs = tuple((a, b) for a, b in draw(st.lists(st.tuples(st.sampled_from(ents), st.sampled_from(ents)),
                                                    max_size=1)) if a != b)
    options = PlanOptions(
        horizon_weeks=horizon,
        week_days=draw(st.sampled_from([7, 7, 7, 3])),
        install_lead_weeks=draw(st.integers(0, 2)),
        move_cost_usd=draw(st.sampled_from([0.0, 100.0, 2_000.0])),
        reclaim_cost_usd=draw(st.sampled_from([0.0, 500.0])),
        failure_rate_per_gpu_week=draw(st.sampled_from([0.0, 0.0, 0.02])),
        server_gpus=draw(st.sampled_from([1, 2, 4, 8])),
        integral=draw(st.booleans()) if integral is None else integral,
        extra_lending_pairs=pairs,
    )
    return Fleet(story.state(), options)


def decide(problem: PlanningProblem, policy: str, lent_now=None, options: SolveOptions = SolveOptions()) -> Decision:
    return get_policy(policy).decide(problem, options, lent_now)


def planned(problem: PlanningProblem, policy: str, lent_now=None) -> tuple[dict, Decision]:
    """``make_plan``'s plan and the decision behind it, from one solve (the policy is wrapped to keep it)."""
    real, kept = get_policy(policy), []

    class Keep:
        name, summary = real.name, real.summary

        def decide(self, *args):
            kept.append(real.decide(*args))
            return kept[-1]

    with mock.patch.dict(POLICIES, {policy: Keep()}):
        plan = make_plan(problem, policy, lent_now=lent_now)
    return plan, kept[0]


def variables(decision: Decision) -> Variables:
    return Variables.of(decision.model.layout, decision.solution.x)


def tie_break_usd(problem: PlanningProblem, decision: Decision) -> float:
    lay, v = decision.model.layout, variables(decision)
    return TIE_BREAK_USD * float(v.add.sum() + v.serve[lay.ql >= 0].sum())


@given(fleets(integral=None))
def test_every_policy_passes_the_checker(fleet: Fleet):
    problem = fleet.problem()
    lent_now = fleet.lent_now(problem)
    wanted = np.bincount(problem.demand_entity, weights=problem.demand_gpus.sum(axis=1),
                         minlength=len(problem.entities))
    smallest_share = {}
    for policy in ALL_POLICIES:
        plan, decision = planned(problem, policy, lent_now)  # make_plan raises PlanCheckFailed on a bad plan
        lay, v = decision.model.layout, variables(decision)
        checker.check_plan(problem, lay, v, objective_usd(problem, lay, v), lent_now)
        assert plan["objective"] == pytest.approx(objective_usd(problem, lay, v), rel=1e-6, abs=1e-4)
        assert plan["policy"] == policy and plan["weeks"] == fleet.options.horizon_weeks
        served = sum(served_by_entity(plan).values())
        unserved = sum(sum(t.values()) for t in plan["kpis"]["unserved_gpu_weeks"].values())
        assert served + unserved == pytest.approx(problem.demand_gpus.sum(), abs=1e-2)
        assert plan["kpis"]["idle_gpu_weeks"]["total"] >= -1e-9
        if policy == "hold":
            assert plan["loans"] == [] and v.serve[lay.ql >= 0].max(initial=0.0) <= 1e-6
        shares = own_served(problem, decision).sum(axis=1)[wanted > 0] / wanted[wanted > 0]
        smallest_share[policy] = shares.min(initial=1.0)
    # fair maximizes the smallest share first (a MILP's stage 1 may stop within mip_rel_gap = 1e-4)
    tol = 1e-4 if fleet.options.integral else 1e-6
    assert all(smallest_share["fair"] >= share - tol for share in smallest_share.values()), smallest_share


@given(fleets())
def test_owner_first_never_serves_an_owner_less_than_hold(fleet: Fleet):
    problem = fleet.problem()
    lent_now = fleet.lent_now(problem)
    (hold, hold_decision), (first, first_decision) = (planned(problem, "hold", lent_now),
                                                      planned(problem, "owner-first", lent_now))
    # The plan rounds GPU-weeks to 3 decimals (up to 0.0005 per tier each way).
    rounding = 1e-3 * (1 + len(set(problem.demand_tier.tolist())))
    alone, shared = served_by_entity(hold), served_by_entity(first)
    for entity, got in alone.items():
        assert shared[entity] >= got - 1e-6 - rounding, entity
    # Unrounded: owner_first rows allow stage_slack GPUs a week, by design.
    alone_exact = own_served(problem, hold_decision)
    shared_exact = own_served(problem, first_decision)
    kept = alone_exact - stage_slack(alone_exact, problem.options.integral)
    assert (shared_exact.sum(axis=1) >= kept.sum(axis=1) - 1e-6).all()


@given(fleets())
def test_lp_is_an_upper_bound_of_the_milp(fleet: Fleet):
    lp = fleet.problem(integral=False)
    milp = fleet.problem(integral=True)
    lp_best = -decide(lp, "max-value", fleet.lent_now(lp)).solution.objective
    milp_decision = decide(milp, "max-value", fleet.lent_now(milp))
    milp_best = -milp_decision.solution.objective
    assert lp_best >= milp_best - 1e-6 * max(1.0, abs(lp_best))
    # The MILP's lent GPUs move in whole servers.
    lay, v = milp_decision.model.layout, variables(milp_decision)
    lent = v.serve[lay.ql >= 0] / fleet.options.server_gpus
    assert np.allclose(lent, np.round(lent), atol=1e-6)


@given(fleets())
def test_max_value_is_at_least_hold_and_hold_is_not_negative(fleet: Fleet):
    # Without failures and without GPUs lent on the as-of date, leaving everything as it is is
    # feasible and worth 0 (both otherwise cost money under hold: see the xfail above, and
    # existing-loan-hold-reclaims).
    problem = fleet.problem(failure_rate_per_gpu_week=0.0)
    (hold_plan, hold), (best_plan, best) = planned(problem, "hold"), planned(problem, "max-value")
    hold_full, best_full = -hold.solution.objective, -best.solution.objective
    tol = 1e-6 * max(1.0, abs(best_full))
    assert best_full >= hold_full - tol
    assert hold_full >= -tol
    # The reported objectives leave the tie-break out, so allow for hold's.
    assert best_plan["objective"] >= hold_plan["objective"] - tie_break_usd(problem, hold) - tol
    assert hold_plan["objective"] >= -tol


@settings(max_examples=15)
@given(fleets(integral=None))
def test_highs_agrees_with_pulp_cbc(fleet: Fleet):
    problem = fleet.problem()
    lent_now = fleet.lent_now(problem)
    exact = SolveOptions(mip_rel_gap=1e-9)
    for policy, allow_loans in (("max-value", True), ("hold", False)):
        highs = -decide(problem, policy, lent_now, exact).solution.objective
        cbc = reference_objective(problem, allow_loans=allow_loans, lent_now=lent_now)
        assert highs == pytest.approx(cbc, rel=1e-6, abs=1e-6), (policy, problem.options)


def test_reference_matches_the_worked_example():
    problem = problem_from_state(worked_example().state(), START, WORKED)
    ref = solve_reference(problem)
    assert ref.value_usd == pytest.approx(383_600.0)
    # tie-break: 200 GPUs installed (s2 in week 0, s1 in week 4) and 300 GPU-weeks lent
    assert ref.objective == pytest.approx(383_600.0 - TIE_BREAK_USD * (200 + 300))
    assert reference_objective(problem, allow_loans=False) == pytest.approx(352_800.0 - TIE_BREAK_USD * 100)
    assert REFERENCE_TIE_BREAK == TIE_BREAK_USD  # the documented 0.01 USD, in both


def test_reference_refuses_a_point_that_breaks_a_row():
    """The guard against CBC's 'Optimal' for a stopped solve: a point off the model is refused."""
    problem = problem_from_state(worked_example().state(), START, WORKED)
    ref = solve_reference(problem)
    sets = index_sets(problem)
    check_point(problem, sets, ref.x, True, np.zeros(len(sets.loans)))  # the solved point passes
    broken = dataclasses.replace(ref.x, sv={**ref.x.sv, (0, 5): ref.x.sv[0, 5] + 1.0})  # a's demand, week 5
    with pytest.raises(ReferenceSolveError, match="demand_balance"):
        check_point(problem, sets, broken, True, np.zeros(len(sets.loans)))


EXACT = SolveOptions(mip_rel_gap=1e-9)


def smallest_share_met(problem: PlanningProblem, decision: Decision) -> float:
    wanted = np.bincount(problem.demand_entity, weights=problem.demand_gpus.sum(axis=1),
                         minlength=len(problem.entities))
    served = np.bincount(problem.demand_entity, weights=variables(decision).sv.sum(axis=1),
                         minlength=len(problem.entities))
    return float((served[wanted > 0] / wanted[wanted > 0]).min(initial=1.0))


def first_share(problem: PlanningProblem, lent_now, options: SolveOptions = SolveOptions()) -> float:
    """fair's stage 1: the largest smallest share HiGHS finds (z, the model's last column)."""
    return smallest_share(solve_stage(None, "max-min share", problem, options, maximize_share=True,
                                      lent_now=lent_now))


def example_problem(as_of: date, weeks: int, **changes) -> tuple[PlanningProblem, np.ndarray | None]:
    state = planning.scenario_state(EXAMPLE, as_of)
    problem = problem_from_state(state, as_of, PlanOptions(horizon_weeks=weeks, **changes))
    return problem, planning.lent_now(problem, state)


def test_fair_reaches_the_largest_smallest_share_on_the_bundled_example():
    """Shares' rows have coefficients of 1e5-1e6 GPU-weeks: unscaled, HiGHS stopped at 0.7231995."""
    problem, lent_now = example_problem(date(2024, 6, 1), 52)
    best = solve_reference(problem, lent_now=lent_now, stage=Stage(max_share=True)).objective
    assert best == pytest.approx(0.7238173, abs=1e-7)
    with pytest.raises(ReferenceInfeasible):  # no larger share is feasible
        solve_reference(problem, lent_now=lent_now, stage=Stage(fixed_share=best + 1e-7))
    assert first_share(problem, lent_now) == pytest.approx(best, abs=1e-7)
    plan, decision = planned(problem, "fair", lent_now)
    assert smallest_share_met(problem, decision) >= best - 1e-7
    assert plan["solve"]["stages"][1] == "max value, every share >= 0.7238"


def test_owner_first_integral_plans_the_bundled_example():
    """A slack equal to the MIP feasibility tolerance made HiGHS's presolve call this infeasible."""
    problem, lent_now = example_problem(date(2023, 12, 1), 57, integral=True)
    plan = make_plan(problem, "owner-first", lent_now=lent_now)
    hold = make_plan(problem, "hold", lent_now=lent_now)
    assert plan["objective"] >= hold["objective"] - 1e-6 * abs(hold["objective"])


@given(st.sampled_from([1, 100, 1000]).flatmap(lambda scale: fleets(integral=True, scale=scale)))
def test_owner_first_integral_is_feasible_wherever_hold_is(fleet: Fleet):
    problem = fleet.problem()
    lent_now = fleet.lent_now(problem)
    hold = decide(problem, "hold", lent_now)  # raises if hold itself were infeasible
    first = decide(problem, "owner-first", lent_now)
    assert -first.solution.objective >= -hold.solution.objective - 1e-4 * max(1.0, abs(hold.solution.objective))


def agrees(highs: float, reference: float, slack_usd: float) -> bool:
    """Both keep an earlier stage's value less a slack (HiGHS ``stage_slack``, the reference
    ``KEEP_TOL``): either may do better than the other by what its slack frees, ``slack_usd`` at most."""
    return abs(highs - reference) <= slack_usd + 1e-6 * max(1.0, abs(reference))


@settings(max_examples=100)
@given(fleets(integral=None))
def test_lexicographic_stages_agree_with_the_reference(fleet: Fleet):
    """fair's z and both policies' second stages against PuLP + CBC at tolerances of 1e-9."""
    problem = fleet.problem()
    lent_now = fleet.lent_now(problem)
    # the most a GPU-week freed by the slack can be worth: served, not moved, not reclaimed, no tie-break
    top_value = float(problem.demand_value.max(initial=0.0)) * H + problem.options.move_cost_usd + \
        problem.options.reclaim_cost_usd + 2 * TIE_BREAK_USD
    best = solve_reference(problem, lent_now=lent_now, stage=Stage(max_share=True)).objective
    share = first_share(problem, lent_now, EXACT)
    assert share == pytest.approx(best, abs=1e-7)
    fair = solve_stage(None, "", problem, EXACT, share_floor=share, lent_now=lent_now)
    wanted = problem.demand_gpus.sum()
    reference = solve_reference(problem, lent_now=lent_now, stage=Stage(share_floor=share)).objective
    freed = (float(stage_slack(share * wanted, problem.options.integral)) + KEEP_TOL * max(1.0, wanted)) * \
        len(problem.entities)
    assert agrees(-fair.solution.objective, reference, freed * top_value), (-fair.solution.objective, reference)

    hold = decide(problem, "hold", lent_now, EXACT)
    kept = own_served(problem, hold)
    owner_first = solve_stage(hold, "", problem, EXACT, min_served=kept, lent_now=lent_now)
    reference = solve_reference(problem, lent_now=lent_now, stage=Stage(min_served=kept)).objective
    freed = float((stage_slack(kept, problem.options.integral) + KEEP_TOL * np.maximum(1.0, kept)).sum())
    assert agrees(-owner_first.solution.objective, reference, freed * top_value), (-owner_first.solution.objective,
                                                                                   reference)


# ---------------------------------------------------------------------------------------
# 3. Errors
# ---------------------------------------------------------------------------------------


def small_problem(**options) -> PlanningProblem:
    story = demand(holds(one_owner(), "a", 10, site="s1"), "d", "a", day(0), day(28), 10, 1.0)
    return problem_from_state(story.state(), START, PlanOptions(horizon_weeks=4, **options))


def test_unknown_policy_is_an_input_error():
    with pytest.raises(InputError) as info:
        make_plan(small_problem(), "greedy")
    assert info.value.field == "policy"
    assert "greedy" in str(info.value) and all(name in str(info.value) for name in POLICIES)


def test_unknown_lending_pair_is_an_input_error():
    with pytest.raises(InputError) as info:
        problem_from_state(worked_example().state(), START,
                           dataclasses.replace(WORKED, extra_lending_pairs=(("a", "zz"),)))
    assert info.value.field == "lending pair" and "zz" in str(info.value)


@pytest.mark.parametrize("change, family", [
    (lambda p: {"slots": -np.ones_like(p.slots)}, "site_slots"),
    (lambda p: {"avail": -np.ones_like(p.avail)}, "holding"),
], ids=["negative-slots", "negative-holding"])
def test_infeasible_model_names_a_constraint_family(change, family):
    problem = small_problem()
    with pytest.raises(PlanInfeasible) as info:
        make_plan(dataclasses.replace(problem, **change(problem)), "max-value")
    assert family in str(info.value)


def test_an_overfull_site_is_emptied_in_week_0_not_infeasible():
    """installed0 above the slots is not infeasible: week 0 may take GPUs out (at the move cost)."""
    problem = small_problem()
    plan = make_plan(dataclasses.replace(problem, slots=np.full_like(problem.slots, 4.0)), "hold")  # 10 in 4 slots
    assert [(m["site"], m["week"], m["gpus"]) for m in plan["moves"]] == [("s1", 0, pytest.approx(6.0))]
    assert plan["objective"] == pytest.approx(4 * 4 * H - 6 * 2_000.0)  # -9,312


def test_a_fleet_without_gpus_plans_nothing():
    # a wants 10 GPUs for 4 weeks but holds none: expected an empty plan, objective 0, 40 GPU-weeks unserved.
    story = demand(one_owner(), "d", "a", day(0), day(28), 10, 1.0)
    plan = make_plan(problem_from_state(story.state(), START, PlanOptions(horizon_weeks=4)), "hold")
    assert plan["objective"] == 0.0
    assert plan["kpis"]["unserved_gpu_weeks"] == {"a": {"1": pytest.approx(40.0)}}


def test_nothing_to_plan_is_an_empty_plan_not_an_error():
    # a holds 10 GPUs and has neither a site nor demand: nothing to decide, objective 0, 40 idle GPU-weeks.
    story = holds(Story(START.isoformat()).entity("a").model(), "a", 10)
    plan = make_plan(problem_from_state(story.state(), START, PlanOptions(horizon_weeks=4)), "max-value")
    assert plan["objective"] == 0.0
    assert plan["kpis"]["idle_gpu_weeks"]["total"] == pytest.approx(40.0)


@pytest.mark.parametrize("options, name", [
    ({"horizon_weeks": 0}, "horizon_weeks"),
    ({"horizon_weeks": 521}, "horizon_weeks"),
    ({"week_days": 0}, "week_days"),
    ({"install_lead_weeks": -1}, "install_lead_weeks"),
])
def test_bad_options_name_the_field(options, name):
    with pytest.raises(InputError) as info:
        PlanOptions(**options)
    assert info.value.field == name


@pytest.mark.parametrize("options, name", [
    ({"server_gpus": 0}, "server_gpus"),
    ({"failure_rate_per_gpu_week": 1.5}, "failure_rate_per_gpu_week"),
    ({"failure_rate_per_gpu_week": -0.1}, "failure_rate_per_gpu_week"),
    ({"move_cost_usd": -1.0}, "move_cost_usd"),
], ids=["server-gpus-0", "failure-rate-above-1", "failure-rate-negative", "move-cost-negative"])
def test_unvalidated_options_name_the_field(options, name):
    with pytest.raises(InputError) as info:
        PlanOptions(**options)
    assert info.value.field == name


# ---------------------------------------------------------------------------------------
# The CLI, as a subprocess on a scenario file
# ---------------------------------------------------------------------------------------

SCENARIO = """\
gpufleet: 1
name: planner-worked-example
start: 2024-01-01
entities:
  - {entity: a, name: A}
  - {entity: b, name: B}
persons:
  - person: p
    name: P
    roles:
      - {person: p, entity: a, role: director}
      - {person: p, entity: b, role: director}
gpu_models:
  - {model: h100, name: H100, watts: 700, memory_gb: 80}
sites:
  - site: s1
    name: S1
    owner: a
    pue: 1.0
    capacity:
      - {step: s1-1, online_date: 2024-01-29, slots: 1000, mw: 10}
  - site: s2
    name: S2
    owner: b
    pue: 1.0
    capacity:
      - {step: s2-1, online_date: 2024-01-01, slots: 1000, mw: 10}
demand:
  - {demand: da, entity: a, start: 2024-01-29, end: 2024-04-01, gpus: 100, value_usd_per_gpu_hour: 3}
  - {demand: db, entity: b, start: 2024-01-01, end: 2024-03-01, gpus: 100, value_usd_per_gpu_hour: 2}
events:
  - {type: opening_balance, owner: a, model: h100, gpus: 100}
"""
WORKED_FLAGS = ["--as-of", "2024-01-01", "--horizon", "12", "--lead-weeks", "1", "--move-cost", "200"]


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plan") / "worked.yaml"
    path.write_text(SCENARIO)
    return path


def cli(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("GPUFLEET_DB", "GPUFLEET_DEBUG")}
    proc = subprocess.run([str(GPUFLEET), "--db", str(cwd / "unused.db"), *map(str, args)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=120)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def test_cli_plan_json_has_the_documented_keys(scenario_file: Path):
    proc = cli("plan", "--scenario", scenario_file, *WORKED_FLAGS, "--policy", "max-value", "--format", "json",
               cwd=scenario_file.parent)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert {"status", "policy", "objective", "kpis", "loans", "reclaims", "installs", "moves", "shadow_prices",
            "solve"} <= plan.keys()
    assert {"idle_gpu_weeks", "served_gpu_weeks", "unserved_gpu_weeks", "value_usd"} <= plan["kpis"].keys()
    assert {"site_slots", "owner_gpus"} <= plan["shadow_prices"].keys()
    assert {"build_s", "solve_s", "rows", "columns", "nonzeros"} <= plan["solve"].keys()
    assert (plan["status"], plan["policy"]) == ("optimal", "max-value")
    assert plan["objective"] == pytest.approx(383_600.0)
    assert [(x["lender"], x["borrower"], x["site"]) for x in plan["loans"]] == [("a", "b", "s2")]
    assert not (scenario_file.parent / "unused.db").exists()


def test_cli_plan_compare_lists_four_policies(scenario_file: Path):
    proc = cli("plan", "--scenario", scenario_file, *WORKED_FLAGS, "--compare", "--format", "json",
               cwd=scenario_file.parent)
    assert proc.returncode == 0, proc.stderr
    plans = json.loads(proc.stdout)
    assert sorted(p["policy"] for p in plans) == sorted(ALL_POLICIES)
    by_policy = {p["policy"]: p["objective"] for p in plans}
    assert by_policy["hold"] == pytest.approx(352_800.0)
    assert by_policy["max-value"] == pytest.approx(383_600.0)


def test_cli_unknown_policy_fails_cleanly(scenario_file: Path):
    proc = cli("plan", "--scenario", scenario_file, *WORKED_FLAGS, "--policy", "greedy", cwd=scenario_file.parent)
    assert proc.returncode != 0
    assert "policy" in proc.stderr and "greedy" in proc.stderr


def test_cli_zero_horizon_names_the_field(scenario_file: Path):
    proc = cli("plan", "--scenario", scenario_file, "--horizon", "0", cwd=scenario_file.parent)
    assert proc.returncode != 0
    assert "horizon" in proc.stderr
