"""Quota what-if: a grid or random search over quotas, limits and policies, each replayed on a trace.

A configuration (one sample) is:

* ``policy``: a scheduling policy (``static``, ``borrow``, ``fair``);
* ``mix`` in [0, 1]: nominal quotas re-split between the base quotas (0: those of the quotas file or
  the default sizing, docs/scheduling.md) and equal shares of each pool (1), as ``(1 - mix) x base +
  mix x pool / tenants`` GPUs, per GPU model;
* ``lending`` (a share of each nominal quota, or none: no limit) and ``borrowing`` (a multiple of each
  nominal quota, or none: no limit): the Kueue lending and borrowing limits.

Each is replayed with :func:`gpufleet.scheduler.simulate`; a row holds the overall utilization, the
worst guarantee wait and violation over tenants (seconds), the p99 wait, and per tenant the same.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np
import yaml

from gpufleet.errors import InputError
from gpufleet.scheduler import POLICIES, PolicyOptions, Tenant, TenantQuota, make_policy, simulate
from gpufleet.scheduler.model import MILLI
from gpufleet.planner.uncertainty import sample_rng
from gpufleet.services.scheduling import Setup
from gpufleet.services.sweeps.runner import Sweep, digest


@dataclass(frozen=True)
class SearchSpace:
    """The values tried: a grid (every combination, in this order) or random (``samples`` draws)."""

    policies: tuple[str, ...] = ("static", "borrow", "fair")
    mix: tuple[float, ...] = (0.0, 0.5)
    lending: tuple[float | None, ...] = (None, 0.5)
    borrowing: tuple[float | None, ...] = (None, 1.0)
    random: bool = False

    def __post_init__(self):
        for p in self.policies:
            if p not in POLICIES:
                raise InputError(f"unknown policy '{p}' (known: {', '.join(POLICIES)})", field="policies")
        for name, values, high in (("mix", self.mix, 1.0), ("lending", self.lending, 1.0),
                                   ("borrowing", self.borrowing, 100.0)):
            if not values:
                raise InputError("give at least one value", field=name)
            for x in values:
                if x is not None and not 0.0 <= x <= high:
                    raise InputError(f"must be from 0 to {high:g}, got {x}", field=name)

    @property
    def grid_size(self) -> int:
        return len(self.policies) * len(self.mix) * len(self.lending) * len(self.borrowing)


@dataclass(frozen=True)
class QuotaInputs:
    setup: Setup
    space: SearchSpace
    reclaim_grace_s: float = 30.0


def quota_sweep(setup: Setup, space: SearchSpace, *, samples: int | None = None, seed: int = 0,
                reclaim_grace_s: float = 30.0) -> Sweep:
    """The sweep: the whole grid, or ``samples`` random configurations."""
    n = space.grid_size if not space.random else (samples or 50)
    inputs = QuotaInputs(setup, space, reclaim_grace_s)
    return Sweep("quotas", inputs, digest(_describe(inputs)), seed, n)


def _describe(inputs: QuotaInputs) -> dict:
    """What identifies a quota sweep's inputs (the jobs, the cluster, the quotas, the space)."""
    s = inputs.setup
    return {"jobs": s.workload.jobs,
            "cluster": s.cluster, "tenants": s.tenants, "changes": s.quota_changes, "space": inputs.space,
            "grace": inputs.reclaim_grace_s}


def configuration(space: SearchSpace, seed: int, index: int) -> dict:
    """Configuration ``index``: the grid's ``index``-th combination, or a draw from the space's ranges."""
    if not space.random:
        combo = list(itertools.product(space.policies, space.mix, space.lending, space.borrowing))[index]
        return dict(zip(("policy", "mix", "lending", "borrowing"), combo, strict=True))
    rng = sample_rng(seed, index)
    policy = space.policies[int(rng.integers(len(space.policies)))]
    mix = float(rng.uniform(min(space.mix), max(space.mix)))

    def limit(values: tuple[float | None, ...]) -> float | None:
        finite = [v for v in values if v is not None]
        u, pick_none = float(rng.uniform(min(finite, default=0), max(finite, default=0))), rng.random()
        return None if (None in values and (not finite or pick_none < 1 / len(values))) else round(u, 4)

    return {"policy": policy, "mix": round(mix, 4), "lending": limit(space.lending),
            "borrowing": limit(space.borrowing)}


def tenants_for(setup: Setup, config: dict) -> list[Tenant]:
    """The tenants with the configuration's nominal quotas and limits (GPUs, to the milli-GPU)."""
    out = []
    n = len(setup.tenants)
    for t in setup.tenants:
        quotas = {}
        for pool in setup.cluster.pools:
            base = t.quotas.get(pool.model, TenantQuota(0.0)).nominal_gpus
            nominal = round((1 - config["mix"]) * base + config["mix"] * pool.gpus / n, 3)
            lend = None if config["lending"] is None else round(config["lending"] * nominal, 3)
            borrow = None if config["borrowing"] is None else round(config["borrowing"] * nominal, 3)
            quotas[pool.model] = TenantQuota(nominal, borrow, lend)
        out.append(replace(t, quotas=quotas))
    return out


