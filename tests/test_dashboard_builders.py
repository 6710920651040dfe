"""The dashboard's data builders (approvals inbox, claims, plans, shared cluster): pure functions from
service results to rows and plotly figures, checked against the example world without a browser."""

from __future__ import annotations

from datetime import date

import pytest

from api_world import ON, build_world
from gpufleet.domain.access import Principal, Scope
from gpufleet.domain.governance import GovernancePolicy
from gpufleet.services import governance
from gpufleet.services.claims import claim_forecasts
from gpufleet.services.fleet import FleetService
from gpufleet.web.pages import approvals, claims, cluster, plans

POLICY = GovernancePolicy()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    world = build_world(f"sqlite:///{tmp_path_factory.mktemp('builders') / 'ledger.db'}")
    service = FleetService.open(world.db)
    yield service
    service.engine.dispose()


def inbox(fleet: FleetService, who: str, scope: Scope = Scope.WRITE) -> dict[str, approvals.InboxRow]:
    rows = governance.approvals(fleet, POLICY, ON, with_terms=True)
    found = approvals.inbox_rows(rows, fleet.state(), POLICY, Principal(who, scope), ON)
    return {r.subject: r for r in found}


def test_an_independent_director_is_asked_to_vote_first(fleet):
    rows = inbox(fleet, "tesla-indep")
    assert list(rows)[0] == "proposal:p1" and rows["proposal:p1"].standing == "vote"
    p1 = rows["proposal:p1"]
    assert p1.reason == "" and p1.version.startswith('"') and "tesla and xai share a related person" in p1.related_basis
    assert p1.price.verdict == "within the band" and p1.price.low < p1.price.fee < p1.price.high
    assert p1.terms.startswith("100 h100 at ") and "USD 2.35/GPU-hour" in p1.terms
    assert p1.cost_usd == pytest.approx(p1.value_usd - 100 * 24 * 83 * p1.price.fee)  # at the market: no cost


def test_an_interested_person_sees_why_they_cannot_vote(fleet):
    p1 = inbox(fleet, "xai-indep")["proposal:p1"]
    assert p1.standing == "interested" and "xai-indep is interested in proposal:p1" in p1.reason


@pytest.mark.parametrize(("who", "scope", "standing", "words"), [
    ("tesla-viewer", Scope.WRITE, "not_approver", "is not an independent director"),
    ("tesla-admin", Scope.WRITE, "cannot_vote", "admins manage access and never vote"),
    ("tesla-indep", Scope.READ, "cannot_vote", "read-only"),
], ids=["viewer", "admin", "read-only"])
def test_who_may_not_vote_is_told_why(fleet, who, scope, standing, words):
    p1 = inbox(fleet, who, scope)["proposal:p1"]
    assert p1.standing == standing and words in p1.reason


def test_a_swap_costs_its_giver_the_delay_and_a_reader_sees_only_its_entities(fleet):
    swap = inbox(fleet, "tesla-indep")["swap:dec-2023-h100"]
    assert swap.price.verdict == "no fee (a slot swap)" and swap.cost_usd > 0 and "GPU-weeks" in swap.cost_note
    assert swap.standing == "vote" and swap.status == "executed_unapproved"
    assert set(inbox(fleet, "x-viewer")) == {"swap:dec-2023-h100"}  # tesla -> xai is not x's
    assert set(inbox(fleet, "tesla-auditor")) == {"swap:dec-2023-h100", "proposal:p1"}


@pytest.mark.parametrize(("fee", "verdict"), [(None, "no fee (a slot swap)"), (2.35, "within the band"),
                                              (1.0, "below the band"), (3.5, "above the band")])
def test_a_fee_is_judged_against_the_band_of_the_day(fee, verdict):
    price = approvals.price_against_band(fee, POLICY, date(2025, 6, 1))
    assert price.verdict == verdict and price.market == 2.35
    assert (price.low, price.high) == pytest.approx((2.35 * 0.75, 2.35 * 1.25))


def test_claims_read_as_of_and_as_known_at(fleet):
    on = date(2024, 12, 31)
    rows = {r["claim"]: r for r in claims.claim_rows(fleet, on)}
    forecast = {r["claim"]: r for r in claim_forecasts(fleet, fleet.state(), on)}
    assert set(rows) == set(forecast) == {"tesla-85k-h100-2024", "tesla-10b-ai-spend-2024"}
    for claim_id, row in rows.items():
        for key in ("actual", "supported_when_stated", "status", "achievable_when_stated"):
            assert row[key] == forecast[claim_id][key], (claim_id, key)
    met = rows["tesla-85k-h100-2024"]
    assert met["gap"] == 0 and "was not achievable" in claims.verdict(met)
    before = {r["claim"] for r in claims.claim_rows(fleet, on, "2024-04-24T00:00:00.000000Z")}
    assert before == {"tesla-85k-h100-2024"}  # the spend claim, stated on 2024-04-30, was not known yet
    assert claims.claim_rows(fleet, date(2024, 4, 1)) == []  # neither had been made
    for day in (date(2024, 4, 1), date(2024, 5, 1), on):  # the head fold the page holds reads the same
        with fleet.reading_head() as head:
            assert claims.claim_rows(fleet, day, None, head) == claims.claim_rows(fleet, day)


