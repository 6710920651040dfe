"""Readings of the fleet on given days, kept per ledger prefix and reused while the chain proves them
unchanged: a long-lived process reads again, after a write, only the days that write can change.

A reading of day D over the events 1..S holds over 1..K (K >= S, the same chain up to S) when no event
S+1..K is effective on or before D: a fold as of D reads only events effective by D, and a void is
stored with the date of the event it voids. A write dated today leaves every earlier day's reading as
it was; a back-dated one, or a void, reaches back to its own date.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from datetime import date
from typing import Generic, TypeVar

from gpufleet.domain.state import FleetState
from gpufleet.ledger.store import Ledger

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
Prefix = tuple[int, str | None]  # (seq, chain hash at seq): the events 1..seq, as that hash names them

KEPT = 16  # (what, prefix) entries a service keeps


def prefix_of(ledger: Ledger, seq: int) -> Prefix:
    return seq, ledger.hash_at(seq)


def unchanged_before(ledger: Ledger, kept: Prefix, known: int) -> date:
    """The first day a reading over the prefix ``kept`` may differ over 1..``known``: ``date.max`` if no
    event was added, ``date.min`` if ``kept`` is longer than ``known`` or no longer the chain's."""
    seq, digest = kept
    if seq > known or digest is None or ledger.hash_at(seq) != digest:
        return date.min
    since = ledger.first_effective_after(seq, known)
    return date.max if since is None else since


class PrefixTable(Generic[K, V]):
    """Readings (key -> value) kept per (what, ledger prefix), the ``limit`` most recently kept; thread-safe.
    A reading is a fact about its prefix: readings kept for the same (what, prefix) are merged."""

    def __init__(self, limit: int = KEPT) -> None:
        self.lock = threading.Lock()
        self.limit = limit
        self.kept: OrderedDict[tuple[Hashable, Prefix], dict[K, V]] = OrderedDict()

    def longest(self, what: Hashable, known: int) -> tuple[Prefix, dict[K, V]] | None:
        """The readings of ``what`` kept over the longest prefix no longer than ``known``."""
        with self.lock:
            found = [p for w, p in self.kept if w == what and p[0] <= known]
            return None if not found else (p := max(found), self.kept[(what, p)])

    def of(self, what: Hashable, prefix: Prefix) -> dict[K, V]:
        """A copy of the readings of ``what`` kept over exactly ``prefix``."""
        with self.lock:
            return dict(self.kept.get((what, prefix), {}))

    def keep(self, what: Hashable, prefix: Prefix, readings: dict[K, V]) -> None:
        with self.lock:
            key = (what, prefix)
            self.kept[key] = {**self.kept.get(key, {}), **readings}
            self.kept.move_to_end(key)
            while len(self.kept) > self.limit:
                self.kept.popitem(last=False)


class DatedReadings(Generic[T]):
    """``take(fleet on day, day)`` per day, kept per (what, prefix) (:class:`PrefixTable`). ``what`` must name
    everything ``take`` depends on besides the fleet and the day (the entities shown, the sites), and what
    ``take`` returns must share no mutable object with the fold: it is kept while the fold moves on."""

    def __init__(self, limit: int = KEPT) -> None:
        self.table: PrefixTable[date, T] = PrefixTable(limit)

    def read(self, ledger: Ledger, what: Hashable, days: Sequence[date], take: Callable[[FleetState, date], T],
             known: int, whole: FleetState | None = None) -> list[T]:
        """The readings of ``days`` (ascending) over the events 1..``known``; ``whole``: their fold at
        every date, if the caller holds it (:meth:`Ledger.states_on`)."""
        got: dict[date, T] = {}
        base = self.table.longest(what, known)
        if base is not None:
            before = unchanged_before(ledger, base[0], known)
            got = {d: base[1][d] for d in days if d in base[1] and d < before}
        missing = sorted(d for d in set(days) if d not in got)
        for day, fleet in ledger.states_on(missing, known, whole):
            got[day] = take(fleet, day)
        self.table.keep(what, prefix_of(ledger, known), got)
        return [got[d] for d in days]
