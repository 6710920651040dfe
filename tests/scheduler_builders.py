"""Fluent builders for scheduler tests (after Kueue's test wrappers), and random scenarios.

    sc = scenario(cluster(nodes=2, gpus_per_node=4),
                  [tenant("a", nominal=4), tenant("b", nominal=4)],
                  [job("a1", "a", at=0, gpus=4, run=100), job("b1", "b", at=10, gpus=2, run=50)])
    sc.log("borrow")          # the event log, as a list of (time_s, what, job, detail)
    sc.simulate("fair")       # a SimulationResult

Units are those of people: GPUs (whole or fractional) and seconds; the builders convert to
the model's milli-GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import Sequence

from hypothesis import strategies as st

from gpufleet.scheduler import (Cluster, Job, Kernel, NodePool, PolicyOptions, QuotaChange, Scheduler, Tenant,
                                TenantQuota, Workload, make_policy, simulate)
from gpufleet.scheduler.model import MILLI, gpus_to_milli

DEFAULT_MODEL = "gpu"
MAX_STEPS = 5_000  # ~50x the events any scenario here needs: a livelock fails instead of hanging


# -- the cluster ---------------------------------------------------------------------------------
def pool(model: str = DEFAULT_MODEL, nodes: int = 1, gpus_per_node: int = 8) -> NodePool:
    return NodePool(model, nodes, gpus_per_node)


def cluster(nodes: int = 2, gpus_per_node: int = 4, model: str = DEFAULT_MODEL, *more: NodePool) -> Cluster:
    """One pool of ``nodes`` x ``gpus_per_node`` GPUs of ``model``, then any ``more`` pools."""
    return Cluster((NodePool(model, nodes, gpus_per_node), *more))


# -- tenants -------------------------------------------------------------------------------------
def tenant(name: str, nominal: float | dict[str, float] = 4, borrowing_limit: float | None = None,
           lending_limit: float | None = None, cohort: str = "default", weight: float = 1,
           model: str = DEFAULT_MODEL) -> Tenant:
    """A tenant with ``nominal`` GPUs of ``model`` (or a dict model -> nominal, same limits on each)."""
    nominals = nominal if isinstance(nominal, dict) else {model: nominal}
    quotas = {m: TenantQuota(n, borrowing_limit, lending_limit) for m, n in nominals.items()}
    return Tenant(name, quotas, cohort=cohort, weight=weight)


def quota_change(at: float, tenant_name: str, nominal: float, model: str = DEFAULT_MODEL) -> QuotaChange:
    return QuotaChange(float(at), tenant_name, model, nominal)


# -- jobs ----------------------------------------------------------------------------------------
def job(id: str, tenant_name: str, at: float = 0, gpus: float = 1, run: float = 100,
        checkpoint: float | None = None, restart: float = 0, priority: int = 0, model: str | None = None,
        line: int = 0, models: Sequence[str] = ()) -> Job:
    """A job of ``model`` (one), or of any of ``models`` (several; neither: any model)."""
    return Job(id=id, tenant=tenant_name, arrival_s=float(at), milli_gpus=gpus_to_milli(gpus),
               service_s=float(run), priority=priority, models=(model,) if model else tuple(models),
               checkpoint_s=checkpoint, restart_s=float(restart), line=line)


# -- a scenario ----------------------------------------------------------------------------------
@dataclass
class Scenario:
    cluster: Cluster
    tenants: list[Tenant]
    jobs: list[Job]
    quota_changes: list[QuotaChange] = field(default_factory=list)
    grace: float = 30.0

    def __post_init__(self):
        # trace lines in the order given (1-based), then arrival order for the feed (stable: ties keep it)
        self.jobs = [j if j.line else replace(j, line=i + 1) for i, j in enumerate(self.jobs)]
        self.jobs.sort(key=lambda j: j.arrival_s)

    @property
    def workload(self) -> Workload:
        return Workload(tuple(self.jobs))

    def scheduler(self, policy: str, *, kernel: Kernel | None = None, log: list | None = None,
                  **options) -> Scheduler:
        """A scheduler with the scenario's jobs fed and quota changes scheduled, not yet run."""
        sched = Scheduler(self.cluster, self.tenants, make_policy(policy, PolicyOptions(**options)), kernel,
                          reclaim_grace_s=self.grace, log=log)
        for change in self.quota_changes:
            sched.change_quota(change)
        sched.feed(self.jobs)
        return sched

    def run(self, policy: str, *, max_steps: int = MAX_STEPS, **options) -> Scheduler:
        """A scheduler run to the end (with its log kept); a run that does not end within
        ``max_steps`` events fails instead of hanging."""
        sched = self.scheduler(policy, log=[], **options)
        sched.kernel.run(max_steps=max_steps)
        assert not sched.kernel.pending, f"no end after {max_steps} events (at {sched.kernel.now} s)"
        sched.close()
        return sched

    def log(self, policy: str, **options) -> list[tuple[float, str, str, str]]:
        return self.run(policy, **options).log

    def simulate(self, policy: str, *, kernel: Kernel | None = None, **options):
        return simulate(self.workload, self.cluster, self.tenants, make_policy(policy, PolicyOptions(**options)),
                        quota_changes=self.quota_changes, reclaim_grace_s=self.grace, keep_log=True,
                        kernel=kernel)