def test_the_claims_figure_has_a_panel_per_metric_with_data(fleet):
    rows = claims.claim_rows(fleet, date(2024, 12, 31))
    fig = claims.claims_figure(rows)
    assert len(fig.data) == 6 and all(len(t.y) == 1 and t.y[0] > 0 for t in fig.data)
    assert claims.claims_figure([]) is None
    assert claims.visible(rows, fleet.state(), "x-viewer") == [] and len(claims.visible(rows, fleet.state(),
                                                                                        "tesla-viewer")) == 2


def a_plan(policy: str, idle: dict, value: dict, unserved: dict, loans: list[dict]) -> dict:
    return {"policy": policy, "status": "optimal", "kpis": {
        "idle_gpu_weeks": idle, "value_usd": value, "unserved_gpu_weeks": unserved}, "loans": loans, "reclaims": [],
        "solve": {"solve_s": 0.1}}


LOAN = {"lender": "a", "borrower": "b", "model": "h100", "site": "s", "gpus": 10.0, "start": "2024-01-01",
        "end": "2024-02-01", "gpu_weeks": 40.0, "fee_usd_per_gpu_hour": 2.0, "reason": "r"}
COMPARE = [a_plan("hold", {"a": 10.0, "b": 0.0, "total": 10.0}, {"a": 5.0, "b": 1.0},
                  {"a": {"1": 0.0}, "b": {"1": 40.0, "2": 2.0}}, []),
           a_plan("max-value", {"a": 0.0, "b": 0.0, "total": 0.0}, {"a": 7.0, "b": 3.0},
                  {"a": {"1": 0.0}, "b": {"1": 2.0}}, [LOAN])]


def test_a_comparison_side_by_side():
    rows = {r["policy"]: r for r in plans.summary_rows(COMPARE)}
    assert (rows["hold"]["idle_gpu_weeks"], rows["hold"]["value_usd"], rows["hold"]["unserved_gpu_weeks"]) == \
        (10.0, 6.0, 42.0)
    assert (rows["max-value"]["loans"], rows["max-value"]["loan_gpu_weeks"], rows["max-value"]["unserved_gpu_weeks"]) \
        == (1, 40.0, 2.0)
    per_entity = {r["entity"]: r for r in plans.entity_rows(COMPARE)}
    assert per_entity["b"]["hold"] == {"idle_gpu_weeks": 0.0, "value_usd": 1.0, "unserved_gpu_weeks": 42.0}
    assert plans.loan_rows(COMPARE) == [{"policy": "max-value"} | LOAN]


def test_a_planner_of_one_entity_sees_its_rows_only_and_no_total():
    mine = [p | {"kpis": {k: {e: v for e, v in t.items() if e == "b"} for k, t in p["kpis"].items()}} for p in COMPARE]
    assert plans.entities_of(mine) == ["b"]
    assert [r["idle_gpu_weeks"] for r in plans.summary_rows(mine)] == [0.0, 0.0]


def test_the_plan_charts_have_a_bar_per_policy_and_entity():
    found = dict(plans.figures(COMPARE))
    assert list(found) == ["plan-idle", "plan-value", "plan-delay"]
    for fig in found.values():
        assert [t.name for t in fig.data] == ["hold", "max-value"] and all(list(t.x) == ["a", "b"] for t in fig.data)
    assert list(found["plan-delay"].data[0].y) == [0.0, 42.0]
    assert plans.figures([]) == []


SUMMARY = {"policies": [
    {"policy": "static", "jobs": 2, "finished": 2, "utilization": 0.5, "queue_mean_s": 3600.0, "jct_p99_s": 7200.0,
     "guarantee_violation_s": 1800.0, "preemptions": 0, "lost_gpu_hours": 0.0, "jain_over_time": 0.9,
     "finish_time_fairness_max": 1.1, "tenants": [
         {"tenant": "vc1", "utilization": 0.4, "queue_mean_s": 7200.0, "guarantee_violation_s": 0.0,
          "lost_gpu_hours": 0.0},
         {"tenant": "vc2", "utilization": 0.6, "queue_mean_s": 0.0, "guarantee_violation_s": 1800.0,
          "lost_gpu_hours": 0.0}]},
    {"policy": "borrow", "jobs": 2, "finished": 2, "utilization": 0.7, "queue_mean_s": 360.0, "jct_p99_s": 3600.0,
     "guarantee_violation_s": 30.0, "preemptions": 1, "lost_gpu_hours": 3.5, "jain_over_time": 0.95,
     "finish_time_fairness_max": 1.0, "tenants": [
         {"tenant": "vc2", "utilization": 0.8, "queue_mean_s": 720.0, "guarantee_violation_s": 30.0,
          "lost_gpu_hours": 3.5}]}]}


