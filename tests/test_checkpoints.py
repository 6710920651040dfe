"""Signed checkpoints of the ledger (gpufleet.services.checkpoints) on SQLite and PostgreSQL: created at the
head, with the Merkle root and the chain head, recorded, cosigned, checked against the ledger and a
policy; and the Go reference opening a real ledger's checkpoint."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest
from builders import two_party_fleet
from go_note import notecheck  # noqa: F401 - the fixture
from sqlalchemy import text

from gpufleet.domain import chain
from gpufleet.domain.notes import (
    ALG_COSIGNATURE_V1, PolicyNotMet, SignatureError, generate_key, open_note, signature_line,
)
from gpufleet.errors import ConflictError, InputError, LedgerCorrupt
from gpufleet.ledger import merkle_store
from gpufleet.ledger.store import Ledger
from gpufleet.services import checkpoints
from gpufleet.services.keys import load_policy

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def _story():
    return (two_party_fleet().po("p1", "a", {"l1": (100, "2024-02-01"), "l2": (50, "2024-04-01")})
            .on("2024-02-01").ship("l1").deliver("l1").install("a", "s1", 60))


def append(engine, drafts):
    with engine.begin() as conn:
        Ledger(conn).append(drafts)


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.1, written here from the RFC (independent of gpufleet.domain.merkle)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def event_leaves(engine, size: int) -> list[bytes]:
    """Each event's canonical bytes (the Merkle tree's leaf data), events 1..size."""
    with engine.connect() as conn:
        return [chain.canonical_bytes(e.seq, e.recorded_at, e.effective_date.isoformat(), e.actor, e.event_type,
                                      e.idempotency_key, e.prev_hash, e.payload)
                for e in Ledger(conn).events(0, size)]


@pytest.fixture
def ledger(engine):
    drafts = _story().drafts()
    append(engine, drafts[:5])
    return engine, drafts[5:]


def test_a_checkpoint_at_the_head_has_the_merkle_root_and_the_chain_head(ledger):
    engine, _ = ledger
    log = generate_key("gpufleet.example/ledger")
    recorded = checkpoints.create_checkpoint(engine, log, now=NOW)
    cp = recorded.checkpoint
    with engine.connect() as conn:
        head = Ledger(conn).head()
        store_root = merkle_store.root_hash(conn, 5)
    assert (cp.origin, cp.tree_size) == ("gpufleet.example/ledger", 5)
    assert cp.root_hash == store_root == mth(event_leaves(engine, 5))
    assert cp.chain_head == (5, head.hash) and cp.recorded_at == head.recorded_at
    assert recorded.created_at == chain.format_instant(NOW)
    opened = open_note(recorded.note, [log.vkey])
    assert opened.text == cp.body and [s.name for s in opened.signatures] == [log.name]
    assert checkpoints.note_text(engine, 5) == recorded.note == checkpoints.note_text(engine)
    with engine.connect() as conn:
        checkpoints.check_against_ledger(conn, cp)


def test_checkpoints_follow_the_ledger_and_are_listed_newest_first(ledger):
    engine, rest = ledger
    log = generate_key("log")
    checkpoints.create_checkpoint(engine, log)
    append(engine, rest)
    second = checkpoints.create_checkpoint(engine, log)
    size = 5 + len(rest)
    assert second.checkpoint.tree_size == size and second.checkpoint.root_hash == mth(event_leaves(engine, size))
    assert [row["tree_size"] for row in checkpoints.list_checkpoints(engine)] == [size, 5]
    assert checkpoints.latest(engine).checkpoint == second.checkpoint
    assert checkpoints.get(engine, 5).checkpoint.tree_size == 5
    row = checkpoints.list_checkpoints(engine)[0]
    assert row["signers"] == [log.vkey.label] and row["root_hash"] == second.checkpoint.root_hash.hex()


def test_signing_the_same_head_twice_records_one_line_and_another_origin_is_refused(ledger):
    engine, _ = ledger
    log = generate_key("log")
    first = checkpoints.create_checkpoint(engine, log)
    again = checkpoints.create_checkpoint(engine, log)
    assert again.note == first.note and len(again.lines) == 1
    with pytest.raises(ConflictError, match="origin 'log', not 'other'"):
        checkpoints.create_checkpoint(engine, log, origin="other")
    with pytest.raises(InputError, match="cosigner key"):
        checkpoints.create_checkpoint(engine, generate_key("w", ALG_COSIGNATURE_V1))


def test_an_empty_ledger_has_a_checkpoint_of_size_zero(engine):
    recorded = checkpoints.create_checkpoint(engine, generate_key("log"))
    assert recorded.checkpoint.tree_size == 0
    assert recorded.checkpoint.root_hash == hashlib.sha256(b"").digest()
    assert recorded.checkpoint.chain_head == (0, chain.GENESIS_HASH) and recorded.checkpoint.recorded_at is None


def test_cosigners_add_lines_that_verify_and_a_policy_reads_them(ledger, tmp_path):
    engine, rest = ledger
    log, committee = generate_key("log"), generate_key("audit-committee")
    auditor = generate_key("auditor-a", ALG_COSIGNATURE_V1)
    checkpoints.create_checkpoint(engine, log)
    recorded, added = checkpoints.cosign(engine, 5, auditor, log.vkey, now=NOW)
    assert added and len(recorded.lines) == 2
    assert checkpoints.cosign(engine, 5, auditor, log.vkey, now=NOW)[1] is False  # one line per key
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(f"keys: [{log.vkey.text}, {auditor.vkey.text}, {committee.vkey.text}]\n"
                           "required: [log]\nquorum: 2 of [auditor-a, audit-committee]\n")
    policy = load_policy(policy_file)
    with pytest.raises(PolicyNotMet, match="quorum 2 of \\[auditor-a, audit-committee\\]: 1 signed \\(auditor-a\\)"):
        checkpoints.verify_checkpoint(recorded.note, [], policy)
    recorded, _ = checkpoints.cosign(engine, None, committee, log.vkey)
    verified = checkpoints.verify_checkpoint(recorded.note, [], policy)
    assert {s.name for s in verified.satisfied} == {"log", "auditor-a", "audit-committee"}
    assert verified.as_dict()["verified"][1] == {"key": auditor.vkey.label, "timestamp": int(NOW.timestamp())}
    # a later checkpoint, cosigned by the same auditor: consistent with the one it signed
    append(engine, rest)
    checkpoints.create_checkpoint(engine, log)
    later, added = checkpoints.cosign(engine, None, auditor, log.vkey)
    assert added and later.checkpoint.tree_size == 5 + len(rest)
    witness = generate_key("witness", ALG_COSIGNATURE_V1)
    checkpoints.cosign(engine, None, witness, log.vkey)
    with pytest.raises(ConflictError, match="already cosigned the larger tree of size"):
        checkpoints.cosign(engine, 5, witness, log.vkey)  # a cosignature/v1 states the largest tree seen


def test_a_cosignature_must_verify_and_be_by_the_key_named(ledger):
    engine, _ = ledger
    log, auditor, other = generate_key("log"), generate_key("auditor"), generate_key("other")
    recorded = checkpoints.create_checkpoint(engine, log)
    good = signature_line(recorded.checkpoint.body, auditor)
    with pytest.raises(InputError, match="signed by other\\+.*not by the key given \\(auditor\\+"):
        checkpoints.add_signature(engine, 5, signature_line(recorded.checkpoint.body, other), auditor.vkey)
    forged = signature_line(recorded.checkpoint.body.replace("\n5\n", "\n6\n"), auditor)
    with pytest.raises(SignatureError, match="invalid signature for key auditor\\+"):
        checkpoints.add_signature(engine, 5, forged, auditor.vkey)
    with pytest.raises(SignatureError, match="no signature by a known key"):
        checkpoints.cosign(engine, 5, auditor, other.vkey)  # the log key given is not the log's
    with pytest.raises(checkpoints.CheckpointNotFound, match="no checkpoint is recorded at tree size 4"):
        checkpoints.add_signature(engine, 4, good, auditor.vkey)
    assert checkpoints.add_signature(engine, 5, good, auditor.vkey, log.vkey)[1]


def test_a_rewritten_ledger_is_not_signed_again_nor_cosigned(ledger):
    engine, rest = ledger
    log = generate_key("log")
    checkpoints.create_checkpoint(engine, log)
    append(engine, rest)
    with engine.begin() as conn:  # the attacker drops the guard and rewrites the first nodes
        if conn.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER IF EXISTS merkle_nodes_no_update"))
        else:
            conn.execute(text("ALTER TABLE merkle_nodes DISABLE TRIGGER USER"))
        conn.execute(text("UPDATE merkle_nodes SET hash = :h WHERE idx = 0"), {"h": "ab" * 32})
    with pytest.raises(LedgerCorrupt, match="no longer has the root that checkpoint signed"):
        checkpoints.create_checkpoint(engine, log)
    with pytest.raises(LedgerCorrupt, match="Merkle root at size 5 is not the checkpoint's"):
        checkpoints.cosign(engine, 5, generate_key("auditor"), log.vkey)


def test_the_go_reference_opens_a_ledger_checkpoint(sqlite_engine, notecheck):
    append(sqlite_engine, _story().drafts())
    log, auditor = generate_key("gpufleet.example/ledger"), generate_key("auditor.example", ALG_COSIGNATURE_V1)
    recorded = checkpoints.create_checkpoint(sqlite_engine, log)
    recorded, _ = checkpoints.cosign(sqlite_engine, None, auditor, log.vkey)
    answer = notecheck.open(recorded.note, log.vkey.text, auditor.vkey.text)
    assert [s["name"] for s in answer["verified"]] == [log.name, auditor.name], answer
    size = recorded.checkpoint.tree_size
    assert answer["checkpoint"]["size"] == size
    assert answer["checkpoint"]["root_hex"] == mth(event_leaves(sqlite_engine, size)).hex()


# -- the command line ----------------------------------------------------------------------------------


@pytest.fixture
def cli_ledger(tmp_path):
    """An SQLite ledger file with the story's events, and a log key pair made by the CLI."""
    from cli_runner import invoke

    path = tmp_path / "ledger.db"
    assert invoke("init", db=path).code == 0
    from gpufleet.ledger import db

    engine = db.make_engine(str(path))
    append(engine, _story().drafts())
    engine.dispose()
    made = invoke("keys", "generate", "--name", "gpufleet.example/ledger", "--out", tmp_path / "log.key")
    assert made.code == 0, made.stderr
    return path, tmp_path / "log.key", made.stdout.strip()


