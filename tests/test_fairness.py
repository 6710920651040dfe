"""Fairness of a run (gpufleet.scheduler.fairness): Jain's index over time of each tenant's GPUs held
per GPU of quota, and Themis' finish-time fairness rho = completion times shared / alone.

Every expected value is worked out by hand in the comment above it. Amounts in the hand-drawn
intervals are GPUs (x 1000 for the model's milli-GPUs); a job present counts 1.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpufleet.scheduler import POLICIES
from gpufleet.scheduler.fairness import Intervals, finish_time_fairness, jain_over_time
from gpufleet.scheduler.model import MILLI
from scheduler_builders import cluster, job, random_scenario, scenario, tenant

G = MILLI  # one GPU


def jain_of(held, present, entitled, tenants=2):
    """``held`` and ``entitled`` rows (tenant, start, end, GPUs), ``present`` rows (tenant, start, end)."""
    return jain_over_time(Intervals.of([(t, a, b, g * G) for t, a, b, g in held]),
                          Intervals.of([(t, a, b, 1) for t, a, b in present]),
                          Intervals.of([(t, a, b, g * G) for t, a, b, g in entitled]), tenants)


BOTH_PRESENT = [(0, 0, 10), (1, 0, 10)]
QUOTA_4_2 = [(0, 0, 10, 4), (1, 0, 10, 2)]


# -- Jain's index over time: hand-drawn intervals ---------------------------------------------------
@pytest.mark.parametrize("held, present, entitled, tenants, index, overlap_s", [
    # x = (4/4, 2/2): equal multiples of the quotas
    ([(0, 0, 10, 4), (1, 0, 10, 2)], BOTH_PRESENT, QUOTA_4_2, 2, 1.0, 10),
    # x = (1, 0): (1)^2 / (2 x 1) = 1/2, the lower bound 1/n
    ([(0, 0, 10, 4)], BOTH_PRESENT, QUOTA_4_2, 2, 0.5, 10),
    # two runs of tenant 0 add up: 1 + 1 GPUs of 4 = 1/2, b 1 of 2 = 1/2
    ([(0, 0, 10, 1), (0, 0, 10, 1), (1, 0, 10, 1)], BOTH_PRESENT, QUOTA_4_2, 2, 1.0, 10),
    # b has work only over [5, 10): the first half has one tenant and does not count;
    # then x = (4/4, 1/4): (5/4)^2 / (2 (1 + 1/16)) = 25/34
    ([(0, 0, 10, 4), (1, 5, 10, 1)], [(0, 0, 10), (1, 5, 10)], [(0, 0, 10, 4), (1, 0, 10, 4)], 2, 25 / 34, 5),
    # b's quota goes from 2 to 4 at 5 while it holds 2: x = (1, 1) then (1, 1/2): J = 1, then
    # (3/2)^2 / (2 (1 + 1/4)) = 9/10; over 5 s each: 0.95
    ([(0, 0, 10, 4), (1, 0, 10, 2)], BOTH_PRESENT, [(0, 0, 10, 4), (1, 0, 5, 2), (1, 5, 10, 4)], 2, 0.95, 10),
    # a quota on two models adds up: a holds 4 of 2 + 2, b 2 of 2
    ([(0, 0, 10, 4), (1, 0, 10, 2)], BOTH_PRESENT, [(0, 0, 10, 2), (0, 0, 10, 2), (1, 0, 10, 2)], 2, 1.0, 10),
    # c has work but no quota: left out, whatever it holds
    ([(0, 0, 10, 4), (1, 0, 10, 2), (2, 0, 10, 8)], BOTH_PRESENT + [(2, 0, 10)], QUOTA_4_2, 3, 1.0, 10),
    # a holds GPUs after its work is done? No: held without work is not looked at (b alone from 5)
    ([(0, 0, 10, 4), (1, 0, 10, 2)], [(0, 0, 5), (1, 0, 10)], QUOTA_4_2, 2, 1.0, 5),
    # three tenants, x = (1, 1, 0): 2^2 / (3 x 2) = 2/3
    ([(0, 0, 10, 4), (1, 0, 10, 2)], BOTH_PRESENT + [(2, 0, 10)], QUOTA_4_2 + [(2, 0, 10, 1)], 3, 2 / 3, 10),
    # both have work and nobody holds anything: all equal
    ([], BOTH_PRESENT, QUOTA_4_2, 2, 1.0, 10),
    # never two tenants with work at once: nothing to compare
    ([(0, 0, 5, 4), (1, 5, 10, 2)], [(0, 0, 5), (1, 5, 10)], QUOTA_4_2, 2, None, 0),
], ids=["equal-multiples", "one-holds-nothing", "runs-add-up", "alone-not-counted", "quota-raised",
        "models-add-up", "no-quota-left-out", "held-without-work", "three-tenants", "nobody-holds", "never-two"])
def test_jain_over_time_of_hand_drawn_intervals(held, present, entitled, tenants, index, overlap_s):
    result = jain_of(held, present, entitled, tenants)
    assert result.index == (None if index is None else pytest.approx(index))
    assert result.overlap_s == pytest.approx(overlap_s)


def _reference_jain(held, present, entitled, tenants):
    """J evaluated directly in the middle of every stretch between two interval ends."""
    ends = sorted({t for rows in (held, present, entitled) for r in rows for t in r[1:3]})
    total = weighted = 0.0
    for a, b in zip(ends, ends[1:]):
        mid = (a + b) / 2

        def at(rows, i):
            return sum(r[3] if len(r) > 3 else 1 for r in rows if r[0] == i and r[1] <= mid < r[2])

        x = [at(held, i) / at(entitled, i) for i in range(tenants) if at(present, i) and at(entitled, i)]
        if len(x) >= 2:
            j = 1.0 if not any(x) else sum(x) ** 2 / (len(x) * sum(v * v for v in x))
            total, weighted = total + (b - a), weighted + j * (b - a)
    return (weighted / total if total else None), total


def _rows(draw, tenants, amount):
    rows = []
    for _ in range(draw(st.integers(0, 8))):
        start = draw(st.integers(0, 50))
        rows.append((draw(st.integers(0, tenants - 1)), start, start + draw(st.integers(0, 30)),
                     *((draw(amount),) if amount is not None else ())))
    return rows


@st.composite
def random_intervals(draw):
    tenants = draw(st.integers(1, 4))
    return (_rows(draw, tenants, st.integers(1, 8)), _rows(draw, tenants, None),
            _rows(draw, tenants, st.integers(0, 6)), tenants)


@given(random_intervals())
def test_jain_over_time_equals_its_definition_and_stays_within_its_bounds(case):
    held, present, entitled, tenants = case
    result = jain_of(held, present, entitled, tenants)
    index, overlap_s = _reference_jain(held, present, entitled, tenants)
    assert result.overlap_s == pytest.approx(overlap_s)
    if index is None:
        assert result.index is None
    else:
        assert result.index == pytest.approx(index)
        assert 1 / tenants - 1e-12 <= result.index <= 1 + 1e-12


# -- finish-time fairness: the ratio -----------------------------------------------------------------
@pytest.mark.parametrize("tenant, shared, alone, expected", [
    # a: (100 + 200) / (100 + 100); b: 50 / 50
    ([0, 0, 1], [100, 200, 50], [100, 100, 50], [1.5, 1.0]),
    # a's second job could not run alone (NaN): it counts in neither sum
    ([0, 0, 1], [100, 200, 40], [50, math.nan, 50], [2.0, 0.8]),
    # b has no job, or none that ran alone: None
    ([0, 0], [10, 20], [10, 10], [1.5, None]),
    ([0, 1], [10, 20], [10, math.nan], [1.0, None]),
    # jobs of no duration both ways: nothing to divide by
    ([0, 1], [0, 30], [0, 60], [None, 0.5]),
], ids=["sums-not-means-of-ratios", "not-run-alone-left-out", "no-jobs", "none-alone", "zero-alone"])
def test_finish_time_fairness_of_hand_made_completion_times(tenant, shared, alone, expected):
    rho = finish_time_fairness(np.array(tenant), np.array(shared, float), np.array(alone, float), 2)
    assert rho == [None if e is None else pytest.approx(e) for e in expected]


# -- the measures of a run ----------------------------------------------------------------------------
def lender_with_little_work():
    """One 8-GPU node; a and b own 4 each. a has 7 GPUs of work, b a single 1-GPU job: under static
    a waits for its own quota; when b lends its idle 3 GPUs, a's second job starts at once."""
    return scenario(cluster(nodes=1, gpus_per_node=8), [tenant("a", nominal=4), tenant("b", nominal=4)], [
        job("a1", "a", at=0, gpus=4, run=100),
        job("a2", "a", at=0, gpus=3, run=100),
        job("b1", "b", at=0, gpus=1, run=200),
    ])


