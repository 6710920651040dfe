"""Disclosure bundles (docs/disclosure.md, "Disclosure bundles"): a bundle written from a ledger verifies
offline; every kind of tampering is refused naming what failed (exit 1); events not selected are not
revealed; an independent RFC 9162 implementation (pymerkle) accepts its proofs; the API serves what the
caller may read; the demo's rewrite is caught by the first checkpoint."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pymerkle
import pytest
from fastapi.testclient import TestClient

from api_world import build_world
from cli_runner import invoke
from gpufleet.api.app import create_app
from gpufleet.api.settings import ServiceSettings
from gpufleet.domain import disclosure as dd
from gpufleet.domain import events as ev
from gpufleet.domain.notes import Checkpoint, generate_key, sign_note
from gpufleet.services import checkpoints, disclosure
from gpufleet.services.fleet import FleetService
from test_signed_votes import POLICY, VOTE_ON, fleet, register, signed_vote, vote  # noqa: F401 (fleet: a fixture)

LOG = generate_key("example.com/disclosure-test")


@pytest.fixture
def ledger(fleet: FleetService) -> tuple[FleetService, str, str]:
    """The governed story (a lends to its subsidiary b: related parties), a first checkpoint, then i's key
    registered, i's signed vote, j's unsigned one and a claim; the second checkpoint at the head."""
    first = checkpoints.create_checkpoint(fleet, LOG).note
    register(fleet)
    vote(fleet, signed=signed_vote(fleet))
    vote(fleet, "j")
    fleet.record(ev.ClaimRecorded(claim="c1", claimant="a", metric="active_gpus", model="h100", target=10.0,
                                  deadline=date(2024, 12, 31)), VOTE_ON)
    second = checkpoints.create_checkpoint(fleet, LOG).note
    return fleet, first, second


def make(ledger, kind: str = "related-party", **options) -> dict:
    fleet, first, second = ledger
    return disclosure.build_bundle(fleet, kind, note=second, keys=[LOG.vkey], previous=first, policy=POLICY,
                                   **options)


def write(tmp_path: Path, bundle: dict, name: str = "bundle.json") -> Path:
    path = tmp_path / name
    path.write_text(disclosure.bundle_text(bundle))
    return path


def test_a_bundle_round_trip_verifies_offline(ledger, tmp_path):
    bundle = make(ledger)
    types = {e["event"]["type"] for e in bundle["events"]}
    assert types == {"loan_proposed", "approval_recorded", "person_key_registered"}
    statuses = {v["person"]: v["status"] for v in bundle["votes"]}
    assert statuses == {"i": "signed-valid", "j": "unsigned"}
    (first := tmp_path / "first.note").write_text(ledger[1])
    done = invoke("verify-bundle", write(tmp_path, bundle), "--key", LOG.vkey.text, "--previous", first)
    assert done.code == 0, done.stderr
    assert "bundle verifies" in done.stdout and "signed-valid" in done.stdout and "loan_proposed" in done.stdout
    as_json = json.loads(invoke("verify-bundle", tmp_path / "bundle.json", "--key", LOG.vkey.text,
                                "--format", "json").stdout)
    assert as_json["ok"] and as_json["consistency"]["old_size"] < as_json["consistency"]["new_size"]
    assert {v["status"] for v in as_json["votes"]} == {"signed-valid", "unsigned"}


# -- tampering -------------------------------------------------------------------------------------


def _seq_of(bundle: dict, event_type: str) -> int:
    return next(e["seq"] for e in bundle["events"] if e["event"]["type"] == event_type)


def _item(bundle: dict, event_type: str) -> dict:
    return next(e for e in bundle["events"] if e["event"]["type"] == event_type)


def _bytes_changed(b: dict) -> None:
    """The proposal's GPU count changed in its canonical bytes, the readable copy made to agree."""
    item = _item(b, "loan_proposed")
    fields = dd.parse_canonical(base64.b64decode(item["canonical"]))
    fields["payload"] = fields["payload"].replace('"gpus":80', '"gpus":8')
    data = dd.canonical_bytes(*fields.values())
    item["canonical"] = base64.b64encode(data).decode()
    item["event"] |= {"payload": json.loads(fields["payload"]), "hash": hashlib.sha256(data).hexdigest()}


