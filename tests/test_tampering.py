"""The tamper table (docs/ledger.md), on SQLite and PostgreSQL: what ``verify`` finds by default, what
an anchor published earlier finds (``--expect SEQ:HASH``), and what ``--replay`` adds.

The ledger: 11 events (``test_ledger.story``) with snapshots at events 5, 7 and 10. The anchor is the
head as it was published after event 9; events 10 and 11 were recorded legitimately after it, so
the anchor must survive them. Each attacker has the database's password and drops the guards.
"""

from __future__ import annotations

import warnings

import pytest

import tampering as t
from gpufleet.ledger.snapshots import SnapshotDistrusted
from gpufleet.ledger.store import Anchor, Ledger
from gpufleet.services.fleet import FleetService
from test_ledger import story

ANCHORED_AT = 9
SNAPSHOTS = [5, 7, 10]

# attack, (default verify: first bad seq, reason), (with the anchor: first bad seq, reason), caught by --replay
# None: the ledger verifies. A rewrite anyone could redo (the hashes are no secret) is found only by an
# anchor kept outside the database, and only for the events up to it.
TABLE = [
    pytest.param(t.edit_payload(7), (7, "altered"), (7, "altered"), True, id="edit-payload"),
    pytest.param(t.edit_column("actor", "mallory", 4), (4, "altered"), (4, "altered"), True, id="edit-actor"),
    pytest.param(t.edit_column("effective_date", "2024-01-02", 5), (5, "altered"), (5, "altered"), True,
                 id="edit-effective-date"),
    pytest.param(t.delete_event(6), (6, "missing"), (6, "missing"), True, id="delete-middle-event"),
    pytest.param(t.swap_contents(7, 8), (7, "does not link"), (7, "does not link"), True, id="swap-two-events"),
    pytest.param(t.swap_seqs(8, 9), (8, "does not link"), (8, "does not link"), True, id="reorder-two-events"),
    pytest.param(t.insert_forged_by_renumbering(5), (6, "does not link"), (6, "does not link"), True,
                 id="forged-event-inserted-renumbering"),
    pytest.param(t.truncate(10), (11, "head records event 11"), (11, "head records"), True,
                 id="truncate-last-event"),
    pytest.param(t.head_seq_minus_one, (11, "head records event 10"), (11, "head records"), True,
                 id="head-seq-edited"),
    pytest.param(t.head_hash_edited, (11, "head's hash"), (11, "head's hash"), True, id="head-hash-edited"),
    pytest.param(t.truncate(8, rebuild_head=True), (10, "snapshot at event 10 is past the end"),
                 (9, "event 9 is not in the ledger"), True, id="truncate-rebuild-head"),
    pytest.param(t.truncate(8, rebuild_head=True, drop_snapshots=True), None, (9, "event 9 is not in the ledger"),
                 False, id="truncate-rebuild-head-and-snapshots"),
    pytest.param(t.consistent_rewrite(7, reseal=False), (7, "snapshot at event 7 belongs to another"),
                 (9, "rewritten at or before event 9"), True, id="consistent-rewrite-leaving-snapshots"),
    pytest.param(t.consistent_rewrite(7), None, (9, "rewritten at or before event 9"), False,
                 id="consistent-rewrite-before-anchor"),
    pytest.param(t.consistent_rewrite(10), None, None, False, id="consistent-rewrite-after-anchor"),
    pytest.param(t.append_forged, None, None, False, id="forged-event-appended"),
    pytest.param(t.edit_last_snapshot, (10, "snapshot at event 10 was altered"),
                 (10, "snapshot at event 10 was altered"), True, id="snapshot-edited"),
    pytest.param(t.forge_last_snapshot_with_its_digest, None, None, True, id="snapshot-forged-digest-recomputed"),
]


def build(engine) -> Anchor:
    """The ledger, and the anchor published when its head was event 9."""
    drafts = story().drafts()
    with engine.begin() as conn:
        Ledger(conn, snapshot_every=1).append(drafts[:ANCHORED_AT])
    with engine.connect() as conn:
        head = Ledger(conn).head()
    with engine.begin() as conn:
        Ledger(conn, snapshot_every=1).append(drafts[ANCHORED_AT:])
    with engine.connect() as conn:
        assert t.snapshot_seqs(conn) == SNAPSHOTS
    return Anchor(head.seq, head.hash)


def outcome(report) -> tuple[int, str] | None:
    return None if report.ok else (report.first_bad_seq, report.reason)


def found(expected, actual) -> bool:
    if expected is None or actual is None:
        return expected == actual
    return actual[0] == expected[0] and expected[1] in actual[1]


@pytest.mark.parametrize(("attack", "by_default", "with_anchor", "by_replay"), TABLE)
def test_the_tamper_table(engine, attack, by_default, with_anchor, by_replay):
    anchor = build(engine)
    service = FleetService(engine)
    assert service.verify([anchor]).ok, "the anchor survives the legitimate writes after it"
    with engine.begin() as conn:
        t.disable_guards(conn)
        attack(conn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SnapshotDistrusted)
        default, anchored = service.verify(), service.verify([anchor])
        replayed = default.ok and not service.replay().ok
    assert found(by_default, outcome(default)), outcome(default)
    assert found(with_anchor, outcome(anchored)), outcome(anchored)
    assert (not default.ok or replayed) == by_replay


@pytest.mark.parametrize("anchor", [
    Anchor(ANCHORED_AT, "0" * 64), Anchor(0, "f" * 64), Anchor(12, "0" * 64), Anchor(None, "e" * 64),
], ids=["wrong-hash", "genesis-with-a-wrong-hash", "past-the-head", "head-hash-never-seen"])
def test_an_anchor_that_the_ledger_never_had_fails(sqlite_engine, anchor):
    build(sqlite_engine)
    report = FleetService(sqlite_engine).verify([anchor])
    assert not report.ok and report.anchors_checked == 0, report


def test_every_anchor_along_the_chain_holds_and_an_old_head_hash_too(sqlite_engine):
    build(sqlite_engine)
    service = FleetService(sqlite_engine)
    chain = [Anchor(e.seq, e.hash) for e in service.events()]
    report = service.verify([Anchor(0, "0" * 64), *chain, Anchor(None, chain[3].hash)])
    assert report.ok and report.anchors_checked == len(chain) + 2
    assert report.snapshots_checked == len(SNAPSHOTS)


def test_an_event_that_no_longer_validates_is_named_not_an_internal_error(sqlite_engine):
    """An event written under looser bounds (an older version took 10^12 GPUs) with a whole chain:
    reading it back is a LedgerCorrupt naming the event (exit 1), not a bare validation error (exit 70)."""
    from sqlalchemy import text

    from gpufleet.errors import LedgerCorrupt

    build(sqlite_engine)
    with sqlite_engine.begin() as conn:
        t.disable_guards(conn)
        seq = conn.execute(text("SELECT min(seq) FROM events WHERE type = 'gpus_installed'")).scalar_one()
        payload = t.row(conn, seq)["payload"].replace('"gpus":100', '"gpus":1000000000000')
        assert "1000000000000" in payload
        conn.execute(text("UPDATE events SET payload = :p WHERE seq = :s"), {"p": payload, "s": seq})
        t._rehash(conn, seq)
        conn.execute(text("DELETE FROM snapshots"))
    service = FleetService(sqlite_engine)
    assert service.verify().ok  # the chain is whole: only the rules changed
    with pytest.raises(LedgerCorrupt, match=f"event {seq} \\(gpus_installed\\) does not pass today's validation: "
                                            "gpus"):
        service.state()
