"""Chargeback per entity per month: hand-computed cases, the reconciliation, the bundled example."""

from __future__ import annotations

from collections import Counter
import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builders import Story
from gpufleet.domain import events as ev
from gpufleet.domain import views
from gpufleet.domain.costs import CostPolicy, daily_summaries, month_bounds, monthly_chargeback
from gpufleet.domain.state import FleetState
from gpufleet.errors import GpufleetError, InputError, UnknownReference
from gpufleet.ledger import db
from gpufleet.ledger.store import Ledger
from gpufleet.services.costs import chargeback
from gpufleet.services.demo import example_path
from gpufleet.services.fleet import FleetService

PRICE = 30_000.0
LIFE_HOURS = 6 * 365 * 24  # the default life, in hours
HOURS = ("self_gpu_hours", "lent_gpu_hours", "idle_gpu_hours", "failed_gpu_hours")


def april(gpus: int = 1, pue: float = 1.0) -> Story:
    """Entities a and b; ``gpus`` H100 (700 W) delivered to a on 2024-04-01 and installed at s1."""
    story = Story("2024-04-01").entity("a").entity("b").model().site("s1", "a", 100, 1.0, pue=pue)
    return story.po("p1", "a", {"l1": (gpus, "2024-04-01")}, price=PRICE).deliver("l1").install("a", "s1", gpus)


def rows_of(story: Story, month: str = "2024-04", policy: CostPolicy = CostPolicy()) -> dict:
    """The month's chargeback of a story, folded purely (no ledger)."""
    first, last = month_bounds(month)
    events = [(day, payload) for payload, day in story.items]
    return {r.entity: r for r in monthly_chargeback(daily_summaries(FleetState(), events, first, last), policy)}


# -- hand-computed cases ---------------------------------------------------------------------


def test_one_gpu_for_a_30_day_month():
    a = rows_of(april())["a"]
    assert (a.days, a.owned_gpu_hours, a.self_gpu_hours, a.idle_gpu_hours) == (30, 720, 720, 0)
    assert a.depreciation_usd == pytest.approx(PRICE / LIFE_HOURS * 720)
    assert a.power_kwh == pytest.approx(720 * 700 / 1000)  # PUE 1
    assert a.power_usd == pytest.approx(504 * 0.08)
    assert a.net_cost_usd == pytest.approx(a.depreciation_usd + a.power_usd)


def test_a_loan_for_half_the_month_moves_hours_fees_and_power():
    story = april().on("2024-04-16").lend("n1", "a", "b", "s1", 1, "2024-06-01", fee=2.5)
    rows = rows_of(story)
    a, b = rows["a"], rows["b"]
    assert (a.owned_gpu_hours, a.self_gpu_hours, a.lent_gpu_hours) == (720, 360, 360)  # lent from the 16th on
    assert (b.owned_gpu_hours, b.borrowed_gpu_hours) == (0, 360)
    assert a.lending_income_usd == b.borrowing_cost_usd == pytest.approx(360 * 2.5)
    assert a.power_kwh == b.power_kwh == pytest.approx(360 * 0.7)  # the borrower pays for what it runs
    assert b.depreciation_usd == 0
    assert b.net_cost_usd == pytest.approx(360 * 2.5 + 360 * 0.7 * 0.08)
    assert a.net_cost_usd == pytest.approx(PRICE / LIFE_HOURS * 720 + 360 * 0.7 * 0.08 - 360 * 2.5)


def test_a_loan_returned_mid_month_counts_up_to_the_day_before_its_return():
    story = april().lend("n1", "a", "b", "s1", 1, "2024-06-01").on("2024-04-11").close("n1")
    a = rows_of(story)["a"]
    assert a.lent_gpu_hours == 10 * 24
    assert views.loan_rows(story.state(), date(2024, 4, 30))[0].fee_usd_to_date == a.lending_income_usd


def test_a_failure_then_a_repair_is_failed_then_idle_and_still_depreciates():
    story = april().on("2024-04-11").fail("a", 1, site="s1").on("2024-04-21").add(
        ev.GpusRepaired(owner="a", model="h100", gpus=1))
    a = rows_of(story)["a"]
    assert (a.self_gpu_hours, a.failed_gpu_hours, a.idle_gpu_hours, a.owned_gpu_hours) == (240, 240, 240, 720)
    assert a.depreciation_usd == pytest.approx(PRICE / LIFE_HOURS * 720)
    assert a.idle_cost_usd == pytest.approx(PRICE / LIFE_HOURS * 240)  # failed hours are not idle
    assert a.power_kwh == pytest.approx(240 * 0.7)


