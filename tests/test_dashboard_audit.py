"""The Audit page's verification status and kept answers, in-process (no browser): what a full verification
job proves, what the events appended since are checked for, what is left unchecked, a tampered event found
after a full verification, the findings and approvals kept per head equal to a fresh audit, long tables a
page at a time. The ledger-level check of appended events is a table of attacks after a verified prefix."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

import tampering
from api_world import ON, World, build_world
from gpufleet.api.settings import ServiceSettings
from gpufleet.domain.governance import GovernancePolicy
from gpufleet.ledger.appended import check_appended
from gpufleet.ledger.store import Ledger
from gpufleet.services import governance, verification
from gpufleet.services.fleet import FleetService, make_payload
from gpufleet.web import create_app
from gpufleet.web.pages import approvals as approvals_page

POLICY = GovernancePolicy()


@pytest.fixture
def world(tmp_path) -> World:
    return build_world(f"sqlite:///{tmp_path / 'ledger.db'}")


@pytest.fixture
def client(world):
    with TestClient(create_app(ServiceSettings(db=world.db, job_workers=1))) as c:
        yield c


def sign_in(client: TestClient, world: World, who: str) -> str:
    """Sign ``client`` in as ``who``; the session's CSRF token."""
    form = client.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    done = client.post("/ui/login", data={"csrf": csrf, "token": world.tokens[who], "next": "/ui/audit"},
                       follow_redirects=False)
    assert done.status_code == 303, done.text[:300]
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/ui/audit").text).group(1)


def ledger_card(client: TestClient, url: str = "/ui/audit") -> tuple[str, str, str]:
    """The page's verdict (data-verdict), its headline and its "What was checked" sentence."""
    page = client.get(url)
    assert page.status_code == 200, page.text[:500]
    verdict = re.search(r'data-verdict="(\w+)"', page.text).group(1)
    headline = re.sub(r"\s+", " ", re.search(r'<span class="big [^"]*">([^<]*)</span>', page.text).group(1)).strip()
    checked = re.sub(r"\s+", " ", re.search(r'<p id="checked">(.*?)</p>', page.text, re.S).group(1))
    return verdict, headline, checked


def verify_now(client: TestClient, csrf: str) -> str:
    """Press "Verify the whole ledger now" and wait for the job; its id."""
    sent = client.post("/ui/audit/verify", data={"csrf": csrf}, follow_redirects=False)
    assert sent.status_code == 303, sent.text[:300]
    job_id = re.search(r"job=([0-9a-f]{24})", sent.headers["location"]).group(1)
    for _ in range(240):
        partial = client.get(f"/ui/audit/jobs/{job_id}", headers={"HX-Request": "true"})
        if partial.headers.get("HX-Refresh") == "true":  # succeeded: the page reloads to show the new status
            return job_id
        assert 'data-state="failed"' not in partial.text, partial.text
        time.sleep(0.25)
    raise AssertionError(f"verify job {job_id} did not finish")


def append(world: World, count: int = 2) -> None:
    """``count`` more events (demands of xAI), recorded now."""
    fleet = FleetService.open(world.db)
    n = fleet.head().seq
    items = [(make_payload("demand_recorded", {"demand": f"more-{n}-{i}", "entity": "xai", "start": (
        ON + timedelta(days=30)).isoformat(), "end": (ON + timedelta(days=60)).isoformat(), "gpus": 8,
        "value_usd_per_gpu_hour": 3.0}), ON, None) for i in range(count)]
    fleet.record_many(items, actor="test")
    fleet.engine.dispose()


def tamper(world: World, attack) -> None:
    fleet = FleetService.open(world.db)
    with fleet.engine.begin() as conn:
        tampering.disable_guards(conn)
        attack(conn)
    fleet.engine.dispose()


def head_seq(world: World) -> int:
    fleet = FleetService.open(world.db)
    try:
        return fleet.head().seq
    finally:
        fleet.engine.dispose()


# -- the page's verification status ------------------------------------------------------------------


