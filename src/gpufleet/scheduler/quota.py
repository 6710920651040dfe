"""Quota arithmetic for one GPU model within a cohort, after Kueue's ClusterQueue rules.

All amounts are milli-GPUs. For a tenant ``t``:

- ``lendable[t] = min(lending_limit[t], nominal[t])`` if a limit is set, else ``nominal[t]``: what ``t``
  puts in the cohort's pool (the minimum matters when a quota change lowers the nominal quota);
- ``guaranteed[t] = nominal[t] - lendable[t]``: what no other tenant can ever use;
- usage above ``guaranteed[t]`` is drawn from the cohort pool, so the cohort condition is
  ``sum_k max(0, usage[k] - guaranteed[k]) <= sum_k lendable[k]``;
- a tenant borrows when its usage exceeds its nominal quota, and may not exceed
  ``nominal[t] + borrowing_limit[t]`` (no limit where unset).
"""

from __future__ import annotations

def lendable(nominal: int, lending_limit: int | None) -> int:
    return nominal if lending_limit is None else min(lending_limit, nominal)


def guaranteed(nominal: int, lending_limit: int | None) -> int:
    return nominal - lendable(nominal, lending_limit)


def within_borrowing_limit(usage: int, nominal: int, borrowing_limit: int | None) -> bool:
    return borrowing_limit is None or usage <= nominal + borrowing_limit


def cohort_fits(usages: list[int], nominals: list[int], lending_limits: list[int | None]) -> bool:
    """Whether the cohort's members' usages fit in their guarantees plus the shared pool."""
    total = pool = 0
    for usage, nominal, limit in zip(usages, nominals, lending_limits):
        keep = guaranteed(nominal, limit)
        total += drawn(usage, keep)
        pool += nominal - keep
    return total <= pool


def drawn(usage: int, guaranteed: int) -> int:
    """What ``usage`` draws from the cohort's pool: the part above the tenant's guarantee."""
    return max(0, usage - guaranteed)


def borrowed(usage: int, nominal: int) -> int:
    """How much of ``usage`` is above the nominal quota (0 when within it)."""
    return max(0, usage - nominal)