def test_power_is_gpu_hours_times_watts_times_pue_at_the_policy_price():
    a = rows_of(april(gpus=10, pue=1.5), policy=CostPolicy(usd_per_kwh=0.10))["a"]
    assert a.power_kwh == pytest.approx(10 * 720 * 700 * 1.5 / 1000)
    assert a.power_usd == pytest.approx(756.0)


def test_a_gpu_depreciates_to_its_price_over_its_life_and_then_costs_nothing():
    ten_days = CostPolicy(life_years=10 / 365)
    assert rows_of(april(), policy=ten_days)["a"].depreciation_usd == pytest.approx(PRICE)
    assert rows_of(april(), "2024-05", policy=ten_days)["a"].depreciation_usd == 0


def test_idle_gpus_in_the_warehouse_cost_their_depreciation_and_no_power():
    story = Story("2024-04-01").entity("a").model().po("p1", "a", {"l1": (4, "2024-04-01")}, price=PRICE)
    a = rows_of(story.on("2024-04-16").deliver("l1"))["a"]
    assert (a.owned_gpu_hours, a.idle_gpu_hours) == (4 * 15 * 24, 4 * 15 * 24)  # owned from delivery on
    assert a.idle_cost_usd == pytest.approx(a.depreciation_usd) and a.power_kwh == 0


def test_opening_balances_are_priced_at_the_owners_average_lot_price():
    story = Story("2024-04-01").entity("a").model()
    story.add(ev.OpeningBalance(owner="a", model="h100", gpus=10, unit_price_usd=1.0))
    story.po("p1", "a", {"l1": (2, "2024-09-01")}, price=36_500).po("p2", "a", {"l2": (2, "2024-09-01")}, price=0)
    assert rows_of(story)["a"].depreciation_usd == pytest.approx(10 * 18_250 / LIFE_HOURS * 720)


def test_retired_gpus_leave_the_books_oldest_first():
    story = april(gpus=2).add(ev.OpeningBalance(owner="a", model="h100", gpus=1))  # priced at 30k too
    story.on("2024-04-11").retire("a", 1, site="s1")
    a = rows_of(story)["a"]
    assert a.owned_gpu_hours == 3 * 240 + 2 * 480
    assert a.depreciation_usd == pytest.approx(PRICE / LIFE_HOURS * a.owned_gpu_hours)


@pytest.mark.parametrize("month", ["2024-13", "2024-00", "2024-1", "24-01", "2024/01", "2024-01-01", "", "abcd-ef",
                                   "２０２４-01"])
def test_a_bad_month_is_an_input_error_naming_month(month, example):
    with pytest.raises(InputError) as err:
        chargeback(example, month)
    assert err.value.field == "month"


@pytest.mark.parametrize(("kwargs", "field"), [({"life_years": 0}, "life_years"),
                                               ({"usd_per_kwh": -0.01}, "usd_per_kwh")])
def test_a_bad_policy_is_an_input_error(kwargs, field):
    with pytest.raises(InputError) as err:
        CostPolicy(**kwargs)
    assert err.value.field == field


def test_an_empty_ledger_has_no_rows(sqlite_engine):
    assert chargeback(FleetService(sqlite_engine)) == chargeback(FleetService(sqlite_engine), "2024-01") == []


# -- the reconciliation, on random stories through the ledger --------------------------------

OWNERS = ["a", "b", "c"]
SITES = ["s1", "s2"]
owner, site, gpus = st.sampled_from(OWNERS), st.sampled_from(SITES), st.integers(1, 12)
OPS = st.one_of(
    st.tuples(st.just("deliver"), st.integers(0, 3)),
    st.tuples(st.just("install"), owner, site, gpus),
    st.tuples(st.just("uninstall"), owner, site, gpus),
    st.tuples(st.just("fail"), owner, st.one_of(st.none(), site), gpus),
    st.tuples(st.just("repair"), owner, gpus),
    st.tuples(st.just("retire"), owner, st.one_of(st.none(), site), st.booleans(), gpus),
    st.tuples(st.just("lend"), owner, owner, site, gpus, st.sampled_from([1.0, 2.5])),
    st.tuples(st.just("reclaim"), st.integers(0, 3), gpus),
    st.tuples(st.just("close"), st.integers(0, 3)),
)
STEPS = st.lists(st.tuples(OPS, st.integers(0, 4)), min_size=1, max_size=20)
LOTS = ["la", "lb", "lc", "ld"]