def scenario(cluster_: Cluster, tenants: Sequence[Tenant], jobs: Sequence[Job],
             quota_changes: Sequence[QuotaChange] = (), grace: float = 30.0) -> Scenario:
    return Scenario(cluster_, list(tenants), list(jobs), list(quota_changes), grace)


# -- random scenarios ----------------------------------------------------------------------------
def _ceiling_milli(sc_cluster: Cluster, tenants: list[Tenant], t: Tenant, model: str, policy: str) -> int:
    """The most milli-GPUs ``t`` can ever hold on ``model`` under ``policy``, from Kueue's rules,
    computed here independently of the scheduler: its nominal (static); else its guaranteed part
    plus its cohort's lendable pool, capped by its borrowing limit (and always by the pool's size)."""
    capacity = next(p.gpus for p in sc_cluster.pools if p.model == model) * MILLI
    q = t.quotas.get(model)
    nominal = gpus_to_milli(q.nominal_gpus) if q else 0
    if policy == "static":
        return min(nominal, capacity)
    lendable = 0
    for k in tenants:
        kq = k.quotas.get(model)
        if k.cohort == t.cohort and kq:
            lend = kq.nominal_gpus if kq.lending_limit_gpus is None else kq.lending_limit_gpus
            lendable += gpus_to_milli(lend)
    own_lend = 0 if q is None else gpus_to_milli(q.nominal_gpus if q.lending_limit_gpus is None
                                                 else q.lending_limit_gpus)
    most = min(capacity, nominal - own_lend + lendable)
    if q is not None and q.borrowing_limit_gpus is not None:
        most = min(most, nominal + gpus_to_milli(q.borrowing_limit_gpus))
    return most


