"""``gpufleet prove`` / ``gpufleet tree`` and the API's proof routes: the same JSON, verified by the RFC 9162
verifiers; the event of an inclusion proof only for who may read it; errors naming the field."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from api_world import build_world
from cli_runner import invoke
from gpufleet.api.app import create_app
from gpufleet.api.settings import ServiceSettings
from gpufleet.domain import merkle
from gpufleet.domain.chain import canonical_bytes

FIELDS = ("seq", "recorded_at", "effective_date", "actor", "type", "idempotency_key", "prev_hash", "payload")


def leaf_of(envelope: dict) -> bytes:
    """The leaf hash an outsider recomputes from the event's envelope as served."""
    return merkle.leaf_hash(canonical_bytes(*(envelope[f] for f in FIELDS)))


def check_inclusion(body: dict, with_event: bool = True) -> None:
    h = bytes.fromhex
    assert body["leaf_index"] == body["seq"] - 1
    assert merkle.verify_inclusion(h(body["leaf_hash"]), body["leaf_index"], body["tree_size"],
                                   [h(p) for p in body["audit_path"]], h(body["root_hash"]))
    if with_event:
        assert body["event"]["seq"] == body["seq"] and leaf_of(body["event"]) == h(body["leaf_hash"])


def check_consistency(body: dict) -> None:
    h = bytes.fromhex
    assert merkle.verify_consistency(body["old_size"], body["new_size"], [h(p) for p in body["proof"]],
                                     h(body["old_root"]), h(body["new_root"]))


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    db = tmp_path_factory.mktemp("proofs") / "ledger.db"
    assert invoke("init", db=db).code == 0
    assert invoke("load", "src/gpufleet/examples/h100-2024.yaml", db=db).code == 0
    return db


def run_json(db, *args):
    result = invoke(*args, db=db)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def test_prove_and_tree_print_json_that_verifies(example):
    root = run_json(example, "tree", "root")
    assert root["tree_size"] == 36
    for seq, size in [(1, 1), (5, 7), (36, 36), (17, None)]:
        body = run_json(example, "prove", "inclusion", seq, *(["--size", size] if size else []))
        check_inclusion(body)
        assert body["tree_size"] == (size or 36)
        assert body["root_hash"] == run_json(example, "tree", "root", "--size", body["tree_size"])["root_hash"]
    for old, new in [(0, 36), (3, 36), (8, 8), (13, 29)]:
        body = run_json(example, "prove", "consistency", old, new)
        check_consistency(body)
        assert (body["old_root"], body["new_root"]) == tuple(
            run_json(example, "tree", "root", "--size", n)["root_hash"] for n in (old, new))


@pytest.mark.parametrize(("args", "code", "words"), [
    (("prove", "inclusion", 37), 3, "field 'seq': event 37 is not in a tree of 36 events"),
    (("prove", "inclusion", 5, "--size", 4), 3, "field 'seq'"),
    (("prove", "inclusion", 5, "--size", 40), 3, "field 'size': tree size 40 is not between 0 and"),
    (("prove", "consistency", 9, 3), 3, "field 'old'"),
    (("prove", "consistency", 3, 99), 3, "field 'new'"),
    (("tree", "root", "--size", 37), 3, "field 'size'"),
    (("prove", "inclusion", 0), 2, "greater than or equal to 1"),
    (("tree", "root", "--size", -1), 2, "--size"),
])
def test_a_proof_that_cannot_be_given_is_refused_naming_the_field(example, args, code, words):
    result = invoke(*args, db=example)
    assert (result.code, result.stdout) == (code, "")
    assert words in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('proofs-api') / 'ledger.db'}"
    world = build_world(url)
    with TestClient(create_app(ServiceSettings(db=url))) as client:
        yield client, world


def test_the_api_serves_the_cli_answers_at_stable_urls(api, tmp_path):
    client, world = api
    headers = world.headers("tesla-auditor")
    db = world.db.removeprefix("sqlite:///")
    tree = client.get("/v1/tree?size=20", headers=headers).json()
    assert tree == run_json(db, "tree", "root", "--size", 20)
    inclusion = client.get("/v1/proofs/inclusion/7?size=20", headers=headers).json()
    assert inclusion == run_json(db, "prove", "inclusion", 7, "--size", 20)
    check_inclusion(inclusion)
    consistency = client.get("/v1/proofs/consistency?old=5&new=20", headers=headers).json()
    assert consistency == run_json(db, "prove", "consistency", 5, 20)
    check_consistency(consistency)
    head = client.get("/v1/ledger/head", headers=headers).json()["seq"]
    assert client.get("/v1/proofs/consistency?old=5", headers=headers).json()["new_size"] == head


def test_an_inclusion_proof_shows_the_event_only_to_who_may_read_it(api):
    """The tesla-dc site is Tesla's: a Tesla viewer sees the event; an X viewer gets only the hashes."""
    client, world = api
    events = client.get("/v1/events?type=site_registered&limit=100", headers=world.headers("tesla-auditor")).json()
    seq = next(e["seq"] for e in events["events"] if e["payload"]["site"] == "tesla-dc")
    mine = client.get(f"/v1/proofs/inclusion/{seq}", headers=world.headers("tesla-viewer")).json()
    theirs = client.get(f"/v1/proofs/inclusion/{seq}", headers=world.headers("x-viewer")).json()
    check_inclusion(mine)
    check_inclusion(theirs, with_event=False)
    assert theirs["event"] is None and {**theirs, "event": mine["event"]} == mine


@pytest.mark.parametrize(("url", "status", "field"), [
    ("/v1/proofs/inclusion/999999", 422, "seq"), ("/v1/proofs/inclusion/0", 422, "seq"),
    ("/v1/tree?size=999999", 422, "size"), ("/v1/proofs/consistency?old=9&new=3", 422, "old"),
    ("/v1/proofs/consistency", 422, "old"),
])
def test_the_api_refuses_a_proof_it_cannot_give_naming_the_field(api, url, status, field):
    client, world = api
    answer = client.get(url, headers=world.headers("x-viewer"))
    assert answer.status_code == status and answer.headers["content-type"] == "application/problem+json"
    assert field in answer.text, answer.text
    assert client.get(url.split("?")[0]).status_code == 401
