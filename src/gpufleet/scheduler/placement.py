"""Placing a gang job on nodes (numpy over the free capacity of one pool's nodes).

A job that fits on one node goes to the node with the least free capacity that still holds
it (best fit, lowest index on ties), which keeps whole nodes free for large jobs. A job
larger than a node takes whole free nodes (lowest index first) and puts the remainder on
the best-fitting other node. Capacity is counted in milli-GPUs per node: fractional jobs
share a node's GPUs without modelling which GPU of the node they sit on.
"""

from __future__ import annotations

import numpy as np

Placement = list[tuple[int, int]]  # (node index, milli-GPUs taken on it)


def place(free: np.ndarray, lo: int, hi: int, node_milli: int, milli: int) -> Placement | None:
    """Nodes for ``milli`` milli-GPUs among ``free[lo:hi]`` (nodes of ``node_milli`` each), or None."""
    if hi - lo == 1:  # pooled capacity: no numpy for one node
        return [(lo, milli)] if free[lo] >= milli else None
    pool = free[lo:hi]
    if milli <= node_milli:
        node = _best_fit(pool, milli)
        return None if node is None else [(lo + node, milli)]
    whole, rest = divmod(milli, node_milli)
    empty = np.flatnonzero(pool == node_milli)
    if len(empty) < whole:
        return None
    taken = [(lo + int(n), node_milli) for n in empty[:whole]]
    if not rest:
        return taken
    masked = pool.copy()
    masked[empty[:whole]] = -1
    node = _best_fit(masked, rest)
    return None if node is None else taken + [(lo + node, rest)]


def _best_fit(pool: np.ndarray, milli: int) -> int | None:
    """The node with the least free capacity that holds ``milli`` (the lowest index on ties), or None."""
    # The slack of a node too small is negative, and read as unsigned it is larger than any other.
    node = int((pool - milli).view(np.uint64).argmin())
    return node if pool[node] >= milli else None
