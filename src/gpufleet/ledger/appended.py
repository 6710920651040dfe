"""Checking the events appended since a prefix of the chain was verified in full.

A full verification (:meth:`Ledger.verify`) hashes every event: seconds at a million. A long-lived
reader that keeps the result of one (the dashboard's Audit page, ``GET /v1/audit``) checks only what
was appended after it, in time proportional to the new events (:func:`check_appended`): that the
chain still passes through the verified prefix's last hash, and that every new event, its Merkle
leaf, the tree nodes it completed and the snapshots taken since are what a full verification would
find them to be.

What it does not check again is the verified prefix itself. A rewrite inside it that recomputes
every later hash changes the prefix's last hash, and shows here; one that does not (an edited event,
a forged snapshot or tree node of the prefix) shows only at the next full verification. Whoever shows
the result says so: which events were verified in full and when, which were checked as appended.
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select

from gpufleet.domain.chain import GENESIS_HASH
from gpufleet.ledger import merkle_store, snapshots
from gpufleet.ledger.schema import events
from gpufleet.ledger.store import Head, Ledger, VerifyReport


def check_appended(ledger: Ledger, seq: int, digest: str, head: Head) -> VerifyReport:
    """Events ``seq`` + 1 .. ``head.seq`` as the continuation of a chain verified in full through event
    ``seq``, whose hash was then ``digest``: event ``seq`` still has that hash; each new event has the
    hash of its content, links to the one before it (the first to ``digest``), is recorded no earlier,
    and has its Merkle leaf; every tree node they completed is the hash of its children, and the tree
    has no node past them; every snapshot past ``seq`` checks; the chain ends at ``head``.

    ``events_checked`` counts from the first event: ``seq`` plus the new events found good (all of them
    when ``ok``). Reads only events ``seq`` .. ``head.seq``: events stored past the head are left to a
    full verification (a writer may be appending them now)."""
    good = VerifyReport(True, head.seq, head.seq, head.hash)
    if head.seq < seq:
        return _bad(good, seq, head.seq + 1, f"the chain ends at event {head.seq}, but event {seq} was verified "
                                             "earlier: the ledger was cut since")
    found = ledger.conn.execute(select(events.c.hash, events.c.recorded_at).where(events.c.seq == seq)).first() \
        if seq else (GENESIS_HASH, "")
    if found is None or found[0] != digest:
        what = "is missing" if found is None else f"has the hash {found[0][:16]}..., not the {digest[:16]}... verified"
        return _bad(good, seq - 1, seq, f"event {seq} {what}: the ledger was rewritten at or before event {seq} "
                                        "since it was verified")
    report = _chain(ledger, seq, digest, found[1], head, good)
    if report.ok:
        report = _tree(ledger, seq, head, report)
    if report.ok:
        count, bad = snapshots.check_all(ledger.conn, after=seq)
        report = replace(report, snapshots_checked=count) if bad is None else replace(
            _bad(report, head.seq, *bad), snapshots_checked=count, bad_snapshot_seq=bad[0])
    return report


def _chain(ledger: Ledger, seq: int, digest: str, recorded: str, head: Head, good: VerifyReport) -> VerifyReport:
    """The new events' hashes, links, order and leaves (as :func:`gpufleet.ledger.store.walk_chain`)."""
    if head.seq == seq:
        return good if head.hash == digest else _bad(good, seq, seq, "the ledger head's hash is not the hash "
                                                                     f"of event {seq}")
    seg = ledger.segment(seq + 1, head.seq)
    if seg.bad is not None and seg.count == 0:  # the first new event is missing, or out of place
        return _bad(good, seq, *seg.bad)
    if seg.first_prev != digest:
        return _bad(good, seq, seq + 1, f"event {seq + 1} does not link to event {seq} (prev_hash differs)")
    if seg.first_recorded < recorded:
        return _bad(good, seq, seq + 1, f"event {seq + 1} is recorded before event {seq}")
    if seg.bad is not None:
        return _bad(good, seq + seg.count, *seg.bad)
    if head.hash != seg.last_hash:
        return _bad(good, head.seq, head.seq, f"the ledger head's hash is not the hash of event {head.seq}")
    if seg.bad_leaf is not None:
        return replace(_bad(good, head.seq, *seg.bad_leaf), bad_tree_node=(0, seg.bad_leaf[0] - 1))
    return good


def _tree(ledger: Ledger, seq: int, head: Head, report: VerifyReport) -> VerifyReport:
    """Every Merkle node the new leaves completed, and the tree's shape past the verified one."""
    bad = merkle_store.first_bad_parent(ledger.conn.exec_driver_sql(merkle_store.grown_sql(seq, head.seq)).all())
    if bad is None:
        bad = merkle_store.grown_shape_problem(ledger.conn, seq, head.seq)
    if bad is None:
        return report
    (level, idx), reason = bad
    return replace(_bad(report, head.seq, (idx << level) + 1, reason), bad_tree_node=(level, idx))


def _bad(report: VerifyReport, checked: int, first_bad_seq: int, reason: str) -> VerifyReport:
    return replace(report, ok=False, events_checked=checked, first_bad_seq=first_bad_seq, reason=reason)