# static: a1 0-100, a2 100-200 (4 + 3 > 4), b1 0-200; alone, a runs exactly so: rho_a = 300 / 300.
#   Jain: [0, 100) x = (4/4, 1/4): (5/4)^2 / (2 (1 + 1/16)) = 25/34; [100, 200) x = (3/4, 1/4):
#   1 / (2 (9/16 + 1/16)) = 4/5; mean over 200 s: (25/34 + 4/5) / 2 = 261/340.
# borrow, fair: a1 and a2 0-100 (a borrows 3 of b's 4), b1 0-200: rho_a = (100 + 100) / 300 = 2/3.
#   Jain: [0, 100) x = (7/4, 1/4): 2^2 / (2 (49/16 + 1/16)) = 16/25; from 100 b is alone.
LENDER = {
    "static": (261 / 340, 200, {"a": 1.0, "b": 1.0}),
    "borrow": (16 / 25, 100, {"a": 2 / 3, "b": 1.0}),
    "fair": (16 / 25, 100, {"a": 2 / 3, "b": 1.0}),
}


@pytest.mark.parametrize("policy", list(LENDER))
def test_fairness_of_a_lender_with_little_work(policy):
    index, overlap_s, rho = LENDER[policy]
    f = lender_with_little_work().simulate(policy).fairness
    assert f.jain.index == pytest.approx(index)
    assert f.jain.overlap_s == pytest.approx(overlap_s)
    assert f.finish_time == {k: pytest.approx(v) for k, v in rho.items()}
    assert f.finish_time_max == pytest.approx(max(rho.values()))
    assert f.finish_time_mean == pytest.approx(sum(rho.values()) / 2)


