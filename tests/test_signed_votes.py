"""Signed votes (docs/disclosure.md, "Signed votes"): a person's key registered by an admin with a proof
of possession, a vote signed over the transaction's terms, the ledger's checks before it accepts one,
the audit's status of each vote's signature, and the CLI, local and as a client of a live server."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import date
from pathlib import Path

import httpx
import pytest

from builders import Story
from cli_runner import invoke
from gpufleet.domain import events as ev
from gpufleet.domain import vote_signing as vs
from gpufleet.domain.access import Forbidden, Principal
from gpufleet.domain.chain import canonical_json
from gpufleet.domain.governance import GovernancePolicy
from gpufleet.domain.notes import ALG_COSIGNATURE_V1, SignerKey, generate_key
from gpufleet.errors import ConflictError, GpufleetError, InputError, InvariantViolation
from gpufleet.ledger.store import Ledger
from gpufleet.services import governance
from gpufleet.services.fleet import FleetService
from gpufleet.services.keys import generate_key_files
from test_governance import governed

POLICY = GovernancePolicy()
KEYS_ON, VOTE_ON = date(2024, 2, 2), date(2024, 2, 5)
SUBJECT = "proposal:x1"


def with_admins() -> Story:
    """The governed story (a lends to b; i and j approve for a), with adm an admin of a and cadm of c."""
    story = governed()
    for who, entity in (("adm", "a"), ("cadm", "c")):
        story.add(ev.PersonRegistered(person=who, name=who)).add(
            ev.AccessGranted(principal=who, entity=entity, role="admin"))
    return story


@pytest.fixture
def fleet(sqlite_engine) -> FleetService:
    with sqlite_engine.begin() as conn:
        Ledger(conn).append(with_admins().drafts())
    return FleetService(sqlite_engine)


KEYS = {who: generate_key(who) for who in ("i", "j", "other")}


def registration(person: str, entity: str, key: SignerKey, *, proof_key: SignerKey | None = None,
                 proof_entity: str | None = None, public_key: str | None = None) -> ev.PersonKeyRegistered:
    """``person_key_registered``, its proof made by ``proof_key`` over ``proof_entity`` (default: the key
    registered, over the entity registered: a correct proof)."""
    text = public_key or key.vkey.text
    message = vs.registration_message(person, proof_entity or entity, text)
    return ev.PersonKeyRegistered(person=person, entity=entity, public_key=text,
                                  proof=vs.b64((proof_key or key).sign(message)))


def register(fleet: FleetService, person: str = "i", key: SignerKey | None = None, by: str = "adm",
             entity: str = "a", on: date = KEYS_ON):
    return fleet.record(registration(person, entity, key or KEYS[person]), on, principal=Principal(by))


def signed_vote(fleet: FleetService, person: str = "i", decision: str = "approved", *, key: SignerKey | None = None,
                sign_decision: str | None = None, terms: dict | None = None,
                key_id: str | None = None) -> governance.SignedVote:
    """A vote's signature fields as a voter's machine makes them, with ``key`` (default: the person's)
    over ``terms`` (default: the ledger's now) and ``sign_decision`` (default: the decision)."""
    key = key or KEYS[person]
    terms = terms if terms is not None else governance.current_terms(fleet, fleet.state(), SUBJECT, POLICY, VOTE_ON)
    digest = vs.content_sha256(terms)
    signature = key.sign(vs.vote_message(SUBJECT, sign_decision or decision, person, digest))
    return governance.SignedVote(digest, key_id or key.key_id.hex(), vs.b64(signature), terms)


def vote(fleet: FleetService, person: str = "i", decision: str = "approved", signed=None,
         policy: GovernancePolicy = POLICY, on: date = VOTE_ON):
    return governance.vote(fleet, SUBJECT, person, decision, "fair" if decision == "waived" else "", policy, on,
                           signed=signed)


# -- registration ------------------------------------------------------------------------------

REGISTRATIONS = {
    "by an admin of the entity": (lambda: registration("i", "a", KEYS["i"]), "adm", None, None),
    "by an admin of another entity": (lambda: registration("i", "a", KEYS["i"]), "cadm", Forbidden, "admin"),
    "by the person, who is no admin": (lambda: registration("i", "a", KEYS["i"]), "i", Forbidden, "admin"),
    "a proof made with another key": (lambda: registration("i", "a", KEYS["i"], proof_key=KEYS["other"]), "adm",
                                      InvariantViolation, "field 'proof'"),
    "a proof naming another entity": (lambda: registration("i", "a", KEYS["i"], proof_entity="b"), "adm",
                                      InvariantViolation, "field 'proof'"),
    "a person without a role in the entity": (lambda: registration("i", "c", KEYS["i"]), "cadm",
                                              InvariantViolation, "holds no role in 'c'"),
    "a cosigner key": (lambda: registration("i", "a", generate_key("i", ALG_COSIGNATURE_V1)), "adm",
                       InvariantViolation, "cosigner key"),
    "not a verifier key": (lambda: registration("i", "a", KEYS["i"], public_key="i+00000000+AAAA"), "adm",
                           InvariantViolation, "field 'public_key'"),
}


@pytest.mark.parametrize("make, by, error, words", REGISTRATIONS.values(), ids=REGISTRATIONS.keys())
def test_a_key_is_registered_by_an_admin_with_a_proof_of_possession(fleet, make, by, error, words):
    before = fleet.head().seq
    if error is None:
        fleet.record(make(), KEYS_ON, principal=Principal(by))
        key = fleet.state().person_keys[f"i/{KEYS['i'].key_id.hex()}"]
        assert (key.entity, key.registered_on, key.revoked_on) == ("a", KEYS_ON, None)
        return
    with pytest.raises(error) as info:
        fleet.record(make(), KEYS_ON, principal=Principal(by))
    assert words in str(info.value)
    assert fleet.head().seq == before, "a refused registration writes nothing"


def test_a_key_is_registered_once_and_stays_revoked(fleet):
    register(fleet)
    with pytest.raises(InvariantViolation, match="already registered the key"):
        register(fleet)
    key_id = KEYS["i"].key_id.hex()
    fleet.record(ev.PersonKeyRevoked(person="i", key_id=key_id, reason="lost"), date(2024, 2, 3),
                 principal=Principal("adm"))
    with pytest.raises(InvariantViolation, match="revoked on 2024-02-03"):
        register(fleet, on=date(2024, 2, 4))
    with pytest.raises(InvariantViolation, match="already revoked"):
        fleet.record(ev.PersonKeyRevoked(person="i", key_id=key_id), date(2024, 2, 4), principal=Principal("adm"))
    with pytest.raises(Forbidden):
        fleet.record(ev.PersonKeyRevoked(person="j", key_id="0badc0de"), date(2024, 2, 4), principal=Principal("i"))


def test_keys_are_read_as_of_a_date_and_survive_a_snapshot(fleet):
    register(fleet)
    fleet.record(ev.PersonKeyRevoked(person="i", key_id=KEYS["i"].key_id.hex()), date(2024, 3, 1))
    assert fleet.state(date(2024, 2, 1)).person_keys == {}
    (key,) = fleet.state(date(2024, 2, 10)).person_keys.values()
    assert key.revoked_on is None and key.active_on(date(2024, 2, 10))
    state = fleet.state()
    (key,) = state.person_keys.values()
    assert key.revoked_on == date(2024, 3, 1) and not key.active_on(date(2024, 3, 1))
    assert type(state).from_dict(state.to_dict()).to_dict() == state.to_dict()


# -- votes -------------------------------------------------------------------------------------


def test_a_signed_vote_is_recorded_with_its_signature_and_shown_valid(fleet):
    register(fleet)
    event = vote(fleet, signed=signed_vote(fleet))
    payload = json.loads(event.payload)
    assert payload["key_id"] == KEYS["i"].key_id.hex()
    assert payload["content_sha256"] == signed_vote(fleet).content_sha256
    vote(fleet, "j")  # unsigned: still allowed by the default policy
    (row,) = [r for r in governance.approvals(fleet, POLICY, VOTE_ON) if r["subject"] == SUBJECT]
    assert row["status"] == "approved"
    assert {v["person"]: v["signature"] for v in row["votes"]} == {"i": vs.SIGNED_VALID, "j": vs.UNSIGNED}
    assert row["content_sha256"] == payload["content_sha256"]


def _changed_terms(fleet):
    terms = governance.current_terms(fleet, fleet.state(), SUBJECT, POLICY, VOTE_ON)
    return terms | {"fee_usd_per_gpu_hour": "0.100000"}


def _revoked(fleet):
    fleet.record(ev.PersonKeyRevoked(person="i", key_id=KEYS["i"].key_id.hex(), reason="stolen"), date(2024, 2, 4))
    return signed_vote(fleet)


def _tampered(fleet):
    signed = signed_vote(fleet)
    raw = bytearray(vs._unb64(signed.signature))
    raw[0] ^= 1
    return replace(signed, signature=vs.b64(bytes(raw)))


REFUSED = {
    "a tampered signature": (_tampered, "approved", InvariantViolation, "field 'signature'"),
    "signed with another person's key, as i's key": (
        lambda f: signed_vote(f, key=KEYS["j"], key_id=KEYS["i"].key_id.hex()), "approved", InvariantViolation,
        "field 'signature'"),
    "signed with another person's registered key": (
        lambda f: signed_vote(f, key=KEYS["j"]), "approved", InvariantViolation, "has no registered key"),
    "an approval signed, sent as a rejection": (
        lambda f: signed_vote(f, sign_decision="approved"), "rejected", InvariantViolation, "field 'signature'"),
    "signed over changed terms": (lambda f: replace(signed_vote(f, terms=_changed_terms(f))), "approved",
                                  ConflictError, "the terms changed since you signed: fee_usd_per_gpu_hour"),
    "signed over changed terms, the hash alone": (
        lambda f: replace(signed_vote(f, terms=_changed_terms(f)), terms=None), "approved", ConflictError,
        "the terms changed since you signed"),
    "signed with a revoked key": (_revoked, "approved", InvariantViolation, "revoked on 2024-02-04 (stolen)"),
}


@pytest.mark.parametrize("make, decision, error, words", REFUSED.values(), ids=REFUSED.keys())
def test_a_bad_signed_vote_is_refused_with_the_reason_and_nothing_written(fleet, make, decision, error, words):
    register(fleet)
    register(fleet, "j")
    signed = make(fleet)
    before = fleet.head()
    with pytest.raises(error) as info:
        vote(fleet, decision=decision, signed=signed)
    assert words in str(info.value)
    assert fleet.head() == before


def test_the_ledger_gate_checks_the_terms_whatever_the_path(fleet):
    """A signed vote recorded directly (not through governance.vote) still meets the gate's check."""
    register(fleet)
    stale = signed_vote(fleet, terms=_changed_terms(fleet))
    payload = ev.ApprovalRecorded(approval="proposal:x1.1", subject=SUBJECT, decision="approved", person="i",
                                  content_sha256=stale.content_sha256, key_id=stale.key_id,
                                  signature=stale.signature)
    before = fleet.head().seq
    with pytest.raises(ConflictError, match="the terms changed since you signed"):
        fleet.record(payload, VOTE_ON)
    assert fleet.head().seq == before


def test_a_policy_may_require_signed_votes(fleet):
    strict = GovernancePolicy(require_signed_votes=True)
    with pytest.raises(InvariantViolation, match="requires signed votes") as info:
        vote(fleet, policy=strict)
    assert info.value.field == "signature"
    register(fleet)
    terms = governance.current_terms(fleet, fleet.state(), SUBJECT, strict, VOTE_ON)
    vote(fleet, policy=strict, signed=signed_vote(fleet, terms=terms))
    assert vs.policy_sha256(strict) != vs.policy_sha256(POLICY), "the policy is part of the terms signed"


def test_a_signed_vote_needs_all_three_fields():
    with pytest.raises(ValueError, match="signature missing"):
        ev.ApprovalRecorded(approval="a.1", subject=SUBJECT, decision="approved", person="i",
                            content_sha256="0" * 64, key_id="00000000")


def test_an_unsigned_vote_hashes_exactly_as_before():
    """Votes recorded before signed votes existed keep their canonical JSON, so existing ledgers verify."""
    payload = ev.ApprovalRecorded(approval="swap:s.1", subject="swap:s", decision="approved", person="p",
                                  reason="ok")
    assert canonical_json(payload) == ('{"approval":"swap:s.1","subject":"swap:s","decision":"approved",'
                                       '"person":"p","reason":"ok"}')
    again = ev.ApprovalRecorded.model_validate_json(canonical_json(payload))
    assert canonical_json(again) == canonical_json(payload)


# -- the audit ---------------------------------------------------------------------------------


def _statuses(fleet, policy=POLICY) -> dict[str, str]:
    (row,) = [r for r in governance.approvals(fleet, policy, VOTE_ON) if r["subject"] == SUBJECT]
    return {v["person"]: v["signature"] for v in row["votes"]}


def test_the_audit_shows_each_votes_signature_and_finds_those_that_no_longer_verify(fleet):
    register(fleet)
    vote(fleet, signed=signed_vote(fleet))
    vote(fleet, "j")
    fleet.record(ev.PersonKeyRevoked(person="i", key_id=KEYS["i"].key_id.hex()), date(2024, 2, 20))
    assert _statuses(fleet) == {"i": vs.SIGNED_VALID, "j": vs.UNSIGNED}, "a key revoked after the vote"
    findings = governance.audit(fleet, POLICY, VOTE_ON)
    (summary,) = [f for f in findings if f["kind"] == "vote_signatures"]
    assert "i approved: signed-valid; j approved: unsigned" in summary["title"]
    assert not [f for f in findings if f["kind"] == "vote_signature_invalid"]
    other = GovernancePolicy(quorum=1)  # the terms signed named the policy in force: another one differs
    assert _statuses(fleet, other) == {"i": vs.SIGNED_INVALID, "j": vs.UNSIGNED}
    (bad,) = [f for f in governance.audit(fleet, other, VOTE_ON) if f["kind"] == "vote_signature_invalid"]
    assert bad["severity"] == "high" and "signed over other terms" in bad["detail"] and bad["evidence_seqs"]


def test_vote_signature_status_recomputes_from_the_ledger(fleet):
    register(fleet)
    vote(fleet, signed=signed_vote(fleet))
    state = fleet.state()
    (approval,) = state.approvals.values()
    terms = governance.current_terms(fleet, state, SUBJECT, POLICY, VOTE_ON)
    cases = {
        "as recorded": (approval, terms, vs.SIGNED_VALID),
        "terms changed": (approval, terms | {"gpus": 1}, vs.SIGNED_INVALID),
        "a forged signature": (replace(approval, signature=vs.b64(bytes(64))), terms, vs.SIGNED_INVALID),
        "dated before the key": (replace(approval, on=date(2024, 2, 1)), terms, vs.SIGNED_INVALID),
        "unsigned": (replace(approval, signature=None, key_id=None, content_sha256=None), terms, vs.UNSIGNED),
    }
    got = {name: vs.vote_signature_status(state, a, t).status for name, (a, t, _) in cases.items()}
    assert got == {name: want for name, (_a, _t, want) in cases.items()}


# -- the CLI, local ----------------------------------------------------------------------------


@pytest.fixture
def local_db(tmp_path, fleet) -> Path:
    return Path(fleet.engine.url.database)


def key_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.key"
    generate_key_files(name, path)
    return path


def test_the_cli_registers_a_key_from_a_request_and_signs_a_vote(tmp_path, local_db):
    key = key_file(tmp_path, "i")
    request = tmp_path / "request.json"
    made = invoke("keys", "register", "--person", "i", "--entity", "a", "--key", key, "--out", request)
    assert made.code == 0, made.stderr
    assert set(json.loads(request.read_text())) == {"person", "entity", "public_key", "proof"}
    recorded = invoke("keys", "register", "--request", request, "--on", "2024-02-02", "--actor", "adm", db=local_db)
    assert recorded.code == 0, recorded.stderr
    listed = json.loads(invoke("keys", "list", "--format", "json", db=local_db).stdout)
    assert [(k["person"], k["registered_on"], k["revoked_on"]) for k in listed] == [("i", "2024-02-02", None)]
    voted = invoke("approvals", "approve", SUBJECT, "--person", "i", "--on", "2024-02-05", "--sign-with", key,
                   db=local_db)
    assert voted.code == 0 and "(signed)" in voted.stdout, voted.stderr
    assert "fee_usd_per_gpu_hour=4.900000" in voted.stderr, "the terms signed are shown"
    rows = json.loads(invoke("approvals", "list", "--format", "json", db=local_db).stdout)
    assert [v["signature"] for r in rows for v in r["votes"]] == [vs.SIGNED_VALID]


CLI_REFUSALS = {
    "a private key others may read": (lambda p: os.chmod(p, 0o644), "has mode 0644", 3),
    "a revoked key": ("revoke", "was revoked on", 3),
    "a key never registered": ("unregistered", "has no registered key", 3),
}


@pytest.mark.parametrize("spoil, words, code", CLI_REFUSALS.values(), ids=CLI_REFUSALS.keys())
def test_the_cli_refuses_a_vote_it_cannot_sign_with_the_reason(tmp_path, local_db, spoil, words, code):
    key = key_file(tmp_path, "i")
    if spoil != "unregistered":
        assert invoke("keys", "register", "--person", "i", "--entity", "a", "--key", key, "--on", "2024-02-02",
                      db=local_db).code == 0
    if spoil == "revoke":
        key_id = json.loads(invoke("keys", "list", "--format", "json", db=local_db).stdout)[0]["key_id"]
        assert invoke("keys", "revoke", "--person", "i", "--key-id", key_id, "--on", "2024-02-03",
                      db=local_db).code == 0
    elif callable(spoil):
        spoil(key)
    before = FleetService(FleetService.open(str(local_db)).engine).head()
    result = invoke("approvals", "approve", SUBJECT, "--person", "i", "--on", "2024-02-05", "--sign-with", key,
                    db=local_db)
    assert (result.code, words in result.stderr) == (code, True), result.stderr
    assert "Traceback" not in result.stderr
    assert FleetService.open(str(local_db)).head() == before


def test_the_client_refuses_terms_whose_hash_the_server_misstates(tmp_path):
    from gpufleet.cli.signing import sign_vote

    key = key_file(tmp_path, "i")
    terms = {"subject": SUBJECT, "fee_usd_per_gpu_hour": "4.900000"}
    with pytest.raises(InputError, match="is not the hash of the terms it shows"):
        sign_vote(key, SUBJECT, "approved", "i", terms, "0" * 64)
    with pytest.raises(InputError, match="not proposal:other"):
        sign_vote(key, "proposal:other", "approved", "i", terms)
    signed = sign_vote(key, SUBJECT, "approved", "i", terms, vs.content_sha256(terms))
    assert signed["content_sha256"] == vs.content_sha256(terms)


# -- the CLI as a client of a live server ------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from api_world import LiveServer, build_world

    db = str(tmp_path_factory.mktemp("signed") / "world.db")
    world = build_world(db)
    live = LiveServer(db).start()
    try:
        yield live, world
    finally:
        live.stop()


def test_a_vote_signed_on_the_voters_machine_through_the_server(server, tmp_path, monkeypatch):
    live, world = server
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("GPUFLEET_DB", raising=False)
    monkeypatch.setenv("GPUFLEET_URL", live.url)
    key = key_file(tmp_path, "tesla-indep")
    request = tmp_path / "request.json"
    assert invoke("keys", "register", "--person", "tesla-indep", "--entity", "tesla", "--key", key,
                  "--out", request).code == 0
    monkeypatch.setenv("GPUFLEET_TOKEN", world.tokens["tesla-viewer"])
    refused = invoke("keys", "register", "--request", request)
    assert refused.code == 3 and "admin" in refused.stderr, refused.stderr
    monkeypatch.setenv("GPUFLEET_TOKEN", world.tokens["tesla-admin"])
    assert invoke("keys", "register", "--request", request).code == 0
    url, headers = f"{live.url}/v1/approvals/proposal:p1", world.headers("tesla-indep")
    read = httpx.get(url, headers=headers).json()
    assert read["content_sha256"] == vs.content_sha256(read["terms"]), "the server's hash is the terms' hash"
    half = httpx.post(f"{url}/votes", headers=headers | {"If-Match": "*", "Idempotency-Key": "half"},
                      json={"decision": "approved", "key_id": "00000000"})
    assert half.status_code == 422 and "content_sha256, key_id and signature" in half.text
    monkeypatch.setenv("GPUFLEET_TOKEN", world.tokens["tesla-indep"])
    voted = invoke("approvals", "approve", "proposal:p1", "--sign-with", key)
    assert voted.code == 0 and "(signed)" in voted.stdout, voted.stderr
    row = httpx.get(url, headers=headers).json()
    assert [(v["person"], v["signature"]) for v in row["votes"]] == [("tesla-indep", vs.SIGNED_VALID)]
    again = invoke("approvals", "approve", "proposal:p1", "--sign-with", key)
    assert again.code == 3 and "already voted" in again.stderr


def test_a_revocation_cannot_be_back_dated_before_a_vote_its_key_signed(fleet):
    register(fleet)
    vote(fleet, signed=signed_vote(fleet))
    before = fleet.head()
    with pytest.raises(InvariantViolation, match="would break the later history"):
        fleet.record(ev.PersonKeyRevoked(person="i", key_id=KEYS["i"].key_id.hex()), date(2024, 2, 3))
    assert fleet.head() == before
