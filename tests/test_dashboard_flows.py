"""The dashboard's flows in Debian's Chromium against a live server on a temporary database: a planner
compares policies and applies a plan; its proposal reaches the lender's independent directors, two approve,
an operator opens the loan, and an interested director sees why they cannot vote; a simulation shows its
progress and then its charts; the claims at a date and as known at a time. Every page passes the checks of
tests/dashboard_browser.py (console, requests, charts with data, axe-core) and is saved as a screenshot."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from api_world import ON, World
from dashboard_browser import start_dashboard
from gpufleet.domain.governance import GovernancePolicy
from gpufleet.services import identity
from gpufleet.services.fleet import FleetService, make_payload
from test_api_jobs import philly_trace

JOB_S = 180_000  # ms: a guard against a hung job, not a measurement
SIM_JOBS = 4_000  # a few seconds of replays: long enough to be seen running


def extend_world(world: World, _folder) -> None:
    """A second independent director of Tesla; xAI's demand beyond its own GPUs; and an earlier small loan
    from Tesla to xAI at a Tesla site (history), which gives xAI the access there a plan lends through."""
    fleet = FleetService.open(world.db)
    fee = GovernancePolicy().market_price(ON).usd_per_gpu_hour
    fleet.record(make_payload("loan_opened", {
        "loan": "seed", "lender": "tesla", "borrower": "xai", "model": "h100", "site": "giga-texas-cortex",
        "gpus": 8, "end_date": (ON + timedelta(days=120)).isoformat(), "fee_usd_per_gpu_hour": fee}),
        ON - timedelta(days=30), "test-setup", after_the_fact=True)
    items = [("person_registered", {"person": "tesla-indep2", "name": "Tesla's second independent director"}),
             ("role_assigned", {"person": "tesla-indep2", "entity": "tesla", "role": "independent_director"}),
             ("demand_recorded", {"demand": "xai-more", "entity": "xai", "start": (ON + timedelta(days=14)).isoformat(),
                                  "end": (ON + timedelta(days=56)).isoformat(), "gpus": 100_400,
                                  "value_usd_per_gpu_hour": 4.0})]
    fleet.record_many([(make_payload(t, d), ON, None) for t, d in items], actor="test-setup")
    identity.add_user(fleet, "tesla-indep2")
    world.tokens["tesla-indep2"] = identity.create_token(fleet, "tesla-indep2", scope="write", name="test").token
    fleet.engine.dispose()


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    traces = tmp_path_factory.mktemp("traces")
    philly_trace(traces / "small.csv", SIM_JOBS)
    yield from start_dashboard(tmp_path_factory, setup=extend_world, env={"GPUFLEET_TRACES_DIR": str(traces)})


def submit(tab, button: str | re.Pattern) -> None:
    """Click a form's button and wait for the page it leads to."""
    with tab.page.expect_navigation(wait_until="load"):
        tab.page.get_by_role("button", name=button).click()


def proposal(tab) -> object:
    """The section of the plan's loan proposal in the inbox open in ``tab``."""
    found = tab.page.locator('section.approval[data-subject^="proposal:plan-"]')
    assert found.count() == 1, tab.page.inner_text("main")[:2000]
    return found


def vote(dashboard, who: str, shot: str) -> str:
    """``who`` approves the plan's proposal from their inbox; the inbox's status line afterwards."""
    tab = dashboard.sign_in(who)
    tab.visit("/ui/approvals")
    section = proposal(tab)
    assert section.get_attribute("data-standing") == "vote"
    assert "within the band" in section.inner_text() and "share a related person" in section.inner_text()
    tab.check(shot)
    section.get_by_label("Reason").fill(f"{who}: at the market price, for unmet demand")
    with tab.page.expect_navigation(wait_until="load"):
        section.get_by_role("button", name="Approve").click()
    status = tab.page.get_by_role("status").first.inner_text()
    assert proposal(tab).get_attribute("data-standing") == "voted"
    return status