@pytest.mark.parametrize("who", ["x-auditor", "tesla-viewer"])
def test_with_no_full_verification_on_record_the_page_claims_nothing_verified(client, world, who):
    sign_in(client, world, who)
    verdict, headline, checked = ledger_card(client)
    assert (verdict, headline) == ("unverified", "Not verified")
    assert "no full verification is on record" in checked
    page = client.get("/ui/audit").text
    assert "Verifies" not in page and "ledger_verified" not in page
    assert ("Verify the whole ledger now" in page) is (who == "x-auditor")


def test_a_full_verification_then_the_events_appended_since_are_checked_as_appended(client, world):
    csrf = sign_in(client, world, "x-auditor")
    first = head_seq(world)
    job_id = verify_now(client, csrf)
    verdict, headline, checked = ledger_card(client, f"/ui/audit?job={job_id}")
    assert (verdict, headline) == ("verified", "Verifies")
    assert f"events 1..{first:,} verified in full by verify job {job_id} of x-auditor" in checked
    assert "checked as they were appended" not in checked
    append(world, 3)
    verdict, headline, checked = ledger_card(client)
    assert (verdict, headline) == ("verified", "Verifies")
    assert f"events 1..{first:,} verified in full" in checked
    assert f"events {first + 1:,}..{first + 3:,} checked as they were appended" in checked


def test_a_tampered_event_is_reported_after_a_full_verification(client, world):
    csrf = sign_in(client, world, "x-auditor")
    verify_now(client, csrf)
    append(world)
    tamper(world, tampering.edit_payload(28))  # no hash recomputed: only a full verification finds it
    verdict, _, checked = ledger_card(client)
    assert verdict == "verified" and "verified in full" in checked  # what it says is what was checked, and when
    job_id = verify_now(client, csrf)
    page = client.get(f"/ui/audit?job={job_id}").text
    verdict, headline, checked = ledger_card(client)
    assert (verdict, headline) == ("failed", "DOES NOT VERIFY")
    assert "at event 28: event 28 was altered: its content does not match its hash" in re.sub(r"\s+", " ", page)
    assert f"the full verification by verify job {job_id} of x-auditor" in checked
    assert 'data-kind="ledger_tampered"' in page and "Verifies" not in page
    audit = client.get("/v1/audit", headers=world.headers("x-auditor")).json()
    assert audit[0]["kind"] == "ledger_tampered" and audit[0]["title"] == "the ledger does not verify at event 28"
    append(world)  # a later write does not clear it
    assert ledger_card(client)[0] == "failed"


def test_a_rewrite_that_recomputes_the_hashes_is_caught_as_the_head_moves(client, world):
    csrf = sign_in(client, world, "x-auditor")
    verify_now(client, csrf)
    verified = head_seq(world)
    tamper(world, tampering.consistent_rewrite(verified - 5))
    append(world)
    verdict, headline, checked = ledger_card(client)
    assert (verdict, headline) == ("failed", "DOES NOT VERIFY")
    assert "checking the events appended since" in checked
    page = re.sub(r"\s+", " ", client.get("/ui/audit").text)
    assert f"event {verified} has the hash" in page and "rewritten at or before" in page


def test_an_appended_event_that_does_not_verify_is_caught_without_a_full_verification(client, world):
    csrf = sign_in(client, world, "x-auditor")
    verify_now(client, csrf)
    append(world, 3)
    bad = head_seq(world) - 1
    tamper(world, tampering.edit_column("actor", "mallory", bad))
    verdict, _, checked = ledger_card(client)
    assert verdict == "failed" and f"found a problem at event {bad}" in checked


def test_events_past_the_incremental_limit_are_left_unchecked_and_said_so(client, world, monkeypatch):
    csrf = sign_in(client, world, "x-auditor")
    verify_now(client, csrf)
    verified = head_seq(world)
    monkeypatch.setattr(verification, "INCREMENT_MAX", 2)
    append(world, 3)
    verdict, headline, checked = ledger_card(client)
    assert (verdict, headline) == ("partly", "Partly checked")
    assert f"events {verified + 1:,}..{verified + 3:,} not checked" in checked
    assert 'data-kind="ledger_verified"' not in client.get("/ui/audit").text
    verify_now(client, csrf)
    assert ledger_card(client)[0] == "verified"


