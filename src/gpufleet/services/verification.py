"""The ledger's integrity as a long-lived process (the server) knows it: the last full verification on
record, then the events appended since, checked as they come (docs/dashboard.md, "Audit").

A full verification hashes every event (seconds at a million), so a page or an API read does not run
one each time the head moves. Instead:

* a **full verification** is a ``verify`` job (the Audit page's button, ``POST /v1/ledger/verify``):
  its result, on its row of the jobs table, is read by every server process; or one this process ran
  itself (``GET /v1/audit`` with none on record, :meth:`LedgerChecks.verify_in_full`);
* each process then checks the events **appended since** when it next reads the status
  (:func:`gpufleet.ledger.appended.check_appended`: their hashes, links, leaves, the tree nodes they
  completed, the snapshots taken since), from where it last checked, at most ``INCREMENT_MAX`` events
  at a time; past that, the events stay unchecked until the next full verification.

A status never claims more than was checked: it names the events verified in full and when, those
checked as appended, and those not checked. A problem found stays the answer until a newer full
verification passes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime

from gpufleet.domain.chain import format_instant
from gpufleet.ledger.appended import check_appended
from gpufleet.ledger.store import Ledger, VerifyReport
from gpufleet.services.fleet import FleetService
from gpufleet.services.jobs import JobStore

INCREMENT_MAX = 50_000  # events checked as appended in one read, at most (about half a second)
_REPORT_FIELDS = {f.name for f in fields(VerifyReport)}


@dataclass(frozen=True)
class FullVerification:
    """A verification of the whole chain: its report, when it finished, and the job that ran it (None:
    this server process, for an audit)."""

    report: VerifyReport
    finished_at: str
    job_id: str | None = None
    principal: str | None = None

    def source(self) -> str:
        if self.job_id is None:
            return f"by this server at {self.finished_at}"
        return f"by verify job {self.job_id} of {self.principal}, finished {self.finished_at}"


@dataclass(frozen=True)
class LedgerStatus:
    """What is known of the chain's integrity at head ``head_seq``: events 1..``full.report.head_seq``
    verified in full (``full``; None: no full verification on record), events after it through
    ``checked_seq`` checked as they were appended (last at ``checked_at``), the rest not checked;
    ``problem``: the first problem found, by either (None: none found in what was checked)."""

    head_seq: int
    head_hash: str
    full: FullVerification | None
    checked_seq: int = 0
    checked_at: str | None = None
    problem: VerifyReport | None = None

    @property
    def verdict(self) -> str:
        """``failed`` (a problem found), ``verified`` (every event checked, none found), ``partly`` (some
        events past ``checked_seq`` not checked) or ``unverified`` (no full verification on record)."""
        if self.problem is not None:
            return "failed"
        if self.full is None:
            return "unverified"
        return "verified" if self.checked_seq == self.head_seq else "partly"

    @property
    def full_seq(self) -> int:
        return 0 if self.full is None else self.full.report.head_seq

    @property
    def unchecked(self) -> int:
        """Events of the head not checked at all."""
        return 0 if self.verdict == "failed" else self.head_seq - self.checked_seq

    def report(self) -> VerifyReport | None:
        """As :meth:`Ledger.verify` puts it: the problem, or the events checked when every one was; None
        when some are not checked."""
        if self.problem is not None:
            return self.problem
        if self.verdict != "verified":
            return None
        return replace(self.full.report, events_checked=self.head_seq, head_seq=self.head_seq,
                       head_hash=self.head_hash)

    def describe(self) -> str:
        """What was checked, and when, in a sentence or two."""
        if self.full is None:
            return f"no full verification is on record: none of the {self.head_seq:,} events is checked"
        full = f"events 1..{self.full_seq:,} verified in full {self.full.source()}"
        if self.full.report.ok is False:
            return f"the full verification {self.full.source()} found a problem at event {self.problem.first_bad_seq}"
        since = ""
        if self.checked_seq > self.full_seq:
            since = (f"; {_events(self.full_seq + 1, self.checked_seq)} checked as they were appended (hashes, "
                     f"links, Merkle leaves and the nodes they completed, snapshots since; last at {self.checked_at})")
        if self.problem is not None:
            return (f"{full}{since}; checking the events appended since, at {self.checked_at}, found a problem at "
                    f"event {self.problem.first_bad_seq}")
        if self.unchecked:
            since += (f"; {_events(self.checked_seq + 1, self.head_seq)} not checked (more than "
                      f"{INCREMENT_MAX:,} since the last check: verify the whole ledger again)")
        return full + since


def _events(first: int, last: int) -> str:
    return f"event {first:,}" if first == last else f"events {first:,}..{last:,}"


def from_job(job: dict) -> FullVerification | None:
    """The full verification of a succeeded ``verify`` job (its row as :class:`JobStore` gives it)."""
    result = job.get("result")
    if not isinstance(result, dict) or not {"ok", "events_checked", "head_seq", "head_hash"} <= result.keys():
        return None
    values = {k: v for k, v in result.items() if k in _REPORT_FIELDS}
    if isinstance(values.get("bad_tree_node"), list):
        values["bad_tree_node"] = tuple(values["bad_tree_node"])
    if not values["ok"] and not values.get("reason") and result.get("replay_problems"):
        values["reason"] = "the replay found: " + "; ".join(result["replay_problems"])
        values["first_bad_seq"] = values.get("first_bad_seq") or values.get("head_seq")
    return FullVerification(VerifyReport(**values), job["updated_at"], job["job_id"], job["principal"])


class LedgerChecks:
    """One process's view of the ledger's integrity (thread-safe): the newest full verification (a job's
    on record, or its own) and how far past it the appended events are checked."""

    def __init__(self, fleet: FleetService, store: JobStore | None = None):
        self.fleet = fleet
        self.store = store if store is not None else JobStore(fleet)
        self._lock = threading.Lock()  # one check of appended events at a time
        self._full_lock = threading.Lock()  # one full verification at a time
        self._own: FullVerification | None = None
        self._since: LedgerStatus | None = None  # the last status computed: its full verification and progress

    def newest_full(self) -> FullVerification | None:
        """The newest full verification: the last succeeded verify job's, or this process's own."""
        job = self.store.latest("verify")
        found = None if job is None else from_job(job)
        own = self._own
        if own is not None and (found is None or own.finished_at > found.finished_at):
            return own
        return found

    def status(self) -> LedgerStatus:
        """The status at the ledger's head now, checking the events appended since the last check."""
        full = self.newest_full()
        with self._lock, self.fleet.reader.connect() as conn:
            ledger = Ledger(conn)
            head = ledger.head()
            if full is None:
                return LedgerStatus(head.seq, head.hash, None)
            if not full.report.ok:
                return LedgerStatus(head.seq, head.hash, full, full.report.events_checked, full.finished_at,
                                    full.report)
            last = self._since
            if last is None or last.full != full:
                last = LedgerStatus(full.report.head_seq, full.report.head_hash, full, full.report.head_seq,
                                    full.finished_at)
            if last.problem is None and (last.head_seq, last.head_hash) != (head.seq, head.hash):
                if head.seq - last.checked_seq > INCREMENT_MAX:
                    return replace(last, head_seq=head.seq, head_hash=head.hash)
                found = check_appended(ledger, last.checked_seq, last.head_hash, head)
                now = format_instant(datetime.now(UTC))
                last = replace(last, head_seq=head.seq, head_hash=head.hash, checked_at=now,
                               checked_seq=head.seq if found.ok else last.checked_seq,
                               problem=None if found.ok else found)
                self._since = last
            return replace(last, head_seq=head.seq, head_hash=head.hash)

    def verify_in_full(self) -> FullVerification:
        """Verify the whole chain now, in this process (one such run at a time: the others wait for its
        result), and keep it as this process's own full verification."""
        started = self._own
        with self._full_lock:
            if self._own is not started and self._own is not None:
                return self._own  # another thread finished one while this one waited
            report = self.fleet.verify()
            self._own = FullVerification(report, format_instant(datetime.now(UTC)))
            return self._own

    def for_audit(self) -> tuple[VerifyReport, str]:
        """The verification an audit reports, and how it was checked: the status, after a full verification
        now when some events are not checked (none on record, or too many appended since)."""
        status = self.status()
        if status.report() is None:
            own = self.verify_in_full()
            status = self.status()
            if status.report() is None:  # the head ran far ahead meanwhile: the verification just made
                return own.report, f"events 1..{own.report.head_seq:,} verified in full {own.source()}"
        return status.report(), status.describe()
