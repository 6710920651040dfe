"""C2SP signed notes, keys, checkpoints, cosignatures and signature policies (gpufleet.domain.notes), and
key files (gpufleet.services.keys). Known answers are the Go reference's (golang.org/x/mod/sumdb/note,
note_test.go) and C2SP's examples."""

from __future__ import annotations

import base64
import hashlib
import os
import stat

import pytest

from gpufleet.domain import notes
from gpufleet.domain.notes import (
    ALG_COSIGNATURE_V1, Checkpoint, NoteError, PolicyNotMet, SignatureError, add_signature, check_policy,
    generate_key, open_note, parse_checkpoint, parse_skey, parse_vkey, policy_from_data, sign_note,
    signature_line,
)
from gpufleet.errors import ConflictError, InputError
from gpufleet.services import keys

# golang.org/x/mod/sumdb/note/note_test.go
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_SIG = ("\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6"
             "RyyBwJnAM=\n")
ENOCH_SIG = ("\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1R"
             "vMc+QQ=\n")


# -- known answers ---------------------------------------------------------------------------------


def test_the_reference_signer_key_parses_to_its_verifier_key_and_key_id():
    signer = parse_skey(PETER_SKEY)
    assert (signer.name, signer.key_id.hex()) == ("PeterNeumann", "c74f20a3")
    assert signer.vkey.text == PETER_VKEY
    assert signer.text == PETER_SKEY
    public = base64.b64decode(PETER_VKEY.split("+", 2)[2])[1:]
    assert hashlib.sha256(b"PeterNeumann\n\x01" + public).digest()[:4] == bytes.fromhex("c74f20a3")


def test_signing_the_reference_text_gives_the_reference_note_byte_for_byte():
    assert sign_note(TEXT, [parse_skey(PETER_SKEY)]) == TEXT + "\n" + PETER_SIG
    signature = base64.b64decode(PETER_SIG.split(" ")[2])
    assert signature[:4] == bytes.fromhex("c74f20a3") and len(signature) == 68
    assert parse_vkey(PETER_VKEY).verify(TEXT.encode(), signature[4:])


def test_open_keeps_unknown_signatures_unverified_and_verifies_known_ones():
    peter, enoch = parse_vkey(PETER_VKEY), parse_vkey(ENOCH_VKEY)
    note = open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [peter])
    assert note.text == TEXT
    assert [s.label for s in note.signatures] == ["PeterNeumann+c74f20a3"]
    assert [s.label for s in note.unverified] == ["EnochRoot+af0cfe78"]
    both = open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [peter, enoch])
    assert [s.name for s in both.signatures] == ["PeterNeumann", "EnochRoot"] and not both.unverified


def test_repeated_signatures_count_once():
    note = open_note(TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG, [parse_vkey(PETER_VKEY)])
    assert len(note.signatures) == 1 and len(note.unverified) == 1


def test_the_c2sp_checkpoint_example_parses():
    body = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    checkpoint = parse_checkpoint(body)
    assert (checkpoint.origin, checkpoint.tree_size) == ("example.com/behind-the-sofa", 20852163)
    assert checkpoint.root_hash == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert checkpoint.body == body
    # the C2SP example's witness line: key ID, then the big-endian timestamp 1679315147 of its message
    line = ("\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin"
            "1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==")
    raw = notes.parse_signature_line(line).data
    assert len(raw) == 72 and int.from_bytes(raw[:8], "big") == 1679315147
    assert notes.cosigned_message(body, 1679315147).decode() == "cosignature/v1\ntime 1679315147\n" + body