def prepare(inputs: QuotaInputs) -> QuotaInputs:
    return inputs


def sample(inputs: QuotaInputs, seed: int, index: int) -> dict:
    """Replay configuration ``index`` on the trace; a configuration the trace cannot run is a row too."""
    config = configuration(inputs.space, seed, index)
    setup = inputs.setup
    tenants = tenants_for(setup, config)
    row = {**config, "tenants": [t.name for t in tenants],
           "nominal_gpus": [[t.quotas[p.model].nominal_gpus for p in setup.cluster.pools] for t in tenants]}
    try:
        result = simulate(setup.workload, setup.cluster, tenants, make_policy(config["policy"], PolicyOptions()),
                          quota_changes=setup.quota_changes, reclaim_grace_s=inputs.reclaim_grace_s)
    except InputError as exc:
        return row | {"status": exc.message[:300], **{k: float("nan") for k in FIGURES}, **{k: [] for k in PER_TENANT}}
    per = [result.tenants[t.name] for t in tenants]
    waits = result.jobs.wait_s if result.jobs is not None else np.array([result.overall.jct_p99_s])
    waits = waits[~np.isnan(waits)]
    return row | {
        "status": "ok", "utilization": round(result.overall.utilization, 6),
        "worst_guarantee_wait_s": round(max(f.guarantee_wait_max_s for f in per), 3),
        "worst_guarantee_violation_s": round(max(f.guarantee_violation_max_s for f in per), 3),
        "wait_p99_s": round(float(np.percentile(waits, 99)) if len(waits) else 0.0, 3),
        "jct_mean_s": round(result.overall.jct_mean_s, 3),
        "tenant_utilization": [round(f.utilization, 6) for f in per],
        "tenant_guarantee_wait_max_s": [round(f.guarantee_wait_max_s, 3) for f in per],
        "tenant_guarantee_violation_max_s": [round(f.guarantee_violation_max_s, 3) for f in per],
        "tenant_jct_p99_s": [round(f.jct_p99_s, 3) for f in per],
    }


FIGURES = ("utilization", "worst_guarantee_wait_s", "worst_guarantee_violation_s", "wait_p99_s", "jct_mean_s")
PER_TENANT = ("tenant_utilization", "tenant_guarantee_wait_max_s", "tenant_guarantee_violation_max_s",
              "tenant_jct_p99_s")


def pareto(rows: list[dict]) -> list[dict]:
    """The rows no other row beats: utilization at least as high, worst guarantee violation and p99
    wait at least as low, and one of them strictly better. Sorted by utilization, highest first."""
    ok = [r for r in rows if r["status"] == "ok"]
    pts = np.array([[-r["utilization"], r["worst_guarantee_violation_s"], r["wait_p99_s"]] for r in ok]).reshape(-1, 3)
    keep = [i for i in range(len(ok))
            if not np.any(np.all(pts <= pts[i], axis=1) & np.any(pts < pts[i], axis=1))]
    return sorted((ok[i] for i in keep), key=lambda r: (-r["utilization"], r["sample"]))


def best(rows: list[dict], max_guarantee_wait_s: float | None = None,
         max_wait_p99_s: float | None = None) -> dict | None:
    """The highest-utilization row within the user's limits (ties: lower p99 wait, then lower index)."""
    ok = [r for r in rows if r["status"] == "ok"
          and (max_guarantee_wait_s is None or r["worst_guarantee_wait_s"] <= max_guarantee_wait_s)
          and (max_wait_p99_s is None or r["wait_p99_s"] <= max_wait_p99_s)]
    return min(ok, key=lambda r: (-r["utilization"], r["wait_p99_s"], r["sample"]), default=None)


def quotas_yaml(setup: Setup, row: dict) -> str:
    """A row's quotas as the quotas YAML that ``gpufleet export kueue|slurm --quotas`` reads."""
    tenants = tenants_for(setup, {k: row[k] for k in ("mix", "lending", "borrowing")})
    items = []
    for t in tenants:
        item: dict = {"name": t.name, "nominal": {m: q.nominal_gpus for m, q in t.quotas.items()}}
        if any(q.borrowing_limit_gpus is not None for q in t.quotas.values()):
            item["borrowing_limit"] = {m: q.borrowing_limit_gpus for m, q in t.quotas.items()}
        if any(q.lending_limit_gpus is not None for q in t.quotas.values()):
            item["lending_limit"] = {m: q.lending_limit_gpus for m, q in t.quotas.items()}
        if t.weight != 1.0:
            item["weight"] = t.weight
        items.append(item)
    head = (f"# gpufleet sweep quotas: sample {row['sample']} (policy {row['policy']}, mix {row['mix']}, "
            f"lending {row['lending']}, borrowing {row['borrowing']}); utilization {row['utilization']:.4f}\n")
    return head + yaml.safe_dump({"tenants": items}, sort_keys=False)


def cluster_spec(setup: Setup) -> str:
    """The cluster as the ``--cluster NODESxGPUS:MODEL,...`` text ``export`` reads."""
    return ",".join(f"{p.nodes}x{p.gpus_per_node}:{p.model}" for p in setup.cluster.pools)


assert MILLI == 1000  # quotas are rounded to the milli-GPU above