def test_only_an_auditor_runs_a_verification(client, world):
    csrf = sign_in(client, world, "tesla-viewer")
    refused = client.post("/ui/audit/verify", data={"csrf": csrf}, follow_redirects=False)
    assert refused.status_code == 403 and "audit" in refused.text


# -- kept answers -----------------------------------------------------------------------------------


def test_the_api_audit_kept_per_head_equals_a_fresh_audit_after_a_write(client, world):
    fleet = FleetService.open(world.db)
    try:
        first = client.get("/v1/audit", headers=world.headers("x-auditor"))
        assert first.json() == governance.audit(fleet, POLICY)  # the JSON of `gpufleet audit`, to the byte
        assert "verified in full by this server" in first.headers["Gpufleet-Chain-Checked"]  # none on record
        fleet.record(make_payload("loan_opened", {  # a related-party loan below the market price: a new finding
            "loan": "late", "lender": "tesla", "borrower": "xai", "model": "h100", "site": "giga-texas-cortex",
            "gpus": 8, "end_date": (ON + timedelta(days=200)).isoformat(), "fee_usd_per_gpu_hour": 1.0}),
            ON - timedelta(days=1), "test", after_the_fact=True)
        after = client.get("/v1/audit", headers=world.headers("x-auditor"))
        assert after.json() == governance.audit(fleet, POLICY) and after.json() != first.json()
        assert any(f["title"].startswith("loan late:") for f in after.json())
        assert "checked as they were appended" in after.headers["Gpufleet-Chain-Checked"]
    finally:
        fleet.engine.dispose()


def test_the_api_approvals_are_copies_of_the_kept_rows(client, world):
    one = client.get("/v1/approvals", headers=world.headers("x-auditor")).json()
    two = client.get("/v1/approvals", headers=world.headers("x-auditor")).json()
    assert one == two and {r["subject"] for r in one} == {"swap:dec-2023-h100", "proposal:p1"}
    fleet = FleetService.open(world.db)
    try:
        fresh = governance.approvals(fleet, POLICY)
    finally:
        fleet.engine.dispose()
    assert [{k: v for k, v in r.items() if k not in ("proposal", "version")} for r in one] == fresh


# -- long tables a page at a time ---------------------------------------------------------------------


def test_the_audit_tables_come_a_page_at_a_time(client, world, monkeypatch):
    from gpufleet.web import common

    sign_in(client, world, "x-auditor")
    monkeypatch.setattr(common, "PAGE_ROWS", 1)
    second = re.sub(r"\s+", " ", client.get("/ui/audit?apage=2").text)
    assert "Transactions 2–2 of 2 (page 2 of 2)" in second and 'rel="prev"' in second
    assert "proposal:p1" in second and "swap:dec-2023-h100</a></th>" not in second
    high = client.get("/ui/audit?severity=high&kind=delay_imposed").text
    assert high.count('data-kind="delay_imposed"') == 1 and 'data-kind="claim_missed"' not in high
    bad = client.get("/ui/audit?page=zero")
    assert bad.status_code == 422 and "page" in bad.text and "Traceback" not in bad.text


def test_the_inbox_comes_a_page_at_a_time_with_its_counts_over_every_row(client, world, monkeypatch):
    sign_in(client, world, "tesla-indep")
    monkeypatch.setattr(approvals_page, "PAGE_ROWS", 1)
    first = client.get("/ui/approvals").text
    assert first.count('class="approval"') == 1 and 'data-subject="proposal:p1"' in first
    assert re.search(r'<span class="big">2</span> you can see', first)
    second = client.get("/ui/approvals?page=2").text
    assert 'data-subject="swap:dec-2023-h100"' in second and 'data-subject="proposal:p1"' not in second


# -- the check of appended events, attack by attack -------------------------------------------------------