def test_a_cosignature_v1_line_has_the_timestamp_and_verifies_only_with_its_message():
    witness = generate_key("witness.example/w1", ALG_COSIGNATURE_V1)
    assert base64.b64decode(witness.vkey.text.split("+", 2)[2])[0] == 0x04
    assert witness.key_id == hashlib.sha256(b"witness.example/w1\n\x04" + witness.vkey.public).digest()[:4]
    body = Checkpoint("log.example/x", 3, bytes(32)).body
    line = signature_line(body, witness, 1679315147)
    data = notes.parse_signature_line(line[:-1]).data
    assert data[:8] == (1679315147).to_bytes(8, "big")
    assert witness.vkey.verify(notes.cosigned_message(body, 1679315147), data[8:])
    assert not witness.vkey.verify(body.encode(), data[8:])
    opened = open_note(body + "\n" + line, [witness.vkey])
    assert opened.signatures[0].timestamp == 1679315147


# -- keys ----------------------------------------------------------------------------------------------


def test_generated_keys_round_trip_and_sign():
    signer = generate_key("gpufleet.example/log")
    assert parse_skey(signer.text) == signer and parse_vkey(signer.vkey.text) == signer.vkey
    assert signer.vkey.verify(b"hi", signer.sign(b"hi")) and not signer.vkey.verify(b"ho", signer.sign(b"hi"))


@pytest.mark.parametrize("text, reason", [
    ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match"),
    ("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "lowercase hex"),
    ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T", "base64"),
    ("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==", "not 37 bytes"),
    ("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "unknown type"),
    ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "without spaces"),
    ("PeterNeumann+c74f20a3", "3 parts"),
    (" " + PETER_VKEY, "white space"),
], ids=["wrong-hash", "uppercase-hash", "bad-base64", "wrong-length", "unknown-algorithm", "space-in-name",
        "missing-key", "leading-space"])
def test_malformed_verifier_keys_are_refused_with_the_reason(text, reason):
    with pytest.raises(InputError, match=reason):
        parse_vkey(text)


def test_every_one_byte_change_of_the_reference_keys_is_refused():
    for text, parse in ((PETER_VKEY, parse_vkey), (PETER_SKEY, parse_skey)):
        for i in range(len(text)):
            mangled = text[:i] + chr(ord(text[i]) + 1) + text[i + 1:]
            with pytest.raises(InputError):
                parse(mangled)


def test_a_signer_key_must_say_private_key():
    with pytest.raises(InputError, match="PRIVATE\\+KEY"):
        parse_skey("PUBLIC+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")


# -- malformed notes ---------------------------------------------------------------------------------

GOOD = TEXT + "\n" + PETER_SIG
MALFORMED = {
    "missing-final-newline": (GOOD[:-1], NoteError, "end with a newline"),
    "no-blank-line": (TEXT + PETER_SIG, NoteError, "no blank line"),
    "text-only": (TEXT, NoteError, "no blank line"),
    "no-signature-lines": (TEXT + "\n", NoteError, "no blank line|no signature"),
    "bad-base64": (TEXT + "\n" + PETER_SIG.replace("x08go", "x08g!"), NoteError, "base64"),
    "short-signature": (TEXT + "\n\u2014 PeterNeumann AAAA\n", NoteError, "too short"),
    "control-character": ("\x01" + GOOD, NoteError, "control character U\\+0001 on line 1"),
    "tab": (TEXT.replace(" ", "\t", 1) + "\n" + PETER_SIG, NoteError, "U\\+0009"),
    "carriage-return": (GOOD.replace("\n", "\r\n", 1), NoteError, "U\\+000D"),
    "invalid-utf8": (b"\xff" + GOOD.encode(), NoteError, "not valid UTF-8"),
    "space-in-name": (TEXT + "\n\u2014 Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvq"
                      "fqdngotpRZb6KE6RyyBwJnAM=\n", NoteError, "has a space"),
    "unexpected-line": (GOOD + "Unexpected line.\n", NoteError, "em dash"),
    "hyphen-not-em-dash": (TEXT + "\n" + PETER_SIG.replace("\u2014", "-"), NoteError, "em dash"),
    "too-many-signatures": (TEXT + "\n" + PETER_SIG * 101, NoteError, "101 signatures"),
    "unknown-key-only": (TEXT + "\n" + ENOCH_SIG, SignatureError, "no signature by a known key"),
    "known-key-bad-signature": (TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:], SignatureError,
                                "invalid signature for key PeterNeumann\\+c74f20a3"),
    "text-changed": (TEXT.replace("problem,", "problem;") + "\n" + PETER_SIG, SignatureError, "invalid signature"),
}