def test_cli_keys_generate_prints_the_vkey_and_refuses_to_overwrite(tmp_path):
    from cli_runner import invoke, refused

    made = invoke("keys", "generate", "--name", "auditor.example", "--out", tmp_path / "a.key", "--cosigner")
    assert made.code == 0 and made.stdout == (tmp_path / "a.key.pub").read_text()
    assert made.stdout.startswith("auditor.example+") and "mode 0600" in made.stderr
    assert stat_mode(tmp_path / "a.key") == 0o600
    refused(invoke("keys", "generate", "--name", "x", "--out", tmp_path / "a.key"), 5, "a.key already exists")
    refused(invoke("keys", "generate", "--name", "bad name", "--out", tmp_path / "b.key"), 3, "without spaces")
    refused(invoke("keys", "generate", "--name", "x", "--out", tmp_path / "no" / "b.key"), 3, "no such folder")


def stat_mode(path) -> int:
    return path.stat().st_mode & 0o777


def test_cli_create_show_list_cosign_and_verify(cli_ledger, tmp_path):
    from cli_runner import invoke, refused

    path, log_key, log_vkey = cli_ledger
    created = invoke("checkpoint", "create", "--key", log_key, db=path)
    assert created.code == 0, created.stderr
    assert created.stdout.startswith("gpufleet.example/ledger\n") and "\n\n\u2014 gpufleet.example/ledger " in \
        created.stdout
    assert invoke("checkpoint", "show", db=path).stdout == created.stdout
    size = int(created.stdout.splitlines()[1])
    assert invoke("checkpoint", "show", size, "--out", tmp_path / "cp.note", db=path).code == 0
    assert (tmp_path / "cp.note").read_text() == created.stdout
    refused(invoke("checkpoint", "show", size + 1, db=path), 3, f"no checkpoint is recorded at tree size {size + 1}")
    auditor = invoke("keys", "generate", "--name", "auditor.example", "--out", tmp_path / "a.key", "--cosigner")
    cosigned = invoke("checkpoint", "cosign", size, "--key", tmp_path / "a.key", "--log-key", log_vkey, db=path)
    assert cosigned.code == 0, cosigned.stderr
    assert cosigned.stdout.startswith(created.stdout) and "\u2014 auditor.example " in cosigned.stdout
    listed = json.loads(invoke("checkpoint", "list", "--format", "json", db=path).stdout)
    assert listed[0]["tree_size"] == size and len(listed[0]["signers"]) == 2
    assert "Checkpoints" in invoke("checkpoint", "list", db=path).stdout
    (tmp_path / "both.note").write_text(cosigned.stdout)
    checked = invoke("checkpoint", "verify", tmp_path / "both.note", "--key", log_vkey, "--key",
                     tmp_path / "a.key.pub", "--format", "json")
    assert checked.code == 0, checked.stderr
    answer = json.loads(checked.stdout)
    assert answer["tree_size"] == size and [s["key"].split("+")[0] for s in answer["verified"]] == \
        ["gpufleet.example/ledger", "auditor.example"]
    policy = tmp_path / "policy.toml"
    policy.write_text(f'keys = ["{log_vkey}", "{auditor.stdout.strip()}"]\nrequired = ["gpufleet.example/ledger"]\n'
                      'quorum = "1 of [auditor.example]"\n')
    met = invoke("checkpoint", "verify", tmp_path / "both.note", "--policy", policy)
    assert met.code == 0 and "policy met by gpufleet.example/ledger+" in met.stdout, met.stderr
    refused(invoke("checkpoint", "verify", tmp_path / "cp.note", "--policy", policy), 1,
            "quorum 1 of [auditor.example]: 0 signed (none)")