def _tampered_after_verified(tmp_path, attack) -> tuple[int, object]:
    """A ledger verified in full through event V, then two more events, then ``attack``: V and the report of
    :func:`check_appended` from V."""
    world = build_world(f"sqlite:///{tmp_path / 'l.db'}")
    fleet = FleetService.open(world.db)
    verified = fleet.verify()
    assert verified.ok
    append(world)
    if attack is not None:
        tamper(world, attack)
    try:
        with fleet.reader.connect() as conn:
            ledger = Ledger(conn)
            return verified.head_seq, check_appended(ledger, verified.head_seq, verified.head_hash, ledger.head())
    finally:
        fleet.engine.dispose()


def _last(conn) -> int:
    return tampering.last_seq(conn)


ATTACKS = [  # (attack after the verified prefix V and two appended events, what check_appended finds)
    ("nothing", None, None),
    ("a new event edited", lambda c: tampering.edit_column("actor", "m", _last(c))(c), "was altered"),
    ("a new event deleted", lambda c: tampering.delete_event(_last(c) - 1)(c), "is missing"),
    ("its leaf altered", lambda c: c.execute(text("UPDATE merkle_nodes SET hash = :h WHERE level = 0 AND idx = "
                                                 "(SELECT max(idx) FROM merkle_nodes WHERE level = 0)"),
                                            {"h": "0" * 64}), "was altered: it is not event"),
    ("a node it completed altered", lambda c: c.execute(text(
        "UPDATE merkle_nodes SET hash = :h WHERE level = 1 AND idx = (SELECT max(idx) FROM merkle_nodes WHERE "
        "level = 1)"), {"h": "0" * 64}), "not the hash of its children"),
    ("a node past the tree", lambda c: c.execute(text("INSERT INTO merkle_nodes (level, idx, hash) VALUES (0, "
                                                     "1000000, :h)"), {"h": "0" * 64}), "is stored but"),
    ("the head's hash", tampering.head_hash_edited, "head's hash is not"),
    ("the verified prefix rewritten", lambda c: tampering.consistent_rewrite(3)(c), "rewritten at or before"),
    ("the ledger cut", tampering.truncate(5, rebuild_head=True, drop_snapshots=True), "was cut since"),
]


@pytest.mark.parametrize(("name", "attack", "found"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_what_the_check_of_appended_events_finds(tmp_path, name, attack, found):
    verified, report = _tampered_after_verified(tmp_path, attack)
    if found is None:
        assert report.ok and report.events_checked == verified + 2
        return
    assert not report.ok and found in report.reason, report


def test_an_edit_inside_the_verified_prefix_is_left_to_a_full_verification(tmp_path):
    verified, report = _tampered_after_verified(tmp_path, tampering.edit_payload(28))
    assert report.ok  # not re-hashed here, by design: the page says events 1..V were verified in full, and when
    fleet = FleetService.open(f"sqlite:///{tmp_path / 'l.db'}")
    try:
        full = fleet.verify()
    finally:
        fleet.engine.dispose()
    assert not full.ok and full.first_bad_seq == 28


@pytest.mark.parametrize("attack", [None, tampering.edit_payload(28), tampering.delete_event(40),
                                    tampering.head_seq_minus_one], ids=["whole", "edited", "deleted", "head"])
def test_a_verify_walked_range_by_range_reports_as_one_walk(tmp_path, monkeypatch, attack):
    from gpufleet.ledger import store

    world = build_world(f"sqlite:///{tmp_path / 'l.db'}")
    if attack is not None:
        tamper(world, attack)
    fleet = FleetService.open(world.db)
    monkeypatch.setattr(store, "VERIFY_STEP", 7)
    walked: list[tuple[int, int]] = []
    try:
        with fleet.reader.connect() as conn:
            ranged = Ledger(conn).verify(progress=lambda done, total: walked.append((done, total)))
            whole = Ledger(conn).verify()
    finally:
        fleet.engine.dispose()
    assert ranged == whole  # the same report, problem or not
    done = [d for d, _ in walked]
    assert done[0] == 7 and all(b - a == 7 for a, b in zip(done, done[1:-1]))  # progress after each range
