"""End-to-end tests of the ``gpufleet`` command, run as a real subprocess on an SQLite file.

Every CLI call costs about a second (interpreter start and imports), so one loaded
ledger is built per module and copied (SQLite backup API) for each test that writes.
Every call made through :func:`run` also checks that no traceback leaks to the user.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine

import tampering
from gpufleet.domain.chain import GENESIS_HASH, event_hash

GPUFLEET = Path(sys.executable).parent / "gpufleet"

# Effective dates: registrations 2024-01-01, PO 01-05, l1 delivered 03-02, installed 03-05,
# lent 04-01. l2 and l3 stay on order. Site s2 has room for everyday installs.
BASE_SCENARIO = """\
gpufleet: 1
name: cli-base
start: 2024-01-01
sources: {1: "https://example.org"}
entities:
  - {entity: a, name: A}
  - {entity: b, name: B, source: [1]}
gpu_models:
  - {model: h100, name: H100, watts: 700, memory_gb: 80}
sites:
  - site: s1
    name: S1
    owner: a
    pue: 1.2
    capacity:
      - {step: s1-a, online_date: 2024-02-01, slots: 100, mw: 0.1}
  - site: s2
    name: S2
    owner: a
    capacity:
      - {step: s2-a, online_date: 2024-01-01, slots: 1000, mw: 1.0}
purchase_orders:
  - po: p1
    buyer: a
    vendor: nvidia
    model: h100
    unit_price_usd: 30000
    on: 2024-01-05
    lots:
      - {lot: l1, gpus: 100, planned_date: 2024-03-01}
      - {lot: l2, gpus: 50, planned_date: 2024-06-01}
      - {lot: l3, gpus: 20, planned_date: 2024-07-01}
events:
  - {type: lot_delivered, lot: l1, on: 2024-03-02}
  - {type: gpus_installed, owner: a, model: h100, site: s1, gpus: 100, on: 2024-03-05}
  - {type: loan_opened, loan: ln1, lender: a, borrower: b, model: h100, site: s1, gpus: 40, end_date: 2024-06-01, fee_usd_per_gpu_hour: 2.0, on: 2024-04-01}
"""
BASE_TYPES = [
    "entity_registered", "entity_registered", "gpu_model_registered", "site_registered", "site_registered",
    "purchase_order_placed", "lot_delivered", "gpus_installed", "loan_opened",
]
BASE_EVENTS = len(BASE_TYPES)


def run(*args: object, db: Path | str | None = None, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``gpufleet [--db DB] ARGS...`` as a subprocess; never lets a traceback through."""
    cmd = [str(GPUFLEET)]
    if db is not None:
        cmd += ["--db", str(db)]
    cmd += [str(a) for a in args]
    full_env = {k: v for k, v in os.environ.items() if k not in ("GPUFLEET_DB", "GPUFLEET_DEBUG")}
    full_env.update(env or {})
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=full_env,
                          cwd=cwd or (Path(db).parent if db is not None else None), timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout, proc.stdout
    return proc


def ok(*args: object, db: Path | str | None = None, **kw) -> subprocess.CompletedProcess:
    proc = run(*args, db=db, **kw)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return proc


def copy_db(src: Path, dst: Path) -> Path:
    """A consistent copy of an SQLite ledger (WAL included), via the backup API."""
    with sqlite3.connect(src) as s, sqlite3.connect(dst) as d:
        s.backup(d)
    s.close()
    d.close()
    return dst