def test_a_plan_compared_and_applied_is_approved_by_two_directors_and_opens(dashboard):
    planner = dashboard.sign_in("tesla-planner")
    planner.visit("/ui/plans")
    planner.check("plans-form")
    planner.page.get_by_label("Horizon (weeks)").fill("8")
    assert planner.page.get_by_label("Compare every policy").is_checked()
    submit(planner, "Run")
    assert "job=" in planner.page.url  # the job is in the URL: the view can be linked
    planner.page.wait_for_selector('#job[data-state="succeeded"]', timeout=JOB_S)
    planner.check("plans-compare", charts=3)
    rows = planner.page.locator("#job tbody tr[data-policy]")
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.policy)")) == ["fair", "hold", "max-value",
                                                                                 "owner-first"]
    assert re.search(r"tesla → xai\s+400 h100", planner.page.inner_text("#job"))
    submit(planner, re.compile(r"Apply max-value \(1 loans"))
    assert "1 loan proposals" in planner.page.get_by_role("status").first.inner_text()

    interested = dashboard.sign_in("xai-indep")
    interested.visit("/ui/approvals")
    section = proposal(interested)
    assert section.get_attribute("data-standing") == "interested"
    assert "You cannot vote: xai-indep is interested in proposal:plan-" in section.inner_text()
    assert section.get_by_role("button", name="Approve").count() == 0
    interested.check("approvals-interested")

    assert "your vote (approved)" in vote(dashboard, "tesla-indep", "approvals-director").lower()
    vote(dashboard, "tesla-indep2", "approvals-second-director")

    operator = dashboard.sign_in("tesla-operator")
    operator.visit("/ui/approvals")
    assert proposal(operator).get_attribute("data-status") == "approved"
    operator.check("approvals-operator")
    submit(operator, "Open the loan")
    assert re.search(r"loan plan-\w+-1 is open from", operator.page.get_by_role("status").first.inner_text(), re.I)
    assert proposal(operator).get_attribute("data-status") == "executed"


def test_a_vote_on_a_changed_transaction_is_refused_with_the_reason(dashboard):
    tab = dashboard.sign_in("tesla-indep")
    tab.visit("/ui/approvals")
    form = tab.page.locator('section.approval[data-subject="proposal:p1"] form.vote')
    form.locator('input[name="version"]').evaluate("e => e.value = '\"0000\"'", )
    tab.allowed_status = {412}
    with tab.page.expect_navigation(wait_until="load"):
        form.get_by_role("button", name="Reject").click()
    assert "proposal:p1 changed since you read it" in tab.page.inner_text("main")
    tab.visit("/ui/approvals")
    assert tab.page.locator('section.approval[data-subject="proposal:p1"]').get_attribute("data-standing") == "vote"


def test_a_simulation_shows_its_progress_then_its_charts(dashboard):
    tab = dashboard.sign_in("x-operator")
    tab.visit("/ui/cluster")
    tab.check("cluster-form")
    tab.page.get_by_label("Trace").select_option("small.csv")
    submit(tab, "Run")
    bar = tab.page.locator("#job progress")
    assert bar.count() == 1 and "job" in tab.page.locator('label[for="job-progress"]').inner_text().lower()
    tab.check("cluster-progress")
    tab.page.wait_for_selector('#job[data-state="succeeded"]', timeout=JOB_S)
    tab.check("cluster-results", charts=4)
    policies = tab.page.locator("#job tbody tr[data-policy]").evaluate_all("rs => rs.map(r => r.dataset.policy)")
    assert policies == ["static", "borrow", "fair"]
    tab.visit(tab.page.url.removeprefix(dashboard.server.url))  # the link to the results shows them again
    tab.check("cluster-linked", charts=4)


def test_claims_at_a_date_and_as_known_at_a_time(dashboard):
    tab = dashboard.sign_in("tesla-viewer")
    tab.visit("/ui/claims?as_of=2024-12-31")
    tab.check("claims", charts=1)
    text = tab.page.inner_text("main")
    assert "85,000 GPUs" in text and "41,000 GPUs" in text and "was not achievable" in text
    tab.visit("/ui/claims?as_of=2024-12-31&known_at=2024-04-24")
    tab.check("claims-known-at", charts=1)
    assert tab.page.locator("tr[data-claim]").count() == 1  # the spend claim was made on 2024-04-30