def _path_changed(b: dict) -> None:
    path = _item(b, "loan_proposed")["audit_path"]
    path[0] = ("0" if path[0][0] != "0" else "1") + path[0][1:]


def _dropped(b: dict) -> None:
    b["events"] = [e for e in b["events"] if e["event"]["type"] != "loan_proposed"]


def _root_changed(b: dict) -> None:
    lines = b["checkpoint"].split("\n")
    lines[2] = base64.b64encode(bytes(32)).decode()
    b["checkpoint"] = "\n".join(lines)


def _signature_removed(b: dict) -> None:
    b["checkpoint"] = b["checkpoint"].split("\n\n")[0] + "\n\n"


def _signature_forged(b: dict) -> None:
    body, sig = b["checkpoint"].split("\n\n")
    prefix, blob = sig.rstrip("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(blob))
    raw[10] ^= 1
    b["checkpoint"] = f"{body}\n\n{prefix} {base64.b64encode(bytes(raw)).decode()}\n"


def _key_swapped(b: dict) -> None:
    b["keys"] = [generate_key(LOG.name).vkey.text]


def _terms_changed(b: dict) -> None:
    signed = next(v for v in b["votes"] if v["status"] == "signed-valid")
    signed["terms"]["gpus"] = 8


def _readable_disagrees(b: dict) -> None:
    _item(b, "loan_proposed")["event"]["actor"] = "someone else"


def _status_claimed(b: dict) -> None:
    next(v for v in b["votes"] if v["status"] == "unsigned")["status"] = "signed-valid"


def _consistency_changed(b: dict) -> None:
    proof = b["consistency"]["proof"]
    proof[-1] = ("0" if proof[-1][0] != "0" else "1") + proof[-1][1:]


TAMPERING: dict[str, tuple[Callable[[dict], None], list[str]]] = {
    "an event's bytes changed": (_bytes_changed, ["event", "inclusion proof does not verify"]),
    "a path element changed": (_path_changed, ["event", "inclusion proof does not verify"]),
    "an event dropped from the coverage claimed": (_dropped, ["the selection lists it", "no proof"]),
    "the checkpoint's root changed": (_root_changed, ["the checkpoint's signatures", "invalid signature"]),
    "a signature line removed": (_signature_removed, ["the checkpoint's signatures"]),
    "a signature forged": (_signature_forged, ["the checkpoint's signatures", "invalid signature"]),
    "the log's key swapped in the bundle": (_key_swapped, ["the bundle's key", "did not sign"]),
    "a signed vote's terms changed": (_terms_changed, ["the vote of event", "signed-invalid", "terms"]),
    "the readable copy disagrees with the bytes": (_readable_disagrees, ["readable copy's actor"]),
    "an unsigned vote claimed signed": (_status_claimed, ["the vote of event", "says signed-valid"]),
    "the consistency proof changed": (_consistency_changed, ["the consistency proof", "not proven a prefix"]),
}


@pytest.mark.parametrize("name", list(TAMPERING), ids=list(TAMPERING))
def test_a_tampered_bundle_is_refused_naming_what_failed(ledger, tmp_path, name):
    bundle = make(ledger)
    assert invoke("verify-bundle", write(tmp_path, bundle, "good.json"), "--key", LOG.vkey.text).code == 0
    spoil, words = TAMPERING[name]
    spoil(bundle)
    done = invoke("verify-bundle", write(tmp_path, bundle), "--key", LOG.vkey.text)
    assert done.code == 1, done.stdout + done.stderr
    assert all(w in done.stderr for w in words), done.stderr
    assert "Traceback" not in done.stderr


def _other_root(ledger, size: int) -> str:
    """A checkpoint of ``size`` signed by the log's key over another tree (a fork)."""
    return sign_note(Checkpoint(LOG.name, size, bytes(32)).body, [LOG])


VERIFY_OPTIONS = {
    "verified with another key": (lambda ledger, tmp: ["--key", generate_key(LOG.name).vkey.text],
                                  ["the checkpoint's signatures", "no signature by a known key"]),
    "a previous checkpoint of another tree": (
        lambda ledger, tmp: ["--key", LOG.vkey.text, "--previous",
                             _note_file(tmp, _other_root(ledger, dd.load_bundle(make(ledger)).consistency.old_size))],
        ["the consistency proof", "not from yours"]),
}


def _note_file(tmp: Path, note: str) -> Path:
    (path := tmp / "previous.note").write_text(note)
    return path


@pytest.mark.parametrize("name", list(VERIFY_OPTIONS), ids=list(VERIFY_OPTIONS))
def test_the_readers_keys_and_previous_checkpoint_decide(ledger, tmp_path, name):
    options, words = VERIFY_OPTIONS[name]
    done = invoke("verify-bundle", write(tmp_path, make(ledger)), *options(ledger, tmp_path))
    assert done.code == 1 and all(w in done.stderr for w in words), done.stderr


def test_a_malformed_bundle_is_input_error(tmp_path):
    (bad := tmp_path / "bad.json").write_text('{"format": "something/v9"}')
    done = invoke("verify-bundle", bad, "--key", LOG.vkey.text)
    assert done.code == 3 and "field 'format'" in done.stderr


# -- selection -----------------------------------------------------------------------------------


def test_events_not_selected_are_not_revealed(ledger, tmp_path):
    fleet = ledger[0]
    bundle = make(ledger)
    text = write(tmp_path, bundle).read_text()
    shown = {e["seq"] for e in bundle["events"]}
    hidden = [e for e in fleet.events() if e.seq not in shown]
    assert hidden and shown
    for e in hidden:
        data = dd.canonical_bytes(e.seq, e.recorded_at, e.effective_date.isoformat(), e.actor, e.event_type,
                                  e.idempotency_key, e.prev_hash, e.payload)
        assert base64.b64encode(data).decode() not in text
        assert e.payload not in text and json.dumps(json.loads(e.payload), indent=2) not in text


@pytest.mark.parametrize(("kind", "entity", "types"), [
    ("claims", None, {"claim_recorded"}),
    ("loans", None, {"loan_proposed", "approval_recorded", "person_key_registered"}),
    ("all", "c", {"entity_registered", "access_granted"}),
    ("related-party", "c", set()),
], ids=["claims", "loans", "entity c", "related-party of c"])
def test_the_selection_by_kind_and_entity(ledger, kind, entity, types):
    bundle = make(ledger, kind, entity=entity)
    assert {e["event"]["type"] for e in bundle["events"]} == types
    dd.verify_bundle(dd.load_bundle(bundle), [LOG.vkey])


def test_a_date_range_selects_by_effective_date(ledger):
    bundle = make(ledger, "all", start=VOTE_ON, end=VOTE_ON)
    assert bundle["events"] and {e["event"]["effective_date"] for e in bundle["events"]
                                 if e["role"] == "selected"} == {VOTE_ON.isoformat()}


def test_pymerkle_verifies_the_bundles_inclusion_proofs(ledger):
    """An independent RFC 9162 implementation accepts every proof, from the bundle's bytes alone."""
    bundle = make(ledger, "all")
    cp = dd.load_bundle(bundle)
    checkpoint = disclosure.read_checkpoint(cp.checkpoint)
    for item in bundle["events"]:
        data = base64.b64decode(item["canonical"])
        leaf = pymerkle.InmemoryTree(algorithm="sha256").hash_buff(data)
        path = [bytes.fromhex(h) for h in item["audit_path"]]
        size, index = checkpoint.tree_size, item["leaf_index"] + 1
        rule = _pymerkle_rule(ledger[0], index, size)
        proof = pymerkle.InclusionProof("sha256", True, size, index, rule, [leaf, *path])
        pymerkle.verify_inclusion(leaf, checkpoint.root_hash, proof, index=index, size=size)


def _pymerkle_rule(fleet: FleetService, index: int, size: int) -> list[int]:
    """pymerkle's own rule bits for (index, size): from its tree over the same events."""
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    for e in list(fleet.events())[:size]:
        tree.append_entry(dd.canonical_bytes(e.seq, e.recorded_at, e.effective_date.isoformat(), e.actor,
                                             e.event_type, e.idempotency_key, e.prev_hash, e.payload))
    return tree.prove_inclusion(index, size).rule


def test_prove_with_a_checkpoint_refuses_a_ledger_that_does_not_match(ledger, tmp_path, sqlite_engine):
    fleet, first, second = ledger
    db = sqlite_engine.url.database
    (good := tmp_path / "cp.note").write_text(second)
    done = invoke("prove", "inclusion", "1", "--checkpoint", good, db=db)
    assert done.code == 0 and json.loads(done.stdout)["tree_size"] == fleet.head().seq
    (forged := tmp_path / "forged.note").write_text(_other_root(ledger, 3))
    done = invoke("prove", "consistency", forged, good, db=db)
    assert done.code == 1 and "the ledger does not match this old" in done.stderr


# -- the API and the demo --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    db = f"sqlite:///{tmp_path_factory.mktemp('disclosure-api') / 'ledger.db'}"
    world = build_world(db)
    fleet = FleetService.open(db)
    with TestClient(create_app(ServiceSettings(db=db, job_workers=1))) as client:
        yield client, world, fleet
    fleet.engine.dispose()


def test_the_api_needs_a_checkpoint_then_serves_what_the_caller_may_read(api):
    client, world, fleet = api
    answer = client.get("/v1/disclosures", headers=world.headers("tesla-auditor"))
    if not checkpoints.list_checkpoints(fleet):
        assert answer.status_code == 409 and "checkpoint create" in answer.json()["detail"]
        checkpoints.create_checkpoint(fleet, LOG)
    auditor = client.get("/v1/disclosures?kind=related-party", headers=world.headers("tesla-auditor")).json()
    outsider = client.get("/v1/disclosures?kind=related-party", headers=world.headers("x-viewer")).json()
    swap = {e["seq"] for e in auditor["events"] if e["event"]["type"] == "delivery_slot_swap"}
    assert swap and swap <= set(auditor["selection"]["seqs"])
    dd.verify_bundle(dd.load_bundle(auditor), [LOG.vkey])
    xai_only = client.get("/v1/disclosures?kind=related-party", headers=world.headers("xai-viewer")).json()
    assert not {e["seq"] for e in xai_only["events"]} & swap  # the swap is Tesla's and X's, not xAI's
    assert swap <= {e["seq"] for e in outsider["events"]}  # X is a party to the swap
    forbidden = client.get("/v1/disclosures?entity=tesla", headers=world.headers("x-viewer"))
    assert forbidden.status_code == 403


def test_the_demo_catches_the_rewritten_swap(tmp_path):
    from gpufleet.services.demo import run_demo

    found = run_demo(str(tmp_path / "demo.db"))["disclosure"]
    assert [c["tree_size"] for c in found["checkpoints"]] == [20, 36]
    assert [e["type"] for e in found["verified"]["events"]] == ["delivery_slot_swap"]
    tamper = found["tamper"]
    assert tamper["chain_verifies"] and tamper["consistency_with_first_checkpoint"]
    assert tamper["original_event_included"]
    assert not os.path.exists(tmp_path / "rewritten.db")
    done = invoke("verify-bundle", found["bundle"], "--key", found["key"], "--previous",
                  tmp_path / "checkpoint-2023.note")
    assert done.code == 0, done.stderr