def event_count(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        con.close()


def event_types(db: Path, after: int = 0) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return [t for (t,) in con.execute("SELECT type FROM events WHERE seq > ? ORDER BY seq", (after,))]
    finally:
        con.close()


def stored_head(db: Path) -> tuple[int, str]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT seq, hash FROM ledger_head WHERE id = 1").fetchone()
    finally:
        con.close()


def first_bad(stderr: str) -> int:
    found = re.search(r"first bad event: (\d+)", stderr)
    assert found, stderr
    return int(found.group(1))


@pytest.fixture(scope="module")
def base_db(tmp_path_factory) -> Path:
    """A ledger initialized and loaded through the CLI (read-only for the tests: copy it to write)."""
    root = tmp_path_factory.mktemp("cli-base")
    scenario = root / "base.yaml"
    scenario.write_text(BASE_SCENARIO, encoding="utf-8")
    db = root / "base.db"
    init = ok("init", db=db)
    assert "ledger ready" in init.stdout
    load = ok("load", scenario, db=db)
    assert f"loaded {BASE_EVENTS} events" in load.stdout
    return db


@pytest.fixture
def work_db(base_db, tmp_path) -> Path:
    """A private, writable copy of the loaded ledger."""
    return copy_db(base_db, tmp_path / "work.db")


def holding(report: dict, entity: str, model: str = "h100") -> dict:
    rows = [h for h in report["holdings"] if h["entity"] == entity and h["model"] == model]
    assert len(rows) == 1, report["holdings"]
    return rows[0]


# -- status ----------------------------------------------------------------------------------


def test_status_json_has_documented_keys_and_numbers(base_db):
    report = json.loads(ok("status", "--as-of", "2024-05-01", "--format", "json", db=base_db).stdout)
    assert list(report) == ["as_of", "known_at", "ledger_seq", "entity", "holdings", "sites", "loans",
                            "transfers", "claims", "proposals"]
    assert report["as_of"] == "2024-05-01"
    assert report["known_at"] is None
    assert report["ledger_seq"] == BASE_EVENTS
    assert report["entity"] is None
    a, b = holding(report, "a"), holding(report, "b")
    assert (a["installed"], a["lent"], a["serving_self"], a["borrowed"]) == (100, 40, 60, 0)
    assert (a["owned"], a["on_order"], a["in_warehouse"], a["active"]) == (100, 70, 0, 60)
    assert (b["borrowed"], b["active"], b["owned"], b["installed"], b["lent"]) == (40, 40, 0, 0, 0)
    sites = {s["site"]: s for s in report["sites"]}
    assert sites["s1"]["installed"] == 100 and sites["s1"]["slots_online"] == 100
    assert sites["s1"]["mw_used"] == pytest.approx(100 * 700 * 1.2 / 1e6, abs=1e-3)
    [loan] = report["loans"]
    assert (loan["loan"], loan["lender"], loan["borrower"], loan["gpus_out"], loan["status"]) == \
        ("ln1", "a", "b", 40, "open")
    # 40 GPUs x 24 h x 30 days (April) x USD 2
    assert loan["fee_usd_to_date"] == pytest.approx(40 * 24 * 30 * 2.0)
    assert [t["kind"] for t in report["transfers"]] == ["loan"]
    assert report["claims"] == []


def test_status_csv_parses_with_db_from_env(base_db, tmp_path):
    """Also: ``GPUFLEET_DB`` stands in for ``--db`` (and the default ./gpufleet.db is left alone)."""
    out = ok("status", "--as-of", "2024-05-01", "--format", "csv", env={"GPUFLEET_DB": str(base_db)},
             cwd=tmp_path).stdout
    assert not (tmp_path / "gpufleet.db").exists()
    rows = list(csv.DictReader(io.StringIO(out)))
    by_entity = {r["entity"]: r for r in rows}
    assert set(by_entity) == {"a", "b"}
    assert {"entity", "model", "installed", "lent", "borrowed", "on_order"} <= set(rows[0])
    assert (by_entity["a"]["installed"], by_entity["a"]["lent"]) == ("100", "40")
    assert by_entity["b"]["borrowed"] == "40"


def test_status_entity_filters(base_db):
    report = json.loads(ok("status", "--as-of", "2024-05-01", "--entity", "b", "-f", "json", db=base_db).stdout)
    assert report["entity"] == "b"
    assert [h["entity"] for h in report["holdings"]] == ["b"]
    assert report["holdings"][0]["borrowed"] == 40
    assert report["sites"] == []  # both sites belong to a
    assert [x["loan"] for x in report["loans"]] == ["ln1"]  # b is the borrower


def test_status_known_at_before_delivery_shows_lot_on_order(base_db):
    report = json.loads(ok("status", "--as-of", "2024-05-01", "--known-at", "2024-03-01", "-f", "json",
                           db=base_db).stdout)
    assert report["known_at"] == "2024-03-01T23:59:59.999999Z"
    assert report["ledger_seq"] == 6  # registrations and the PO only
    [a] = report["holdings"]
    assert (a["entity"], a["on_order"], a["in_warehouse"], a["installed"], a["owned"]) == ("a", 170, 0, 0, 0)
    assert a["due_by_as_of"] == 100  # l1 was planned for 2024-03-01
    assert report["loans"] == []


def test_events_json_is_a_chain(base_db):
    rows = json.loads(ok("events", "--format", "json", db=base_db).stdout)
    assert [r["seq"] for r in rows] == list(range(1, BASE_EVENTS + 1))
    assert [r["event_type"] for r in rows] == BASE_TYPES
    assert rows[0]["prev_hash"] == GENESIS_HASH
    for prev, cur in zip(rows, rows[1:]):
        assert cur["prev_hash"] == prev["hash"]
    for r in rows:
        assert re.fullmatch(r"[0-9a-f]{64}", r["hash"])
        payload = json.dumps(r["payload"], separators=(",", ":"), ensure_ascii=False)  # key order as stored
        assert event_hash(r["seq"], r["recorded_at"], r["effective_date"], r["actor"], r["event_type"],
                          r["idempotency_key"], r["prev_hash"], payload) == r["hash"]
    assert rows[-1]["payload"]["loan"] == "ln1"


def test_ledger_verify_and_head_on_a_good_ledger(base_db):
    head = ok("ledger", "head", db=base_db).stdout.split()
    assert head[0] == str(BASE_EVENTS) and re.fullmatch(r"[0-9a-f]{64}", head[1])
    assert head[1] == stored_head(base_db)[1]
    assert "anchors matched: 1" in ok("ledger", "verify", "--expect", " ".join(head), db=base_db).stdout


# -- everyday writes ---------------------------------------------------------------------------


def write(db: Path, *args: object) -> str:
    """Run a write command; check it appended exactly one event, and return its output."""
    before = event_count(db)
    proc = ok(*args, db=db)
    assert re.search(rf"recorded event {before + 1}:", proc.stdout), proc.stdout
    assert event_count(db) == before + 1
    return proc.stdout


def refused(db: Path, *args: object, reason: str, code: int = 3) -> str:
    """Run a command that must be refused with ``code``; check it names ``reason`` and wrote nothing."""
    before = event_count(db)
    proc = run(*args, db=db)
    assert proc.returncode == code, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert reason in proc.stderr, proc.stderr
    assert event_count(db) == before
    return proc.stderr


def assert_intact(db: Path, expected_types: list[str]) -> None:
    """Exactly the expected events after the base ones, and the chain and invariants still hold."""
    assert event_types(db, after=BASE_EVENTS) == expected_types
    assert "ledger OK" in ok("ledger", "verify", "--replay", db=db).stdout


def test_supply_commands_write_one_event_each(work_db):
    assert "lot_shipped" in write(work_db, "ship", "l2", "--on", "2024-05-01")
    assert "lot_delivered" in write(work_db, "deliver", "l2", "--on", "2024-05-03")
    refused(work_db, "install", "--owner", "a", "--model", "h100", "--site", "s2", "--gpus", 51,
            "--on", "2024-05-05", reason="has 50 h100 in its warehouse; cannot install 51")
    write(work_db, "install", "--owner", "a", "--model", "h100", "--site", "s2", "--gpus", 40, "--on", "2024-05-05")
    write(work_db, "fail", "--owner", "a", "--model", "h100", "--gpus", 5, "--site", "s2", "--on", "2024-05-06")
    write(work_db, "retire", "--owner", "a", "--model", "h100", "--gpus", 5, "--from-failed", "--on", "2024-05-07")
    assert_intact(work_db, ["lot_shipped", "lot_delivered", "gpus_installed", "gpus_failed", "gpus_retired"])


def test_loan_commands_write_one_event_each(work_db):
    refused(work_db, "loan", "open", "ln2", "--lender", "a", "--borrower", "b", "--model", "h100", "--site", "s1",
            "--gpus", 61, "--end", "2024-09-01", "--on", "2024-05-01",
            reason="lender 'a' holds 60 h100 installed at 's1' and serving itself; cannot lend 61")
    write(work_db, "loan", "open", "ln2", "--lender", "a", "--borrower", "b", "--model", "h100", "--site", "s1",
          "--gpus", 10, "--end", "2024-09-01", "--fee", 1.5, "--notice-days", 30, "--on", "2024-05-01")
    refused(work_db, "loan", "reclaim", "ln2", "--gpus", 5, "--notice-given-on", "2024-05-10", "--on", "2024-05-20",
            reason="needs 30 days' notice")
    write(work_db, "loan", "reclaim", "ln2", "--gpus", 5, "--notice-given-on", "2024-05-10", "--on", "2024-06-09")
    write(work_db, "loan", "close", "ln2", "--on", "2024-06-10")
    assert_intact(work_db, ["loan_opened", "loan_reclaimed", "loan_closed"])


def test_claim_void_and_record_write_one_event_each(work_db):
    out = write(work_db, "claim", "c1", "--claimant", "b", "--metric", "active_gpus", "--target", 100,
                "--deadline", "2024-12-31", "--model", "h100", "--on", "2024-05-01")
    seq = int(re.search(r"recorded event (\d+)", out).group(1))
    write(work_db, "void", seq, "--reason", "typo in the target")
    write(work_db, "record", "site_capacity_added", "--on", "2024-05-02", "--data",
          json.dumps({"site": "s1", "capacity": {"step": "s1-b", "online_date": "2024-06-01", "slots": 50,
                                                 "mw": 0.05}}))
    assert_intact(work_db, ["claim_recorded", "event_voided", "site_capacity_added"])


# -- the approval gate ---------------------------------------------------------------------------

# c is a's subsidiary; a holds 60 H100 at s1 serving itself. 60 GPUs for 61 days is USD 432,115 at
# USD 4.92/GPU-hour, above the USD 120,000 of SEC S-K Item 404(a).
RELATED_LOAN = {"loan": "ln2", "lender": "a", "borrower": "c", "model": "h100", "site": "s1", "gpus": 60,
                "end_date": "2024-07-01", "fee_usd_per_gpu_hour": 4.9}


def test_record_passes_the_same_approval_gate_as_loan_open(work_db):
    write(work_db, "record", "entity_registered", "--on", "2024-04-01", "--data",
          json.dumps({"entity": "c", "name": "C", "parent": "a"}))
    loan_open = ["loan", "open", "ln2", "--lender", "a", "--borrower", "c", "--model", "h100", "--site", "s1",
                 "--gpus", 60, "--end", "2024-07-01", "--fee", 4.9, "--on", "2024-05-01"]
    record = ["record", "loan_opened", "--on", "2024-05-01", "--data", json.dumps(RELATED_LOAN)]
    by_loan_open = refused(work_db, *loan_open, reason="without the approval of 2 independent directors of a")
    by_record = refused(work_db, *record, reason="without the approval of 2 independent directors of a")
    assert by_record == by_loan_open, "one gate, one message"
    assert "field 'loan'" in by_record
    write(work_db, *record, "--after-the-fact")
    rows = json.loads(ok("approvals", "list", "--format", "json", db=work_db).stdout)
    assert [(r["subject"], r["status"]) for r in rows] == [("loan:ln2", "executed_unapproved")]
    assert_intact(work_db, ["entity_registered", "loan_opened"])


def test_load_keeps_history_and_the_audit_reports_structuring(tmp_path):
    """Three loans of 20 GPUs for 30 days from a to its subsidiary c: USD 70,848 each, 59% of the
    threshold, USD 212,544 together. ``load`` records them as history; the audit reports the pattern."""
    loans = "".join(f"  - {{type: loan_opened, loan: s{i}, lender: a, borrower: c, model: h100, site: s1, gpus: 20, "
                    f"end_date: 2024-05-02, fee_usd_per_gpu_hour: 4.9, on: 2024-04-02}}\n" for i in (1, 2, 3))
    scenario = tmp_path / "split.yaml"
    scenario.write_text(BASE_SCENARIO.replace("  - {entity: b, name: B, source: [1]}\n",
                                              "  - {entity: b, name: B, source: [1]}\n"
                                              "  - {entity: c, name: C, parent: a}\n") + loans)
    db = tmp_path / "split.db"
    ok("load", scenario, db=db)
    seqs = [e["seq"] for e in json.loads(ok("events", "--type", "loan_opened", "-f", "json", db=db).stdout)
            if e["payload"]["borrower"] == "c"]
    findings = json.loads(ok("audit", "--format", "json", db=db).stdout)
    (found,) = [f for f in findings if f["kind"] == "structuring"]
    assert (found["severity"], found["evidence_seqs"]) == ("high", seqs)
    assert found["value_usd"] == pytest.approx(3 * 20 * 24 * 30 * 4.92)
    unapproved = [f["title"] for f in findings if f["kind"] == "unapproved_related_party_transaction"]
    assert [t.split(":")[0] for t in unapproved] == ["loan s2", "loan s3"], "the ones past the threshold"


# -- idempotency -----------------------------------------------------------------------------


def test_idempotency_key_writes_once_and_conflicts_on_other_data(work_db):
    first = ok("ship", "l2", "--on", "2024-05-01", "--idempotency-key", "k", db=work_db)
    again = ok("ship", "l2", "--on", "2024-05-01", "--idempotency-key", "k", db=work_db)
    assert f"recorded event {BASE_EVENTS + 1}:" in first.stdout
    assert first.stdout == again.stdout  # the stored event is returned, same seq and hash
    assert event_count(work_db) == BASE_EVENTS + 1
    proc = run("ship", "l3", "--on", "2024-05-01", "--idempotency-key", "k", db=work_db)
    assert proc.returncode == 5, proc.stderr
    assert "idempotency key 'k'" in proc.stderr and f"event {BASE_EVENTS + 1}" in proc.stderr
    assert event_types(work_db, after=BASE_EVENTS) == ["lot_shipped"]


# -- tampering with the database file (the whole table, on both databases: test_tampering.py) --------

TAMPERS = [
    pytest.param(tampering.edit_payload(8), 8, "altered", id="edit-payload"),
    pytest.param(tampering.delete_event(5), 5, "missing", id="delete-middle-event"),
    pytest.param(tampering.insert_forged_by_renumbering(5), 6, "does not link", id="insert-forged-event-renumbering"),
    pytest.param(tampering.swap_contents(7, 8), 7, "does not link", id="swap-two-events"),
    pytest.param(tampering.truncate(BASE_EVENTS - 1), BASE_EVENTS, "head", id="truncate-last-event"),
    pytest.param(tampering.head_seq_minus_one, BASE_EVENTS, "head", id="ledger-head-seq-edited"),
    pytest.param(tampering.head_hash_edited, BASE_EVENTS, "head's hash", id="ledger-head-hash-edited"),
]


def tamper(source: Path, tmp_path: Path, attack) -> Path:
    """A copy of ``source`` after ``attack``, by someone with write access to the file (who can drop
    the append-only triggers)."""
    db = copy_db(source, tmp_path / "tampered.db")
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        tampering.disable_guards(conn)
        attack(conn)
    engine.dispose()
    return db


@pytest.mark.parametrize(("attack", "bad_seq", "reason"), TAMPERS)
def test_tampering_is_detected(base_db, tmp_path, attack, bad_seq, reason):
    db = tamper(base_db, tmp_path, attack)
    proc = run("ledger", "verify", db=db)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "does NOT verify" in proc.stderr
    assert first_bad(proc.stderr) == bad_seq
    assert reason in proc.stderr


def test_an_anchor_survives_later_writes_and_finds_a_cut_that_rebuilt_the_head(work_db, tmp_path):
    """What `ledger head` printed is accepted back as it is, or as SEQ:HASH, after more events; once
    the ledger is cut below it and the head rebuilt, only that anchor finds the cut."""
    published = ok("ledger", "head", db=work_db).stdout.strip()
    write(work_db, "ship", "l2", "--on", "2024-05-01")
    for form in (published, published.replace(" ", ":")):
        assert "anchors matched: 1" in ok("ledger", "verify", "--expect", form, db=work_db).stdout
    cut = tamper(work_db, tmp_path, tampering.truncate(BASE_EVENTS - 1, rebuild_head=True))
    assert "ledger OK" in ok("ledger", "verify", db=cut).stdout  # nothing inside the database shows it
    proc = run("ledger", "verify", "--expect", published, db=cut)
    assert proc.returncode == 1
    assert first_bad(proc.stderr) == BASE_EVENTS and f"event {BASE_EVENTS} is not in the ledger" in proc.stderr


def test_expect_head_is_deprecated_and_an_older_head_still_verifies(work_db):
    older = stored_head(work_db)[1]
    write(work_db, "ship", "l2", "--on", "2024-05-01")
    proc = ok("ledger", "verify", "--expect-head", older, db=work_db)
    assert "ledger OK" in proc.stdout and "--expect-head is deprecated" in proc.stderr


@pytest.mark.parametrize("value", ["9", f"nine:{'0' * 64}", f"9:{'g' * 64}", f"-1:{'0' * 64}", f"9:{'0' * 63}"],
                         ids=["no-hash", "seq-not-a-number", "hash-not-hex", "negative-seq", "hash-too-short"])
def test_a_malformed_anchor_names_the_field(base_db, value):
    proc = run("ledger", "verify", "--expect", value, db=base_db)
    assert proc.returncode == 3, proc.stderr
    assert "field 'expect'" in proc.stderr and "is not SEQ:HASH" in proc.stderr


def test_a_forged_snapshot_is_reported_by_status_verify_and_audit(tmp_path):
    """5 GPUs taken off the newest snapshot: status warns naming it and shows the figures of the events;
    verify exits 1 naming it; the audit reports a ledger that does not verify, not one that does."""
    from gpufleet.ledger.db import make_engine, upgrade
    from gpufleet.ledger.store import Ledger
    from gpufleet.services.fleet import FleetService
    from test_ledger import story

    db = tmp_path / "snapshots.db"
    engine = make_engine(str(db))
    upgrade(engine)
    with engine.begin() as conn:
        Ledger(conn, snapshot_every=1).append(story().drafts())
    truth = FleetService(engine).status(as_of=None)
    with engine.begin() as conn:
        tampering.disable_guards(conn)
        tampering.edit_last_snapshot(conn)
    engine.dispose()
    status = ok("status", "--format", "json", db=db)
    assert "warning: the snapshot at event 10 was altered" in status.stderr
    assert json.loads(status.stdout)["holdings"] == truth["holdings"]
    verify = run("ledger", "verify", db=db)
    assert verify.returncode == 1
    assert "ledger does NOT verify: the snapshot at event 10 was altered" in verify.stderr
    kinds = [f["kind"] for f in json.loads(ok("audit", "--format", "json", db=db).stdout)]
    assert "ledger_tampered" in kinds and "ledger_verified" not in kinds


def test_events_are_append_only_in_the_database(base_db, tmp_path):
    db = copy_db(base_db, tmp_path / "guarded.db")
    con = sqlite3.connect(db)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute("UPDATE events SET payload = '{}' WHERE seq = 1")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute("DELETE FROM events WHERE seq = 1")
        con.rollback()
        assert con.execute("SELECT count(*) FROM events").fetchone()[0] == BASE_EVENTS
    finally:
        con.close()


# -- errors at the edge --------------------------------------------------------------------------


def test_uninitialized_database_exits_4_with_a_hint(tmp_path):
    proc = run("status", db=tmp_path / "never.db")
    assert proc.returncode == 4
    assert "gpufleet init" in proc.stderr
    assert not (tmp_path / "never.db").exists()  # a read never creates the file


def test_bad_as_of_names_the_field(base_db):
    proc = run("status", "--as-of", "2024-13-45", db=base_db)
    assert proc.returncode == 3
    assert "field 'as_of'" in proc.stderr and "'2024-13-45' is not a date (YYYY-MM-DD)" in proc.stderr


@pytest.mark.parametrize("value, shown", [
    (None, "-"), (True, "yes"), (12345, "12,345"), (0.0, "0.00"), (0.5, "0.50"), (0.0023, "0.0023"),
    (-0.001, "-0.001"), (99.994, "99.99"), (1234.4, "1,234"), ("BE", "BE"),
], ids=["none", "bool", "int", "zero", "fraction", "small-not-zero", "small-negative", "two-decimals",
        "large", "text"])
def test_table_cells(value, shown):
    """Numbers in the CLI's tables: thousands separators, two decimals below 100, and a value too
    small for two decimals keeps two significant digits instead of reading as zero."""
    from gpufleet.cli import render
    table = render.table("t", [{"x": value}])
    assert list(table.columns[0].cells) == [shown]