@pytest.mark.parametrize("name", MALFORMED, ids=list(MALFORMED))
def test_malformed_or_unverifiable_notes_are_refused_with_a_clear_error(name):
    text, error, reason = MALFORMED[name]
    with pytest.raises(error, match=reason):
        open_note(text, [parse_vkey(PETER_VKEY)])


def test_sixteen_signatures_are_accepted():
    signers = [generate_key(f"k{i}") for i in range(16)]
    note = open_note(sign_note(TEXT, signers), [s.vkey for s in signers])
    assert len(note.signatures) == 16


def test_a_key_known_twice_under_one_name_and_id_is_ambiguous():
    peter = parse_vkey(PETER_VKEY)
    twin = notes.VerifierKey.__new__(notes.VerifierKey)
    object.__setattr__(twin, "name", peter.name)
    object.__setattr__(twin, "public", bytes(32))
    object.__setattr__(twin, "algorithm", 1)
    object.__setattr__(twin, "key_id", peter.key_id)
    with pytest.raises(SignatureError, match="ambiguous key PeterNeumann\\+c74f20a3"):
        open_note(GOOD, [peter, twin])


def test_sign_refuses_a_text_without_final_newline_or_with_control_characters():
    with pytest.raises(NoteError, match="end with a newline"):
        sign_note("abc", [parse_skey(PETER_SKEY)])
    with pytest.raises(NoteError, match="control character"):
        sign_note("a\x00b\n", [parse_skey(PETER_SKEY)])


def test_add_signature_replaces_a_line_by_the_same_key():
    other = generate_key("EnochRoot")
    note = add_signature(GOOD, signature_line(TEXT, other))
    assert note.count("\u2014 ") == 2
    again = add_signature(note, signature_line(TEXT, other))
    assert again.count("\u2014 EnochRoot ") == 1


# -- checkpoints ---------------------------------------------------------------------------------------

HEAD_HASH = "ab" * 32


@pytest.mark.parametrize("body, reason", [
    ("log\n5\n", "at least 3 lines"),
    ("log\n05\n" + "A" * 43 + "=\n", "leading zeros"),
    ("log\n-5\n" + "A" * 43 + "=\n", "decimal"),
    ("log\n5\nnot base64\n", "base64"),
    ("log\n5\n" + "AAAA\n", "32 bytes"),
    ("\n5\n" + "A" * 43 + "=\n", "origin"),
    ("log\n5\n" + "A" * 43 + "=\n\nx\n", "empty"),
    ("log\n5\n" + "A" * 43 + "=", "newline"),
    ("log\n5\n" + "A" * 43 + f"=\ngpufleet-chain 4 {HEAD_HASH}\n", "names event 4"),
    ("log\n5\n" + "A" * 43 + "=\ngpufleet-chain 5 xyz\n", "64-hex-digit"),
    ("log\n5\n" + "A" * 43 + "=\ngpufleet-recorded yesterday\n", "YYYY-MM-DD"),
    ("log\n5\n" + "A" * 43 + f"=\ngpufleet-chain 5 {HEAD_HASH}\ngpufleet-chain 5 {HEAD_HASH}\n", "more than one"),
], ids=["two-lines", "leading-zero", "negative", "root-not-base64", "root-short", "empty-origin",
        "empty-extension", "no-final-newline", "chain-seq-mismatch", "chain-hash-not-hex", "recorded-not-a-time",
        "two-chain-lines"])
def test_malformed_checkpoints_are_refused(body, reason):
    with pytest.raises(NoteError, match=reason):
        parse_checkpoint(body)


