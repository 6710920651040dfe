"""The head state a long-lived process (the server) reads from: kept in memory, brought forward in place.

Folding the head state costs seconds at a million events, and a server answers most reads from it
(every request's access check, the latest status). Two folds are kept per process:

* the *published* fold, which readers hold while they use it, and which is never changed while any
  reader holds it;
* the *spare*, the fold published before it. When the head moves, the spare, once no reader holds it
  (none can take it any more), is brought forward in place over the events appended since
  (:meth:`Ledger.caught_up`: milliseconds), and published. The fold it replaces becomes the spare.

When both folds are held (concurrent requests), the advance waits for one to be released, at most
as long as the last fold from a snapshot took: requests hold a fold for milliseconds, a fold costs
seconds at scale, and without the wait concurrent requests under writes would each fold afresh and
hold that fold longer still. Only when that is impossible (no fold freed in time, a void or a late
record among the new events, more than ``CATCH_UP_MAX`` of them) is the state folded again from the
newest snapshot. A reader never sees a fold older than the head it read, and never a fold being changed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Engine

from gpufleet.domain.state import FleetState
from gpufleet.ledger.store import Head, Ledger


@dataclass(eq=False)
class HeadFold:
    """The fold of events 1..``seq`` (``hash`` is event ``seq``'s); ``readers`` hold it now."""

    seq: int
    hash: str
    state: FleetState
    readers: int = 0


class HeadStates:
    """The published and spare head folds of one process; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the two folds and their reader counts
        self._released = threading.Condition(self._lock)  # a reader let go of a fold
        self._fold_s = 0.0  # how long the last fold from a snapshot took: the longest wait for a free fold
        self._advancing = threading.Lock()  # one catch-up or fold at a time: the others would repeat it
        self._published: HeadFold | None = None
        self._spare: HeadFold | None = None

    @contextlib.contextmanager
    def reading(self, engine: Engine) -> Iterator[HeadFold]:
        """Hold the fold of the head as it is now (or newer) until the block ends; do not change it."""
        fold = self._acquire(engine)
        try:
            yield fold
        finally:
            with self._lock:
                fold.readers -= 1
                if fold.readers == 0:
                    self._released.notify_all()

    def _acquire(self, engine: Engine) -> HeadFold:
        with engine.connect() as conn:
            head = Ledger(conn).head()
        if (fold := self._take(head)) is not None:
            return fold
        with self._advancing, engine.connect() as conn:
            ledger = Ledger(conn)
            head = ledger.head()  # again: another thread may have advanced while this one waited
            if (fold := self._take(head)) is not None:
                return fold
            fold = HeadFold(head.seq, head.hash, self._advanced(ledger, head), readers=1)
            with self._lock:
                self._spare = self._published if self._published is not None else self._spare
                self._published = fold
            return fold

    def _take(self, head: Head) -> HeadFold | None:
        """The published fold, held, if it is the fold of ``head``."""
        with self._lock:
            fold = self._published
            if fold is None or (fold.seq, fold.hash) != (head.seq, head.hash):
                return None
            fold.readers += 1
            return fold

    def _advanced(self, ledger: Ledger, head: Head) -> FleetState:
        """The state at ``head``: a free fold brought forward in place, else a fold from the newest snapshot."""
        free = self._free()
        if free is not None:
            state = ledger.caught_up((free.seq, free.hash, free.state), head)
            if state is not None:
                return state
        started = time.perf_counter()
        state = ledger.state_at(head.seq)
        self._fold_s = time.perf_counter() - started
        return state

    def _free(self) -> HeadFold | None:
        """A fold no reader holds, taken out (so none can take it while it changes): the spare first,
        else the published one; waiting up to ``_fold_s`` for one to be released."""
        with self._released:
            deadline = time.monotonic() + self._fold_s
            while True:
                for name in ("_spare", "_published"):
                    fold = getattr(self, name)
                    if fold is not None and fold.readers == 0:
                        setattr(self, name, None)
                        return fold
                left = deadline - time.monotonic()
                if left <= 0 or (self._spare is None and self._published is None):
                    return None
                self._released.wait(left)