def test_a_simulation_policy_against_policy():
    rows = {r["policy"]: r for r in cluster.policy_rows(SUMMARY)}
    assert rows["static"]["utilization_pct"] == 50.0 and rows["static"]["queue_mean_h"] == 1.0
    assert rows["borrow"]["guarantee_violation_h"] == pytest.approx(30 / 3600)
    assert rows["borrow"]["lost_gpu_hours"] == 3.5
    found = dict(cluster.figures(SUMMARY))
    assert list(found) == ["sim-utilization", "sim-queue-mean-s", "sim-guarantee-violation-s", "sim-lost-gpu-hours"]
    util = found["sim-utilization"]
    assert [t.name for t in util.data] == ["static", "borrow"]
    assert list(util.data[0].y) == [40.0, 60.0] and list(util.data[1].y) == [0.0, 80.0]  # vc1 did not run on borrow
    assert list(found["sim-queue-mean-s"].data[0].y) == [2.0, 0.0]  # hours
    assert cluster.figures({"policies": []}) == []


def test_the_gantt_keeps_the_transactions_that_started_last_with_all_their_bars():
    from datetime import timedelta

    from gpufleet.web.views.loans import Bar, latest

    day = date(2024, 1, 1)
    found = [Bar("loan", f"loan:l{i}", f"l{i}", day + timedelta(days=i), day + timedelta(days=i + 9), "", "", "")
             for i in range(200)]
    found += [Bar("reclaim notice", "loan:l199", "l199", day + timedelta(days=205), day + timedelta(days=206),
                  "", "", ""),
              Bar("reclaim notice", "loan:l3", "l3", day + timedelta(days=300), day + timedelta(days=301), "", "", "")]
    kept, total = latest(found, limit=150)
    subjects = {b.subject for b in kept}
    assert total == 200 and subjects == {f"loan:l{i}" for i in range(50, 200)}
    assert sum(b.kind == "reclaim notice" for b in kept) == 1  # l199's notice kept, l3's (an old loan) not


@pytest.mark.parametrize("on, known_at, slipped", [
    (date(2024, 12, 31), None, True),  # Cortex slipped from 2024-06-30
    (date(2024, 12, 31), "2024-07-01", False),  # the slip was recorded on 2024-07-23
    (date(2024, 5, 1), None, False),  # not yet slipped on that date
], ids=["slip-known", "slip-not-yet-recorded", "before-the-slip"])
def test_the_sites_page_marks_a_slip_as_known_then_and_reads_the_same_from_the_head(fleet, on, known_at, slipped):
    from gpufleet.web.views import sites

    fresh = sites.build(fleet, ["tesla"], on, known_at)
    with fleet.reading_head() as head:
        held = sites.build(fleet, ["tesla"], on, known_at, head)
    assert held == fresh and {r.site for r in fresh.rows} == {"tesla-dc", "giga-texas-cortex"}
    cortex = [s for s in fresh.slips if s.site == "giga-texas-cortex"]
    assert bool(cortex) == slipped
    if slipped:
        assert cortex[0].planned == date(2024, 6, 30) and cortex[0].days > 0 and cortex[0].idle_gpu_days > 0


def test_a_kept_sites_reading_does_not_move_with_the_head_fold_it_was_read_from(sqlite_engine):
    from builders import two_party_fleet
    from gpufleet.domain import events as ev
    from gpufleet.ledger.store import Draft, Ledger
    from gpufleet.web.views import sites

    story = two_party_fleet("2024-01-01").site("s2", "a", slots=100, mw=1.0, online="2024-10-01")
    with sqlite_engine.begin() as conn:
        Ledger(conn).append(story.drafts())
    service, on = FleetService(sqlite_engine), date(2024, 6, 1)
    later = [ev.SiteCapacitySlipped(site="s2", step="s2-1", online_date=date(2025, 1, 1)),
             ev.EntityRegistered(entity="c", name="C")]
    for day, payload in zip([date(2024, 8, 1), date(2024, 9, 1)], later):  # two writes: each fold moves on
        with service.reading_head() as head:
            assert sites.build(service, ["a"], on, None, head).slips == []  # as of June nothing had slipped
        service.record(payload, on=day, actor="t", after_the_fact=True)
    with service.reading_head() as head:
        assert sites.build(service, ["a"], on, None, head) == sites.build(service, ["a"], on, None)
        assert sites.build(service, ["a"], on, None, head).slips == []