def test_cli_verify_fails_on_a_tampered_note_and_refuses_an_open_key_file(cli_ledger, tmp_path):
    from cli_runner import invoke, refused

    path, log_key, log_vkey = cli_ledger
    note = invoke("checkpoint", "create", "--key", log_key, db=path).stdout
    body = note.split("\n\n")[0] + "\n"
    (tmp_path / "edited.note").write_text(note.replace("gpufleet-chain ", "gpufleet-chain  ", 1))
    refused(invoke("checkpoint", "verify", tmp_path / "edited.note", "--key", log_vkey), 1, "invalid signature")
    from gpufleet.domain.notes import sign_note
    from gpufleet.services.keys import load_signer

    malformed = sign_note(body.replace("gpufleet-chain ", "gpufleet-chain  ", 1), [load_signer(log_key)])
    (tmp_path / "bad.note").write_text(malformed)  # signed, but not a well-formed gpufleet checkpoint
    refused(invoke("checkpoint", "verify", tmp_path / "bad.note", "--key", log_vkey), 3, "gpufleet-chain is followed")
    lines = note.splitlines(keepends=True)
    lines[1] = str(int(lines[1]) - 1) + "\n"
    (tmp_path / "forged.note").write_text("".join(lines))
    refused(invoke("checkpoint", "verify", tmp_path / "forged.note", "--key", log_vkey), 1, "invalid signature")
    refused(invoke("checkpoint", "verify", tmp_path / "missing.note", "--key", log_vkey), 3, "cannot read")
    refused(invoke("checkpoint", "verify", tmp_path / "bad.note"), 3, "at least one verifier key")
    log_key.chmod(0o644)
    refused(invoke("checkpoint", "create", "--key", log_key, db=path), 3, "mode 0644", f"chmod 600 {log_key}")


