"""What-if views of the fleet, for comparing what happened with what could have happened."""

from __future__ import annotations

import copy
from collections import Counter

from gpufleet.domain.state import FleetState
from gpufleet.domain.types import LotStatus
from gpufleet.errors import InputError


def replanned(then: FleetState, now: FleetState, undo_swaps: bool) -> FleetState:
    """The fleet on ``then.as_of`` with everything recorded since known in advance.

    Holdings (warehouse, installs, loans) come from ``then``. Every lot recorded by now is
    included, in its state on ``then.as_of`` if it existed then, else on order, at its owner
    now, or at its original owner with ``undo_swaps`` (as if no delivery slot had been
    swapped). Sites (with their slips), parties and demand are as recorded now. ``then`` must
    precede every swap.
    """
    if then.swaps:
        raise InputError(f"the what-if must start before the swaps ({', '.join(sorted(then.swaps))})",
                         field="as_of")
    world = copy.deepcopy(then)
    world.entities, world.persons, world.roles = copy.deepcopy(now.entities), dict(now.persons), set(now.roles)
    world.models, world.sites, world.demand = copy.deepcopy(now.models), copy.deepcopy(now.sites), dict(now.demand)
    world.pos = copy.deepcopy(now.pos)
    world.lots = {}
    for lot_id, lot in now.lots.items():
        mine = copy.deepcopy(then.lots.get(lot_id, lot))
        mine.owner = (lot.original_owner or lot.owner) if undo_swaps else lot.owner
        if lot_id not in then.lots:
            mine.status, mine.shipped_on, mine.delivered_on = LotStatus.ON_ORDER, None, None
        mine.planned_date = lot.planned_date
        world.lots[lot_id] = mine
    world.on_order, world.in_transit = Counter(), Counter()
    world.acquired = Counter(then.acquired)
    for lot_id, lot in world.lots.items():
        key = (lot.owner, lot.model)
        if lot.status is LotStatus.ON_ORDER:
            world.on_order[key] += lot.gpus
        elif lot.status is LotStatus.IN_TRANSIT:
            world.in_transit[key] += lot.gpus
        if lot_id not in then.lots:
            world.acquired[key] += lot.gpus
    return world
