"""A multi-tenant GPU cluster scheduler (Kueue-style quotas, borrowing, reclaim) and its simulator.

A pure decider layer: it reads a snapshot of a cluster and returns decisions. File formats
(traces, quota files) are read by :mod:`gpufleet.services`.
"""

from gpufleet.scheduler.engine import Scheduler, run_to_end
from gpufleet.scheduler.kernel import Kernel, SimClock, WallClock
from gpufleet.scheduler.model import Cluster, Job, NodePool, QuotaChange, Tenant, TenantQuota, Workload
from gpufleet.scheduler.policies import POLICIES, Policy, PolicyOptions, make_policy
from gpufleet.scheduler.simulation import SimulationResult, simulate

__all__ = ["Cluster", "Job", "Kernel", "NodePool", "POLICIES", "Policy", "PolicyOptions", "QuotaChange",
           "Scheduler", "SimClock", "SimulationResult", "Tenant", "TenantQuota", "WallClock", "Workload",
           "make_policy", "run_to_end", "simulate"]