def test_a_checkpoint_with_gpufleet_extensions_round_trips():
    extensions = notes.gpufleet_extensions("2024-04-23T10:00:00.000000Z", 5, HEAD_HASH)
    checkpoint = Checkpoint("gpufleet.example/ledger", 5, os.urandom(32), extensions)
    assert checkpoint.body.splitlines()[3:] == ["gpufleet-recorded 2024-04-23T10:00:00.000000Z",
                                                f"gpufleet-chain 5 {HEAD_HASH}"]
    again = parse_checkpoint(checkpoint.body)
    assert again == checkpoint
    assert again.chain_head == (5, HEAD_HASH) and again.recorded_at == "2024-04-23T10:00:00.000000Z"


def test_other_extension_lines_are_kept_opaque():
    body = "log\n0\n" + base64.b64encode(hashlib.sha256(b"").digest()).decode() + "\nsomeone-else 1 2 3\n"
    assert parse_checkpoint(body).extensions == ("someone-else 1 2 3",)


def test_open_checkpoint_checks_the_origin():
    log = generate_key("log.example")
    note = sign_note(Checkpoint("log.example", 1, bytes(32)).body, [log])
    assert notes.open_checkpoint(note, [log.vkey], "log.example")[0].tree_size == 1
    with pytest.raises(SignatureError, match="not the expected 'other'"):
        notes.open_checkpoint(note, [log.vkey], "other")


# -- policy --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parties():
    return {"log": generate_key("log"), "auditor-a": generate_key("auditor-a", ALG_COSIGNATURE_V1),
            "audit-committee": generate_key("audit-committee"), "stranger": generate_key("stranger")}


def _policy(parties, **extra):
    vkeys = [parties[n].vkey.text for n in ("log", "auditor-a", "audit-committee")]
    return policy_from_data({"keys": vkeys, "required": ["log"], **extra})


def _note(parties, *names):
    body = Checkpoint("log", 3, bytes(32)).body
    return sign_note(body, [parties[n] for n in names], timestamp=1_700_000_000)


def test_a_policy_with_the_required_key_and_a_quorum_is_satisfied(parties):
    policy = _policy(parties, quorum="2 of [auditor-a, audit-committee]")
    note = open_note(_note(parties, "log", "auditor-a", "audit-committee"), policy.verifiers())
    assert {s.name for s in check_policy(note, policy)} == {"log", "auditor-a", "audit-committee"}


@pytest.mark.parametrize("signers, quorum, reason", [
    (("log", "auditor-a"), "2 of [auditor-a, audit-committee]",
     "quorum 2 of \\[auditor-a, audit-committee\\]: 1 signed \\(auditor-a\\)"),
    (("auditor-a", "audit-committee"), None, "no verified signature by log"),
    (("log",), {"at_least": 1, "of": ["audit-committee"]}, "quorum 1 of \\[audit-committee\\]: 0 signed \\(none\\)"),
], ids=["quorum-short", "required-missing", "quorum-none"])
def test_a_policy_not_met_names_what_is_missing(parties, signers, quorum, reason):
    policy = _policy(parties, **({"quorum": quorum} if quorum else {}))
    note = open_note(_note(parties, *signers), policy.verifiers())
    with pytest.raises(PolicyNotMet, match=reason):
        check_policy(note, policy)


def test_a_signature_by_a_key_outside_the_policy_does_not_count(parties):
    policy = _policy(parties, quorum="1 of [audit-committee]")
    note = open_note(_note(parties, "log", "stranger"), [*policy.verifiers(), parties["stranger"].vkey])
    with pytest.raises(PolicyNotMet, match="audit-committee"):
        check_policy(note, policy)


@pytest.mark.parametrize("data, field, reason", [
    ({"keys": []}, "keys", "at least 1"),
    ({"keys": ["nonsense"]}, "keys", "keys\\[0\\]"),
    ({"keys": [PETER_VKEY], "required": ["EnochRoot"]}, "policy", "not listed in 'keys': EnochRoot"),
    ({"keys": [PETER_VKEY], "quorum": "two of [PeterNeumann]"}, "quorum", "N of \\[name"),
    ({"keys": [PETER_VKEY], "quorum": "2 of [PeterNeumann]"}, "quorum", "asks for 2 of 1"),
    ({"keys": [PETER_VKEY], "threshold": 1}, "threshold", "Extra inputs"),
], ids=["no-keys", "bad-vkey", "unknown-name", "bad-quorum", "unreachable-quorum", "unknown-field"])
def test_a_bad_policy_is_refused_naming_the_field(data, field, reason):
    with pytest.raises(InputError, match=reason) as caught:
        policy_from_data(data, "p.yaml")
    assert caught.value.field.startswith(field) and caught.value.location == "p.yaml"


