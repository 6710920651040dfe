"""The seeded fleet generator (``gpufleet.planner.generate``) and the split by lending groups."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
import yaml

from gpufleet.domain.state import FleetState
from gpufleet.planner.decompose import components, solve_by_groups, split_by_groups
from gpufleet.planner.generate import (
    PLAN_START,
    SIZES,
    generate_problem,
    generate_scenario,
    group_access,
    scenario_state,
)
from gpufleet.planner.model import build
from gpufleet.planner.policies import get_policy
from gpufleet.planner.solver import SolveOptions
from gpufleet.services.fleet import FleetService


@pytest.fixture(scope="module")
def small():
    return generate_scenario("small", seed=0)


def n_lots(doc: dict) -> int:
    return sum(len(po["lots"]) for po in doc["purchase_orders"])


def test_same_seed_same_document_and_other_seeds_differ(small):
    assert generate_scenario("small", seed=0) == small
    assert generate_scenario("small", seed=1) != small
    assert generate_scenario("medium", seed=3) == generate_scenario("medium", seed=3)
    assert generate_scenario("medium", seed=3) != generate_scenario("medium", seed=4)


def test_unknown_size_is_an_input_error():
    from gpufleet.errors import InputError

    with pytest.raises(InputError, match="unknown size"):
        generate_scenario("huge")


@pytest.mark.parametrize("size", ["small", "medium", "large"])
def test_sizes_match_the_table(size):
    doc = generate_scenario(size, seed=0)
    spec = SIZES[size]
    assert len(doc["entities"]) == spec.entities
    assert len(doc["sites"]) == spec.sites
    assert n_lots(doc) == spec.lots
    assert len(doc["gpu_models"]) == 1 and doc["gpu_models"][0]["watts"] == 700
    values = [d["value_usd_per_gpu_hour"] for d in doc["demand"]]
    assert 1.0 <= min(values) and max(values) <= 6.0
    assert {d["tier"] for d in doc["demand"]} <= {0, 1, 2, 3}
    state = scenario_state(doc, PLAN_START)
    assert not state.conservation_errors()
    if size != "large":  # the fold of every event is exercised on the smaller sizes; large is the bench's
        problem = generate_problem(size, seed=0)
        assert problem.weeks == spec.weeks and problem.start == PLAN_START
        assert len(problem.entities) == spec.entities and len(problem.sites) == spec.sites


def test_the_small_scenario_loads_into_a_real_ledger_with_every_invariant(small, tmp_path):
    path = tmp_path / "generated.yaml"
    path.write_text(yaml.safe_dump(small, sort_keys=False), encoding="utf-8")
    service = FleetService.open(str(tmp_path / "g.db"), create=True)
    result = service.load(path)
    n_items = sum(len(small[k]) for k in ("entities", "gpu_models", "sites", "purchase_orders", "demand", "events"))
    assert result.events >= n_items
    assert service.verify().ok
    replay = service.replay()
    assert replay.ok, replay.problems
    # the ledger and the pure fold agree on the planning date
    assert service.state(PLAN_START).to_dict() == scenario_state(small, PLAN_START).to_dict()
    service.engine.dispose()


def test_the_story_gpus_wait_and_related_owners_are_short(small):
    problem = generate_problem("small", seed=0)
    # somewhere in the horizon an owner holds more GPUs than its group's sites can take
    assert (problem.avail.sum(axis=0) > problem.slots.sum(axis=0)).any()
    # a site's capacity comes online after the start (capacity steps over the horizon)
    assert (problem.slots[:, -1] > problem.slots[:, 0]).any()
    # some entity holds GPUs beyond its own demand while a related one wants more than it holds
    held = np.zeros(len(problem.entities))
    np.add.at(held, problem.cohort_owner, problem.avail.mean(axis=1))
    wanted = np.zeros(len(problem.entities))
    np.add.at(wanted, problem.demand_entity, problem.demand_gpus.mean(axis=1))
    surplus, short = held > wanted, held < wanted
    related = problem.permit & ~np.eye(len(problem.entities), dtype=bool)
    assert (related & np.outer(surplus, short)).any()
    # group access: every entity may run at every site of its group
    access = group_access(small)
    assert all(len(sites) == len(small["sites"]) for sites in access.values())


def test_the_pure_fold_orders_a_late_recorded_slip_like_the_ledger():
    doc = generate_scenario("medium", seed=0)
    slips = [e for e in doc["events"] if e["type"] == "site_capacity_slipped"]
    assert slips, "the medium fleet records at least one capacity slip"
    state = scenario_state(doc)
    assert isinstance(state, FleetState)
    slip = slips[0]
    step = state.sites[slip["site"]].steps[slip["step"]]
    assert step.online_date == date.fromisoformat(slip["online_date"]) > step.planned_date


def test_split_by_groups_covers_the_problem_once():
    problem = generate_problem("medium", seed=0)
    parts = split_by_groups(problem)
    assert len(parts) > 1
    assert sorted(e for p in parts for e in p.entities) == sorted(problem.entities)
    assert sum(len(p.demand_ids) for p in parts) == len(problem.demand_ids)
    assert sum(p.avail.sum() for p in parts) == pytest.approx(problem.avail.sum())
    # no two groups share a site
    sites = [s for _, group_sites in components(problem) for s in group_sites]
    assert len(sites) == len(set(sites))
    # the parts' models together are exactly as large as the whole one
    whole = build(problem)
    assert sum(build(p).A.nnz for p in parts) == whole.A.nnz


@pytest.mark.parametrize("policy", ["max-value", "owner-first", "fair"])
def test_decomposition_equals_the_monolithic_objective_on_small(policy):
    problem = generate_problem("small", seed=0)
    options = SolveOptions(method="simplex")
    whole = get_policy(policy).decide(problem, options, None).solution.objective
    split = solve_by_groups(problem, policy, options).objective
    assert split == pytest.approx(whole, rel=1e-6)


def test_decomposition_equals_the_monolithic_objective_with_several_groups():
    """A problem made of two small fleets side by side: two groups, and the sum of their optima."""
    a, b = generate_problem("small", seed=0), generate_problem("small", seed=5)
    joined = _side_by_side(a, b)
    assert len(split_by_groups(joined)) == 2
    options = SolveOptions(method="simplex")
    whole = get_policy("max-value").decide(joined, options, None).solution.objective
    parts = solve_by_groups(joined, "max-value", options)
    alone = sum(get_policy("max-value").decide(p, options, None).solution.objective for p in (a, b))
    assert parts.objective == pytest.approx(whole, rel=1e-6)
    assert whole == pytest.approx(alone, rel=1e-6)


def _side_by_side(a, b):
    from dataclasses import replace

    ea = len(a.entities)
    block = lambda x, y: np.block([[x, np.zeros((x.shape[0], y.shape[1]), x.dtype)],  # noqa: E731
                                   [np.zeros((y.shape[0], x.shape[1]), y.dtype), y]])
    return replace(
        a, entities=[f"a:{e}" for e in a.entities] + [f"b:{e}" for e in b.entities],
        sites=[f"a:{s}" for s in a.sites] + [f"b:{s}" for s in b.sites],
        cohort_owner=np.concatenate([a.cohort_owner, b.cohort_owner + ea]),
        cohort_model=a.cohort_model + b.cohort_model, watts=np.concatenate([a.watts, b.watts]),
        avail=np.vstack([a.avail, b.avail]), installed0=block(a.installed0, b.installed0),
        slots=np.vstack([a.slots, b.slots]), mw=np.vstack([a.mw, b.mw]), pue=np.concatenate([a.pue, b.pue]),
        access=block(a.access, b.access), permit=block(a.permit, b.permit),
        permit_basis=a.permit_basis | {(i + ea, j + ea): w for (i, j), w in b.permit_basis.items()},
        demand_entity=np.concatenate([a.demand_entity, b.demand_entity + ea]),
        demand_tier=np.concatenate([a.demand_tier, b.demand_tier]),
        demand_value=np.concatenate([a.demand_value, b.demand_value]),
        demand_gpus=np.vstack([a.demand_gpus, b.demand_gpus]),
        demand_ids=[f"a:{d}" for d in a.demand_ids] + [f"b:{d}" for d in b.demand_ids],
        loan_ends=np.vstack([a.loan_ends, b.loan_ends]),
        notice_locked=a.notice_locked | {(c + len(a.cohort_owner), u + ea): row
                                         for (c, u), row in b.notice_locked.items()},
    )