def random_base() -> Story:
    story = Story("2024-01-25").entity("a").entity("b").entity("c").model()
    story.site("s1", "a", slots=200, mw=1.0, pue=1.2).site("s2", "b", slots=100, mw=1.0)
    for holder, where, n in [("a", "s1", 30), ("b", None, 20), ("c", None, 10)]:
        story.add(ev.OpeningBalance(owner=holder, model="h100", gpus=n, site=where))
    story.po("pa", "a", {"la": (8, "2024-02-01"), "lb": (8, "2024-02-10")}, price=40_000)
    story.po("pc", "c", {"lc": (6, "2024-02-05"), "ld": (6, "2024-03-01")}, price=25_000)
    return story.install("b", "s2", 10).lend("n0", "a", "c", "s1", 5, "2024-12-31", fee=2.0)


def random_payload(op: tuple, loans: list[str], day: date) -> ev.Payload:
    kind, *a = op
    match kind:
        case "deliver":
            return ev.LotDelivered(lot=LOTS[a[0]])
        case "install":
            return ev.GpusInstalled(owner=a[0], model="h100", site=a[1], gpus=a[2])
        case "uninstall":
            return ev.GpusUninstalled(owner=a[0], model="h100", site=a[1], gpus=a[2])
        case "fail":
            return ev.GpusFailed(owner=a[0], model="h100", site=a[1], gpus=a[2])
        case "repair":
            return ev.GpusRepaired(owner=a[0], model="h100", gpus=a[1])
        case "retire":
            return ev.GpusRetired(owner=a[0], model="h100", site=a[1], from_failed=a[2] and a[1] is None,
                                  gpus=a[3])
        case "lend":
            borrower = a[1] if a[1] != a[0] else OWNERS[(OWNERS.index(a[0]) + 1) % 3]
            return ev.LoanOpened(loan=f"n{len(loans)}", lender=a[0], borrower=borrower, model="h100", site=a[2],
                                 gpus=a[3], end_date=date(2024, 12, 31), fee_usd_per_gpu_hour=a[4],
                                 reclaim_notice_days=0)
        case "reclaim":
            return ev.LoanReclaimed(loan=f"n{a[0]}", gpus=a[1], notice_given_on=day)
        case "close":
            return ev.LoanClosed(loan=f"n{a[0]}")
    raise AssertionError(kind)


def record_random_story(service: FleetService, steps) -> date:
    """Append the base and each step that a pure state accepts, in one batch; return the last effective date."""
    items, state = [(p, d, None) for p, d in random_base().items], FleetState()
    for payload, day, _ in items:
        state.apply(payload, day)
    day = last = date(2024, 1, 25)
    loans = ["n0"]
    for op, move in steps:
        day += timedelta(move)
        payload = random_payload(op, loans, day)
        try:
            state.apply(payload, day)
        except GpufleetError:
            continue  # a refused event leaves the state as it was
        items.append((payload, day, None))
        last = day
        if isinstance(payload, ev.LoanOpened):
            loans.append(payload.loan)
    service.record_many(items, actor="prop")
    return last


def brute_force_hours(service: FleetService, first: date, last: date) -> Counter:
    """GPU-hours per (month, entity, kind) from one full ledger fold per day, via ``views.holdings``."""
    hours: Counter = Counter()
    day = first
    with service.engine.connect() as conn:
        ledger = Ledger(conn)
        while day <= last:
            _count_day(hours, ledger.state(day), day)
            day += timedelta(days=1)
    return hours


def _count_day(hours: Counter, state: FleetState, day: date) -> None:
    month = day.strftime("%Y-%m")
    for h in views.holdings(state, day):
        for kind, n in [("self", h.serving_self), ("lent", h.lent), ("idle", h.in_warehouse),
                        ("failed", h.failed), ("borrowed", h.borrowed)]:
            hours[(month, h.entity, kind)] += 24 * n


@pytest.fixture(scope="module")
def empty_ledger(tmp_path_factory) -> Path:
    """A migrated, empty SQLite ledger to copy: migrating one per example would take most of the time."""
    path = tmp_path_factory.mktemp("costs") / "empty.db"
    engine = db.make_engine(str(path))
    db.upgrade(engine)
    engine.dispose()
    return path