def test_a_policy_is_read_from_yaml_toml_and_json(tmp_path, parties):
    vkeys = [parties["log"].vkey.text, parties["auditor-a"].vkey.text]
    (tmp_path / "p.yaml").write_text(f"keys:\n  - {vkeys[0]}\n  - {vkeys[1]}\nrequired: [log]\n"
                                     "quorum: 1 of [auditor-a]\n")
    (tmp_path / "p.toml").write_text(f'keys = ["{vkeys[0]}", "{vkeys[1]}"]\nrequired = ["log"]\n'
                                     '[[quorum]]\nat_least = 1\nof = ["auditor-a"]\n')
    (tmp_path / "p.json").write_text('{"keys": ["%s", "%s"], "required": ["log"], "quorum": "1 of [auditor-a]"}'
                                     % tuple(vkeys))
    loaded = {keys.load_policy(tmp_path / f"p.{ext}") for ext in ("yaml", "toml", "json")}
    assert len(loaded) == 1
    (tmp_path / "bad.yaml").write_text("keys: [\n")
    with pytest.raises(InputError, match="bad.yaml: field 'policy': cannot parse"):
        keys.load_policy(tmp_path / "bad.yaml")


# -- key files -----------------------------------------------------------------------------------------


def test_generate_key_files_writes_0600_and_the_vkey_beside_it(tmp_path):
    path = tmp_path / "log.key"
    signer = keys.generate_key_files("gpufleet.example/log", path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == signer.text + "\n"
    assert (tmp_path / "log.key.pub").read_text() == signer.vkey.text + "\n"
    assert keys.load_signer(path) == signer
    assert keys.load_verifier(tmp_path / "log.key.pub") == signer.vkey
    assert keys.load_verifier(str(tmp_path / "log.key.pub")) == signer.vkey
    assert keys.load_verifier(signer.vkey.text) == signer.vkey


def test_an_existing_key_file_is_never_overwritten(tmp_path):
    path = tmp_path / "log.key"
    first = keys.generate_key_files("log", path)
    with pytest.raises(ConflictError, match="already exists"):
        keys.generate_key_files("log", path)
    assert keys.load_signer(path) == first
    (tmp_path / "other.key.pub").write_text("x")
    with pytest.raises(ConflictError, match="other.key.pub already exists"):
        keys.generate_key_files("log", tmp_path / "other.key")
    assert not (tmp_path / "other.key").exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660], ids=oct)
def test_a_private_key_others_may_read_is_refused_with_the_fix(tmp_path, mode):
    path = tmp_path / "log.key"
    keys.generate_key_files("log", path)
    path.chmod(mode)
    with pytest.raises(InputError, match=f"{path} has mode {mode:04o}.*chmod 600 {path}"):
        keys.load_signer(path)
    path.chmod(0o400)
    assert keys.load_signer(path).name == "log"


def test_key_file_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="cannot read the key file"):
        keys.load_signer(tmp_path / "missing.key")
    bad = tmp_path / "bad.key"
    bad.write_text("PRIVATE+KEY+x+00000000+AAAA\n")
    bad.chmod(0o600)
    with pytest.raises(InputError, match=f"{bad}: field 'key'"):
        keys.load_signer(bad)
    with pytest.raises(InputError, match="private key"):
        keys.load_verifier(PETER_SKEY)
    with pytest.raises(InputError, match="neither a verifier key"):
        keys.load_verifier(str(tmp_path / "nothing.pub"))