def test_cli_cosigns_a_note_file_offline(cli_ledger, tmp_path):
    from cli_runner import invoke

    path, log_key, log_vkey = cli_ledger
    (tmp_path / "cp.note").write_text(invoke("checkpoint", "create", "--key", log_key, db=path).stdout)
    invoke("keys", "generate", "--name", "committee.example", "--out", tmp_path / "c.key")
    done = invoke("checkpoint", "cosign", tmp_path / "cp.note", "--key", tmp_path / "c.key", "--log-key", log_vkey,
                  "--out", tmp_path / "cosigned.note")
    assert done.code == 0, done.stderr
    checked = invoke("checkpoint", "verify", tmp_path / "cosigned.note", "--key", tmp_path / "c.key.pub")
    assert checked.code == 0 and "signed by committee.example+" in checked.stdout
    assert "not checked (unknown key): gpufleet.example/ledger+" in checked.stdout


# -- the API -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """The app on the API world, with a server-held log key; its client, world and keys."""
    from api_world import build_world
    from fastapi.testclient import TestClient

    from gpufleet.api.app import create_app
    from gpufleet.api.settings import ServiceSettings
    from gpufleet.services.keys import generate_key_files

    folder = tmp_path_factory.mktemp("checkpoint-api")
    world = build_world(f"sqlite:///{folder / 'ledger.db'}")
    log = generate_key_files("gpufleet.example/api", folder / "log.key")
    settings = ServiceSettings(db=world.db, job_workers=1, checkpoint_key_file=folder / "log.key")
    with TestClient(create_app(settings)) as client:
        yield client, world, log