@st.composite
def random_scenario(draw, policy: str = "static", roomy: bool = False, model_sets: bool = False) -> Scenario:
    """A random cluster (1-3 pools of 1-4 nodes x 1-8 GPUs), 1-4 tenants whose nominal quotas sum to at
    most each pool, optional borrowing and lending limits and cohorts, and 1-25 jobs (whole and fractional
    GPUs, checkpoints, restart costs, priorities), each no larger than its tenant could ever hold under
    ``policy``, so every job can eventually run.

    ``roomy``: a cluster and quotas far larger than the total demand (every job starts on arrival).
    ``model_sets``: jobs may also name two or more models (any of which they may run on)."""
    n_pools = draw(st.integers(1, 3))
    pools = [NodePool(f"m{i}", draw(st.integers(1, 4)), draw(st.integers(1, 8))) for i in range(n_pools)]
    n_tenants = draw(st.integers(1, 4))
    names = [f"t{i}" for i in range(n_tenants)]
    n_jobs = draw(st.integers(1, 25))
    if roomy:  # a free 8-GPU node for every job in every pool, and a nominal quota that holds all jobs
        pools = [NodePool(p.model, n_jobs * n_tenants, 8) for p in pools]
    the_cluster = Cluster(tuple(pools))

    # nominal quotas per pool: a split of at most the pool's GPUs, in halves of a GPU
    quotas: dict[str, dict[str, TenantQuota]] = {n: {} for n in names}
    for p in pools:
        if roomy:
            shares = [n_jobs * 8] * n_tenants
        else:
            halves = p.gpus * 2
            cuts = sorted(draw(st.lists(st.integers(0, halves), min_size=n_tenants, max_size=n_tenants)))
            shares = [(b - a) / 2 for a, b in zip([0] + cuts[:-1], cuts)]
        for name, nominal in zip(names, shares):
            if not draw(st.booleans()) and not roomy and nominal == 0:
                continue  # no quota at all on this model
            borrowing = draw(st.none() | st.integers(0, p.gpus).map(float))
            lending = draw(st.none() | st.integers(0, int(nominal * 2)).map(lambda h: h / 2))
            quotas[name][p.model] = TenantQuota(nominal, borrowing, lending)
    tenants = [Tenant(n, quotas[n], cohort=draw(st.sampled_from(["c0", "c0", "c1"])),
                      weight=draw(st.sampled_from([1.0, 1.0, 2.0, 0.5]))) for n in names]

    # who can run what: (tenant, model or None) -> the largest job it may submit
    options = []
    for t in tenants:
        ceilings = {p.model: _ceiling_milli(the_cluster, tenants, t, p.model, policy) for p in pools}
        for model, most in ceilings.items():
            if most >= 100:
                options.append((t.name, model, most))
        if ceilings and max(ceilings.values()) >= 100:
            options.append((t.name, None, max(ceilings.values())))
        if model_sets:  # every set of two models or more
            sets = [models for k in range(2, len(ceilings) + 1) for models in combinations(ceilings, k)]
            options += [(t.name, models, most) for models in sets
                        if (most := max(ceilings[m] for m in models)) >= 100]
    if not options:  # nobody could run anything: the first tenant gets the first pool, the others none of it
        m0 = pools[0].model
        tenants = [Tenant(t.name, {m0: TenantQuota(float(pools[0].gpus))} if i == 0 else
                          {m: q for m, q in t.quotas.items() if m != m0}, t.cohort, t.weight)
                   for i, t in enumerate(tenants)]
        options = [(tenants[0].name, m0, pools[0].gpus * MILLI)]

    jobs = []
    for i in range(n_jobs):
        name, model, most = draw(st.sampled_from(options))
        whole = draw(st.booleans())
        milli = (draw(st.integers(1, max(1, min(8, most // MILLI)))) * MILLI if whole and most >= MILLI
                 else draw(st.integers(100, min(most, 8 * MILLI)).map(lambda m: m - m % 100)))
        run = draw(st.sampled_from([0, 10, 25, 60, 100, 250, 1000]) | st.integers(1, 500))
        jobs.append(Job(id=f"j{i}", tenant=name, arrival_s=float(draw(st.integers(0, 400))), milli_gpus=milli,
                        service_s=float(run), priority=draw(st.sampled_from([0, 0, 0, 1, 2])),
                        models=(model,) if isinstance(model, str) else tuple(model or ()),
                        checkpoint_s=draw(st.none() | st.sampled_from([5.0, 20.0, 50.0])),
                        restart_s=float(draw(st.sampled_from([0, 0, 5, 30]))), line=i + 1))
    return Scenario(the_cluster, tenants, jobs, grace=float(draw(st.sampled_from([0, 10, 30]))))