def test_static_and_fair_differ_in_the_expected_direction():
    """Lending b's idle quota shortens a's jobs (a's rho falls below 1, b's stays at 1) and makes the
    GPUs held less proportional to the quotas while both have work (Jain falls)."""
    static, fair = (lender_with_little_work().simulate(p).fairness for p in ("static", "fair"))
    assert fair.finish_time["a"] < static.finish_time["a"] == 1.0
    assert fair.finish_time["b"] == static.finish_time["b"] == 1.0
    assert fair.finish_time_mean < static.finish_time_mean
    assert fair.jain.index < static.jain.index


def test_a_reclaim_shows_in_both_measures():
    """One 4-GPU node, a and b own 2 each, grace 10 s. Under borrow b1 (4 GPUs, more than b's quota)
    runs on a's idle half until a1 comes at 30; a reclaims, b1 gives the GPUs back at 40, a1 runs
    40-90, b1 90-175 (it kept 20 s of work at its checkpoint and pays a 5 s restart)."""
    sc = scenario(cluster(nodes=1, gpus_per_node=4), [tenant("a", nominal=2), tenant("b", nominal=2)], [
        job("b1", "b", at=0, gpus=4, run=100, checkpoint=20, restart=5),
        job("a1", "a", at=30, gpus=2, run=50),
    ], grace=10)
    f = sc.simulate("borrow").fairness
    # both have work over [30, 90): [30, 40) b holds 4 of its 2, a none: x = (0, 2), J = 1/2;
    # [40, 90) a holds 2 of 2, b none (requeued): x = (1, 0), J = 1/2
    assert f.jain.index == pytest.approx(0.5)
    assert f.jain.overlap_s == pytest.approx(60)
    # a1: 90 - 30 = 60 shared, 50 alone; b1 needs 4 GPUs, more than b's quota: it cannot run alone
    assert f.finish_time == {"a": pytest.approx(60 / 50), "b": None}
    assert f.not_run_alone == {"a": 0, "b": 1}
    assert f.finish_time_max == f.finish_time_mean == pytest.approx(1.2)


