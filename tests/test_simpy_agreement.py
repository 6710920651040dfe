"""Cross-check: ``gpufleet``'s ``static`` policy against the naive SimPy version in bench/simpy_static.py.

On a cluster where placement cannot fragment (one node holding every GPU), ``static`` is
per-tenant strict FIFO with gang jobs inside fixed quotas, which is what the SimPy version
models with one Container per tenant. The finish times must be equal, to the bit.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import simpy

from gpufleet.scheduler import Cluster, Job, NodePool, Scheduler, Tenant, TenantQuota, make_policy, run_to_end

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load_simpy_static():
    spec = importlib.util.spec_from_file_location("bench_simpy_static", BENCH / "simpy_static.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


simpy_static = _load_simpy_static()


def random_trace(seed: int) -> tuple[list[Job], dict[str, int]]:
    """20-200 jobs of 2-4 tenants; integer times on even seeds (many ties), float times on odd ones."""
    rng = np.random.default_rng(seed)
    tenants = [f"t{k}" for k in range(int(rng.integers(2, 5)))]
    nominal = {t: int(rng.integers(1, 5)) * 8 for t in tenants}  # whole GPUs
    n, ties = int(rng.integers(20, 201)), seed % 2 == 0
    arrivals = np.sort(rng.integers(0, n * 20, n) if ties else rng.exponential(30.0, n).cumsum())
    jobs = []
    for i, at in enumerate(arrivals):
        t = tenants[int(rng.integers(len(tenants)))]
        cap = nominal[t] * 1000
        milli = int(rng.choice([500, 1000, 2000, 4000, 8000, cap]))  # fractional, small, whole quota
        service = float(rng.integers(0, 400)) if ties else float(rng.lognormal(4.0, 1.2))
        jobs.append(Job(id=f"j{i}", tenant=t, arrival_s=float(at), milli_gpus=min(milli, cap),
                        service_s=service, checkpoint_s=3600.0, restart_s=60.0, line=i + 2))
    return jobs, nominal


def gpufleet_static_finish(jobs: list[Job], nominal: dict[str, int]) -> list[float]:
    """Per-job finish times of ``static`` on one node holding all the quotas' GPUs (what ``simulate`` drives)."""
    tenants = [Tenant(t, {"gpu": TenantQuota(gpus)}) for t, gpus in sorted(nominal.items())]
    cluster = Cluster(pools=(NodePool("gpu", 1, sum(nominal.values())),))
    scheduler = Scheduler(cluster, tenants, make_policy("static"))
    scheduler.feed(jobs)
    run_to_end(scheduler)
    return list(scheduler.records.finish_s)


@pytest.mark.parametrize("seed", range(10))
def test_static_finish_times_equal_simpy(seed):
    jobs, nominal = random_trace(seed)
    ours = gpufleet_static_finish(jobs, nominal)
    theirs = simpy_static.simulate_static(jobs, {t: g * 1000 for t, g in nominal.items()})
    assert not any(math.isnan(x) for x in ours + theirs)
    assert ours == theirs, max(abs(a - b) for a, b in zip(ours, theirs))


def test_simpy_progress_slices_change_nothing():
    """Running SimPy in slices of ``env.run(until=...)`` (for a progress bar) gives the same times, and ends."""
    jobs, nominal = random_trace(2)
    milli = {t: g * 1000 for t, g in nominal.items()}
    ticks = []
    sliced = simpy_static.simulate_static(jobs, milli, progress=ticks.append, step_s=50.0)
    assert sliced == simpy_static.simulate_static(jobs, milli)
    assert ticks and ticks[-1] >= max(sliced) and len(ticks) <= max(sliced) / 50.0 + 1


def test_simpy_container_gets_are_strict_fifo():
    """The baseline relies on it: a large get that does not fit blocks later small ones."""
    env = simpy.Environment()
    box = simpy.Container(env, capacity=8, init=8)
    started = {}

    def job(name, at, amount, hold):
        yield env.timeout(at)
        yield box.get(amount)
        started[name] = env.now
        yield env.timeout(hold)
        yield box.put(amount)

    env.process(job("a", 0, 6, 10))  # holds 6 of 8 until t=10
    env.process(job("big", 1, 8, 1))  # blocked until a gives back
    env.process(job("small", 2, 1, 1))  # would fit at once, but must wait behind big
    env.run()
    assert started == {"a": 0, "big": 10, "small": 11}