@settings(max_examples=30)  # each example folds the ledger once per day for its oracle
@given(steps=STEPS)
def test_owned_hours_reconcile_and_money_balances_on_random_stories(steps, empty_ledger, tmp_path_factory):
    path = tmp_path_factory.mktemp("costs") / "c.db"
    shutil.copy(empty_ledger, path)
    engine = db.make_engine(str(path), must_exist=True)
    service = FleetService(engine)
    last = record_random_story(service, steps)
    rows = chargeback(service)
    by_key = {(r["month"], r["entity"]): r for r in rows}
    for r in rows:
        assert r["owned_gpu_hours"] == sum(r[k] for k in HOURS), r
        assert all(v >= 0 for k, v in r.items() if k.endswith(("_hours", "_kwh")) or k in (
            "depreciation_usd", "lending_income_usd", "borrowing_cost_usd", "power_usd", "idle_cost_usd")), r
        assert r["idle_cost_usd"] <= r["depreciation_usd"] + 0.01
    income = sum(r["lending_income_usd"] for r in rows)
    assert income == pytest.approx(sum(r["borrowing_cost_usd"] for r in rows), abs=0.05)
    state = service.state()
    end = month_bounds(last.strftime("%Y-%m"))[1]
    accrued = sum(x.gpu_hours_through(end + timedelta(days=1)) * x.fee_usd_per_gpu_hour for x in state.loans.values())
    assert income == pytest.approx(accrued, abs=0.05)  # the same hours as Loan.gpu_hours_through
    expected = brute_force_hours(service, date(2024, 1, 25), end)
    got = Counter({(m, e, k.removesuffix("_gpu_hours")): r[k] for (m, e), r in by_key.items()
                   for k in (*HOURS, "borrowed_gpu_hours")})
    assert +got == +expected
    engine.dispose()


# -- the bundled example ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    service = FleetService.open(str(tmp_path_factory.mktemp("costs") / "c.db"), create=True)
    service.load(example_path())
    return service


def test_the_example_charges_tesla_and_x_in_january_2024(example):
    rows = {r["entity"]: r for r in chargeback(example, "2024-01")}
    assert set(rows) == {"tesla", "x"}  # xAI holds nothing before its Colossus lots
    tesla, x = rows["tesla"], rows["x"]
    assert tesla["self_gpu_hours"] == 29_000 * 31 * 24  # the opening balance, installed at tesla-dc
    assert tesla["idle_gpu_hours"] == 6_000 * 17 * 24  # X's January slot, delivered 01-15, installed 02-01
    assert x["idle_gpu_hours"] == 12_000 * 14 * 24 and x["self_gpu_hours"] == 12_000 * 17 * 24  # installed 01-15
    assert x["power_kwh"] == pytest.approx(x["self_gpu_hours"] * 0.7 * 1.3)
    assert x["depreciation_usd"] == pytest.approx(12_000 * 41_700 / LIFE_HOURS * 31 * 24, abs=0.01)


def test_x_idle_hours_in_december_2023_are_the_redirected_gpus_in_its_warehouse(example):
    x = {r["entity"]: r for r in chargeback(example, "2023-12", entity="x")}["x"]
    first, last = month_bounds("2023-12")
    in_warehouse = [_status_figure(example, first + timedelta(d), "x", "in_warehouse")
                    for d in range((last - first).days + 1)]
    assert in_warehouse[-1] == 12_000 and in_warehouse.count(12_000) == 14  # delivered 2023-12-18
    assert x["idle_gpu_hours"] == 24 * sum(in_warehouse) == 4_032_000
    assert x["owned_gpu_hours"] == x["idle_gpu_hours"] and x["idle_cost_usd"] == x["depreciation_usd"]


def test_one_month_read_alone_matches_the_same_month_in_the_full_run(example):
    full = chargeback(example)
    assert [r["month"] for r in full][0] == "2023-12" and [r["month"] for r in full][-1] == "2024-10"
    for month in ("2024-02", "2024-09"):
        assert chargeback(example, month) == [r for r in full if r["month"] == month]


def test_an_unknown_entity_is_named(example):
    with pytest.raises(UnknownReference) as err:
        chargeback(example, "2024-01", entity="nobody")
    assert err.value.field == "entity"


def _status_figure(service: FleetService, day: date, entity: str, figure: str) -> int:
    """A figure of ``gpufleet status --as-of DAY --entity ENTITY`` (summed over models)."""
    return sum(h[figure] for h in service.status(day, entity=entity)["holdings"])
