"""A small discrete-event kernel with an injected clock (after SimPy's core).

The kernel is a heap of ``(time_s, priority, seq, action, args)``; ``seq`` makes the order
of equal-time, equal-priority events the order they were scheduled, so a run is
deterministic. The clock decides what "advancing to t" means: :class:`SimClock` jumps,
:class:`WallClock` sleeps until the wall time catches up. The scheduler code is the same
in both: there is no ``if simulate`` anywhere.
"""

from __future__ import annotations

import heapq
import time
from itertools import count
from typing import Any, Callable, Protocol

# Priorities of events at the same instant: capacity comes back first, then quotas change,
# then work arrives, and the scheduler decides last, on everything that happened at that instant.
RELEASE, QUOTA, ARRIVAL, DECIDE = 0, 1, 2, 3


class Clock(Protocol):
    def now(self) -> float: ...
    def advance_to(self, at_s: float) -> None: ...


class SimClock:
    """Simulated time: advancing is instantaneous."""

    def __init__(self, start_s: float = 0.0):
        self._now = start_s

    def now(self) -> float:
        return self._now

    def advance_to(self, at_s: float) -> None:
        self._now = at_s


class WallClock:
    """Real time, optionally sped up ``speed`` times: advancing sleeps until the wall clock gets there."""

    def __init__(self, speed: float = 1.0, sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic):
        self.speed, self._sleep, self._monotonic = speed, sleep, monotonic
        self._origin = monotonic()

    def now(self) -> float:
        return (self._monotonic() - self._origin) * self.speed

    def advance_to(self, at_s: float) -> None:
        wait_s = at_s / self.speed - (self._monotonic() - self._origin)
        if wait_s > 0:
            self._sleep(wait_s)


class Kernel:
    """Runs scheduled actions in time order on a clock."""

    def __init__(self, clock: Clock | None = None):
        self.clock = clock or SimClock()
        self._heap: list[tuple[float, int, int, Callable[..., Any], tuple]] = []
        self._seq = count()
        self.steps = 0

    @property
    def now(self) -> float:
        return self.clock.now()

    def schedule(self, at_s: float, priority: int, action: Callable[..., Any], *args: Any) -> None:
        heapq.heappush(self._heap, (at_s, priority, next(self._seq), action, args))

    def step(self) -> None:
        at_s, _, _, action, args = heapq.heappop(self._heap)
        self.clock.advance_to(at_s)
        self.steps += 1
        action(*args)

    @property
    def pending(self) -> int:
        """How many events are scheduled and not yet run."""
        return len(self._heap)

    def run(self, until_s: float | None = None, max_steps: int | None = None) -> None:
        """Run until no event is left, the next one is after ``until_s``, or ``max_steps`` have run."""
        heap, last = self._heap, None if max_steps is None else self.steps + max_steps
        while heap and (until_s is None or heap[0][0] <= until_s) and (last is None or self.steps < last):
            self.step()