def test_api_creates_serves_and_lists_checkpoints_as_c2sp_text(api):
    client, world, log = api
    made = client.post("/v1/checkpoints", headers=world.headers("x-auditor") | {"Idempotency-Key": "cp-1"})
    assert made.status_code == 201, made.text
    size = made.json()["tree_size"]
    assert made.json()["signers"] == [log.vkey.label] and made.json()["origin"] == "gpufleet.example/api"
    replayed = client.post("/v1/checkpoints", headers=world.headers("x-auditor") | {"Idempotency-Key": "cp-1"})
    assert replayed.headers.get("Idempotent-Replayed") == "true" and replayed.json() == made.json()
    note = client.get(f"/v1/checkpoints/{size}", headers=world.headers("tesla-viewer"))
    assert note.status_code == 200 and note.headers["content-type"].startswith("text/plain")
    assert note.text == made.json()["note"] and open_note(note.text, [log.vkey]).signatures
    assert client.get("/v1/checkpoints/latest", headers=world.headers("xai-viewer")).text == note.text
    listed = client.get("/v1/checkpoints", headers=world.headers("tesla-viewer")).json()
    assert listed[0]["tree_size"] == size and listed[0]["root_hash"] == made.json()["root_hash"]
    missing = client.get(f"/v1/checkpoints/{size + 1}", headers=world.headers("tesla-viewer"))
    assert missing.status_code == 404 and "no checkpoint is recorded at tree size" in missing.json()["detail"]
    refused = client.post("/v1/checkpoints", headers=world.headers("tesla-operator"))
    assert refused.status_code == 403 and "auditor or admin" in refused.json()["detail"]


def test_api_records_an_auditors_cosignature_only_when_it_verifies(api):
    client, world, log = api
    size = client.post("/v1/checkpoints", headers=world.headers("tesla-admin")).json()["tree_size"]
    body = client.get(f"/v1/checkpoints/{size}", headers=world.headers("tesla-admin")).text.split("\n\n")[0] + "\n"
    auditor, other = generate_key("auditor.example", ALG_COSIGNATURE_V1), generate_key("other.example")
    line = signature_line(body, auditor, 1_735_787_045)

    def post(who, signature, vkey, key=None):
        headers = world.headers(who) | ({"Idempotency-Key": key} if key else {})
        return client.post(f"/v1/checkpoints/{size}/signatures", headers=headers,
                           json={"signature": signature, "vkey": vkey})

    assert post("tesla-admin", line, auditor.vkey.text).status_code == 403  # an admin does not cosign
    wrong = post("tesla-auditor", signature_line(body, other), auditor.vkey.text)
    assert wrong.status_code == 422 and "not by the key given" in wrong.json()["detail"]
    forged = post("tesla-auditor", signature_line(body + "x\n", auditor, 1_735_787_045), auditor.vkey.text)
    assert forged.status_code == 422 and "invalid signature" in forged.json()["detail"]
    assert post("tesla-auditor", line, "nonsense").status_code == 422
    done = post("tesla-auditor", line, auditor.vkey.text, key="cosign-1")
    assert done.status_code == 201 and done.json()["added"] and auditor.vkey.label in done.json()["signers"]
    again = post("tesla-auditor", line, auditor.vkey.text)
    assert again.status_code == 201 and again.json()["added"] is False
    note = client.get(f"/v1/checkpoints/{size}", headers=world.headers("tesla-viewer")).text
    assert [s.name for s in open_note(note, [log.vkey, auditor.vkey]).signatures] == [log.name, auditor.name]
    assert post("tesla-auditor", line, auditor.vkey.text).json()["note"] == note
    assert client.post(f"/v1/checkpoints/{size + 1000}/signatures", headers=world.headers("tesla-auditor"),
                       json={"signature": line, "vkey": auditor.vkey.text}).status_code == 404


def test_api_without_a_key_explains_how_to_sign(tmp_path):
    from fastapi.testclient import TestClient

    from gpufleet.api.app import create_app
    from gpufleet.api.settings import ServiceSettings
    from gpufleet.services import identity
    from gpufleet.services.fleet import FleetService, make_payload

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    fleet = FleetService.open(url, create=True)
    today = datetime.now(UTC).date()
    fleet.record_many([(make_payload("entity_registered", {"entity": "a", "name": "A"}), today, None),
                       (make_payload("person_registered", {"person": "aud", "name": "Aud"}), today, None),
                       (make_payload("access_granted", {"principal": "aud", "entity": "a", "role": "auditor"}), today,
                        None)], actor="test")
    identity.add_user(fleet, "aud")
    token = identity.create_token(fleet, "aud", scope="write").token
    with TestClient(create_app(ServiceSettings(db=url, job_workers=1))) as client:
        answer = client.post("/v1/checkpoints", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 409 and "checkpoint_key_file" in answer.json()["detail"]
        assert client.get("/v1/checkpoints/latest", headers={"Authorization": f"Bearer {token}"}).status_code == 404