def test_a_tenant_without_quota_has_no_finish_time_fairness():
    sc = scenario(cluster(nodes=1, gpus_per_node=4), [tenant("a", nominal=4), tenant("b", nominal=0)], [
        job("a1", "a", at=0, gpus=2, run=100),
        job("b1", "b", at=0, gpus=2, run=100),  # runs on a's idle quota under borrow
    ])
    f = sc.simulate("borrow").fairness
    assert f.finish_time == {"a": pytest.approx(1.0), "b": None}
    assert f.not_run_alone == {"a": 0, "b": 1}
    assert f.jain.index is None  # b has no quota: a is the only tenant compared, never two


# -- properties ----------------------------------------------------------------------------------------
@st.composite
def pooled_scenario(draw):
    """One node holding every GPU, 1-3 tenants whose quotas add up to at most the node, 1-12 jobs each
    within its tenant's quota: under static no tenant's jobs can delay another's."""
    gpus = draw(st.integers(1, 16))
    cuts = sorted(draw(st.lists(st.integers(0, gpus), min_size=3, max_size=3)))
    quotas = [b - a for a, b in zip([0] + cuts[:-1], cuts)]
    owners = [(f"t{i}", q) for i, q in enumerate(quotas) if q]
    if not owners:
        owners = [("t0", gpus)]
    jobs = []
    for i in range(draw(st.integers(1, 12))):
        name, quota = draw(st.sampled_from(owners))
        jobs.append(job(f"j{i}", name, at=draw(st.integers(0, 300)), gpus=draw(st.integers(1, quota)),
                        run=draw(st.integers(0, 200))))
    return scenario(cluster(nodes=1, gpus_per_node=gpus), [tenant(n, nominal=q) for n, q in owners], jobs)


@settings(max_examples=min(30, settings.default.max_examples))
@given(pooled_scenario())
def test_under_static_on_pooled_capacity_every_tenant_finishes_as_if_alone(sc):
    f = sc.simulate("static").fairness
    for name, rho in f.finish_time.items():
        assert rho == 1.0 or (rho is None and sum(j.service_s for j in sc.jobs if j.tenant == name) == 0)


@settings(max_examples=min(30, settings.default.max_examples))
@given(st.sampled_from(list(POLICIES)).flatmap(lambda p: st.tuples(st.just(p), random_scenario(p))))
def test_the_measures_stay_within_their_bounds(case):
    policy, sc = case
    f = sc.simulate(policy).fairness
    tenants = len(sc.tenants)
    if f.jain.index is not None:
        assert 1 / tenants - 1e-12 <= f.jain.index <= 1 + 1e-12
        assert 0 < f.jain.overlap_s
    assert all(rho is None or rho > 0 for rho in f.finish_time.values())
    assert set(f.finish_time) == set(f.not_run_alone) == {t.name for t in sc.tenants}

