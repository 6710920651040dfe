"""The Risk page in Chromium: a supply sweep runs as a job with its progress, then its fan chart and claim
probabilities, for the entities the principal reads; and the sweep job's result is the CLI's sweep."""

from __future__ import annotations

from datetime import date

import pytest

from api_world import build_world
from dashboard_browser import dashboard  # noqa: F401  (the module-scoped fixture)
from gpufleet.planner.problem import PlanOptions
from gpufleet.services import jobs
from gpufleet.services.fleet import FleetService
from gpufleet.services.sweeps import runner, supply
from test_dashboard_flows import JOB_S, submit

SAMPLES = "30"  # a few seconds serially


def run_sweep(tab, seed: str = "7") -> None:
    """Fill the form with a small sweep and run it; wait for its results."""
    tab.page.get_by_label("Samples").fill(SAMPLES)
    tab.page.get_by_label("Seed").fill(seed)
    submit(tab, "Run")
    assert "job=" in tab.page.url


def test_a_sweep_shows_its_progress_then_the_fan_and_the_claims(dashboard):  # noqa: F811
    tab = dashboard.sign_in("tesla-auditor")
    tab.visit("/ui/risk")
    tab.check("risk-form")
    run_sweep(tab)
    state = tab.page.locator("#job").get_attribute("data-state")
    assert state in ("queued", "running", "succeeded")
    if state != "succeeded":  # the job's progress bar, polled until the job is done
        assert tab.page.locator("#job progress").count() == 1
    tab.page.wait_for_selector('#job[data-state="succeeded"]', timeout=JOB_S)
    tab.check("risk-results", charts=2)
    text = tab.page.inner_text("#sweep-meta")
    assert f"{SAMPLES} samples, seed 7" in text
    assert tab.page.locator("tr[data-claim]").count() == 2  # both of Tesla's claims, from an auditor
    fan = [t["name"] for t in tab.page.evaluate("document.getElementById('risk-fan').data")]
    assert {"tesla P50", "x P50", "xai P50"} <= set(fan)


def test_a_planner_of_one_entity_sees_only_its_entities(dashboard):  # noqa: F811
    tab = dashboard.sign_in("x-planner")
    tab.visit("/ui/risk")
    run_sweep(tab, seed="3")
    tab.page.wait_for_selector('#job[data-state="succeeded"]', timeout=JOB_S)
    tab.check("risk-x-planner", charts=1)  # the fan only: x states no claim
    assert tab.page.locator("tr[data-claim]").count() == 0
    fan = {t["name"] for t in tab.page.evaluate("document.getElementById('risk-fan').data")}
    assert fan == {"x P10-P90", "x P50"}
    assert "Only the entities you read are shown (x)" in tab.page.inner_text("#sweep-meta")


def test_a_viewer_may_not_run_a_sweep(dashboard):  # noqa: F811
    tab = dashboard.sign_in("tesla-viewer")
    tab.visit("/ui/risk")
    tab.check("risk-viewer")
    assert tab.page.get_by_role("button", name="Run").count() == 0
    assert "needs the planner role" in tab.page.inner_text("main")


@pytest.fixture(scope="module")
def world_db(tmp_path_factory) -> str:
    db = str(tmp_path_factory.mktemp("risk") / "w.db")
    build_world(db)
    return db


def test_the_sweep_job_equals_the_cli_sweep_with_the_same_seed(world_db):
    service = FleetService.open(world_db)
    params = {"as_of": "2024-06-04", "samples": 12, "seed": 11, "horizon_weeks": 20}
    store = jobs.JobStore(service)
    job_id = store.create("sweep", "tesla-auditor", params)
    jobs.run_job(str(service.engine.url), job_id, jobs.KINDS["sweep"].run, params, "tesla-auditor", jobs.Settings())
    done = store.get(job_id)
    assert done["state"] == "succeeded", done["problem"]
    start = date(2024, 6, 4)
    state = service.state(start)
    sweep = supply.supply_sweep(state, start, samples=12, seed=11, options=PlanOptions(horizon_weeks=20))
    expected = supply.summary(sweep.inputs, runner.run(sweep, workers=1).rows)
    got = done["result"]
    assert got["inputs_hash"] == sweep.inputs_hash and got["seed"] == 11
    assert got["entities"] == expected["entities"]
    assert [c["probability"] for c in got["claims"] if "decided" not in c] == \
        [c["probability"] for c in expected["claims"]]
    assert {c["claim"] for c in expected["claims"]} <= {c["claim"] for c in got["claims"]}
