"""Interoperability: gpufleet's signed notes and checkpoints, opened by the Go reference implementation
(golang.org/x/mod/sumdb/note's note.Open, from Debian's golang-golang-x-mod-dev), and the Go reference's
keys and notes read by gpufleet. Cosignature/v1 lines (type 0x04, which x/mod predates) are checked by a
Verifier written from the C2SP text in Go (tests/interop/notecheck.go) that note.Open calls."""

from __future__ import annotations

import base64
import os

from go_note import notecheck  # noqa: F401 - the fixture

from gpufleet.domain import notes
from gpufleet.domain.notes import ALG_COSIGNATURE_V1, Checkpoint, generate_key, open_note, parse_skey, parse_vkey

TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"


def _checkpoint(size: int = 42) -> Checkpoint:
    extensions = notes.gpufleet_extensions("2024-04-23T10:00:00.123456Z", size, os.urandom(32).hex())
    return Checkpoint("gpufleet.example/ledger", size, os.urandom(32), extensions)


def test_go_opens_a_gpufleet_checkpoint_and_reads_its_lines(notecheck):
    log = generate_key("gpufleet.example/ledger")
    checkpoint = _checkpoint()
    answer = notecheck.open(notes.sign_note(checkpoint.body, [log]), log.vkey.text)
    assert answer.get("error") is None, answer
    assert answer["text"] == checkpoint.body
    assert answer["verified"] == [{"name": log.name, "hash": log.key_id.hex()}]
    assert answer["checkpoint"] == {"origin": checkpoint.origin, "size": 42, "root_hex": checkpoint.root_hash.hex(),
                                    "extensions": list(checkpoint.extensions)}


def test_go_verifies_cosignatures_and_ignores_unknown_keys(notecheck):
    log, committee = generate_key("log.example"), generate_key("audit-committee.example")
    witness = generate_key("auditor.example/w1", ALG_COSIGNATURE_V1)
    checkpoint = _checkpoint()
    note = notes.sign_note(checkpoint.body, [log])
    note = notes.add_signature(note, notes.signature_line(checkpoint.body, committee))
    note = notes.add_signature(note, notes.signature_line(checkpoint.body, witness, 1_713_866_400))
    everyone = notecheck.open(note, log.vkey.text, committee.vkey.text, witness.vkey.text)
    assert [s["name"] for s in everyone["verified"]] == [log.name, committee.name, witness.name], everyone
    only_log = notecheck.open(note, log.vkey.text)
    assert [s["name"] for s in only_log["verified"]] == [log.name]
    assert [s["hash"] for s in only_log["unverified"]] == [committee.key_id.hex(), witness.key_id.hex()]


def test_go_refuses_what_gpufleet_refuses(notecheck):
    log, other = generate_key("log.example"), generate_key("other.example")
    checkpoint = _checkpoint()
    note = notes.sign_note(checkpoint.body, [log])
    tampered = note.replace("\n42\n", "\n43\n", 1)
    assert "invalid signature for key log.example+" in notecheck.open(tampered, log.vkey.text)["error"]
    assert notecheck.open(note, other.vkey.text)["error"] == "note has no verifiable signatures"
    assert notecheck.open(note[:-1], log.vkey.text)["error"] == "malformed note"
    witness = generate_key("auditor.example/w1", ALG_COSIGNATURE_V1)
    line = notes.signature_line(checkpoint.body, witness, 1_713_866_400)
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[11] ^= 1  # the timestamp, which the cosigned message includes
    forged = note + f"\u2014 {witness.name} {base64.b64encode(bytes(raw)).decode()}\n"
    assert "invalid signature for key auditor.example/w1+" in notecheck.open(forged, witness.vkey.text)["error"]


def test_go_and_gpufleet_sign_alike_and_read_each_others_keys(notecheck):
    mine = generate_key("gpufleet.example/log")
    body = _checkpoint().body
    assert notecheck.sign(body, mine.text) == notes.sign_note(body, [mine])  # Ed25519 is deterministic
    skey, vkey = notecheck.generate("go.example/log")
    theirs = parse_skey(skey)
    assert theirs.vkey == parse_vkey(vkey) and theirs.text == skey
    signed_by_go = notecheck.sign(TEXT, skey)
    assert open_note(signed_by_go, [parse_vkey(vkey)]).signatures[0].name == "go.example/log"
