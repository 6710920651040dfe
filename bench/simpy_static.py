"""The ``static`` policy written the obvious way on SimPy 4: the baseline for ``bench/simulate.py``.

Each tenant is one :class:`simpy.Container` holding its nominal quota in milli-GPUs; each job
is one process that waits for its arrival, takes all its GPUs at once (a gang: one ``get`` of
its whole size), holds them for its service time and puts them back. No preemption, no
placement: it models a cluster where placement cannot fragment (one node holding every GPU),
which is what ``gpufleet``'s ``static`` does on ``NodePool("gpu", 1, total_gpus)``.

Strict FIFO per tenant: SimPy 4's ``Container`` keeps its gets in request order and
``BaseResource._trigger_get`` stops at the first get that does not fit (``Container._do_get``
returns ``None`` for it), so a large head blocks every later, smaller get of the same tenant.
That is the order ``gpufleet``'s ``static`` uses (priority, then arrival, then trace order):
jobs request at their arrival, and processes created in trace order resume in that order when
they arrive at the same instant. ``tests/test_simpy_agreement.py`` checks both this and that
the finish times equal ``gpufleet``'s exactly. All jobs must have the same priority (SimPy's
plain ``Container`` has none).

Deliberately unoptimised: a process per job, all created up front, as a typical user writes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import simpy

from gpufleet.scheduler import Job


def simulate_static(jobs: Sequence[Job], nominal_milli: Mapping[str, int], *,
                    progress: Callable[[float], None] | None = None, step_s: float = 86_400.0) -> list[float]:
    """Finish time (s) of each job of ``jobs`` (same order) under per-tenant FIFO with fixed quotas.

    ``nominal_milli``: tenant -> nominal quota in milli-GPUs. ``progress(now_s)`` is called every
    ``step_s`` simulated seconds (the run goes on in slices of ``env.run(until=...)``).
    """
    if len({j.priority for j in jobs}) > 1:
        raise ValueError("the SimPy baseline has no priorities: all jobs must have the same priority")
    env = simpy.Environment()
    quota = {t: simpy.Container(env, capacity=q, init=q) for t, q in nominal_milli.items()}
    finish = [math.nan] * len(jobs)
    left = [len(jobs)]  # jobs not finished yet

    def run(i: int, job: Job):
        yield env.timeout(job.arrival_s)
        gpus = quota[job.tenant]
        if job.milli_gpus > gpus.capacity:
            raise ValueError(f"job {job.id} needs {job.milli_gpus} milli-GPUs, over its tenant's quota")
        yield gpus.get(job.milli_gpus)  # the whole gang at once, in FIFO order
        yield env.timeout(job.service_s)
        finish[i] = env.now
        left[0] -= 1
        yield gpus.put(job.milli_gpus)

    for i, job in enumerate(jobs):
        env.process(run(i, job))
    if progress is None:
        env.run()
    else:
        until = step_s  # not "while env.peek() < inf": SimPy 4.1 leaves each run's `until` event queued
        while left[0]:
            env.run(until=until)
            progress(env.now)
            until += step_s
    return finish
