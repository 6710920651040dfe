"""C2SP signed notes with Ed25519 keys, and the ledger's checkpoints (pure: no I/O).

The formats are exactly those of https://c2sp.org/signed-note (the Go reference is
``golang.org/x/mod/sumdb/note``), https://c2sp.org/tlog-checkpoint and the Ed25519 type of
https://c2sp.org/tlog-cosignature (``cosignature/v1``); ``docs/disclosure.md`` describes them.

* A key has a *name* (non-empty, no Unicode space, no ``+``) and a *key ID*, the first four bytes of
  ``SHA-256(name || 0x0A || type || public key)``; ``type`` is 0x01 for a signed-note Ed25519 key and
  0x04 for a timestamped Ed25519 cosigner key.
* A verifier key (``vkey``) is written ``name+<key ID, 8 hex digits>+base64(type || public key)``;
  a signer key (``skey``) ``PRIVATE+KEY+name+<key ID>+base64(type || 32-byte seed)``.
* A signed note is a text ending in a newline, a blank line, and one or more signature lines
  ``— name base64(key ID || signature)`` (U+2014, a space, the name, a space, base64, a newline).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gpufleet.errors import GpufleetError, InputError

ALG_ED25519 = 0x01  # signed-note Ed25519: the signature is Ed25519 over the note text
ALG_COSIGNATURE_V1 = 0x04  # tlog-cosignature Ed25519: u64 timestamp || Ed25519 over the cosigned message
ALGORITHMS = {ALG_ED25519: "Ed25519", ALG_COSIGNATURE_V1: "Ed25519 cosignature/v1"}
MAX_KEY_NAME = 200  # characters: the width of checkpoint_signatures.key_name
_HEX8 = re.compile(r"[0-9a-f]{8}")


class KeyFormatError(InputError):
    """A signer or verifier key that cannot be read (names what is wrong with it)."""


class NoteError(InputError):
    """A signed note, a signature line or a checkpoint that is not well formed."""


class SignatureError(GpufleetError):
    """A note does not verify: a known key's signature is bad, or no known key signed it."""

    exit_code = 1


def valid_name(name: str) -> bool:
    """A key name (or a signature line's name): non-empty, no Unicode space, no ``+``."""
    return bool(name) and "+" not in name and not any(ch.isspace() for ch in name)


def key_hash(name: str, algorithm: int, public: bytes) -> bytes:
    """The four-byte key ID: ``SHA-256(name || 0x0A || algorithm || public)[:4]``."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([algorithm]) + public).digest()[:4]


def _check_name(name: str, what: str) -> None:
    """Refuse a key name the formats cannot carry, naming the reason."""
    if not valid_name(name):
        raise KeyFormatError(f"{what} name {name!r} must be non-empty, without spaces or '+'", field="name")
    if len(name) > MAX_KEY_NAME:
        raise KeyFormatError(f"{what} name is {len(name)} characters long; at most {MAX_KEY_NAME}", field="name")


def _b64decode(text: str, what: str, error: type[GpufleetError] = KeyFormatError) -> bytes:
    """Standard base64 (RFC 4648 section 4, padded), strictly: no other characters."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise error(f"{what} is not standard base64", field=what) from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class VerifierKey:
    """A public key that verifies signatures: ``name``, ``key_id`` (4 bytes), ``algorithm`` (0x01 or 0x04)."""

    name: str
    public: bytes
    algorithm: int = ALG_ED25519
    key_id: bytes = field(init=False)

    def __post_init__(self) -> None:
        _check_name(self.name, "verifier key")
        if self.algorithm not in ALGORITHMS:
            raise KeyFormatError(f"unknown key type 0x{self.algorithm:02x}; known: 0x01 and 0x04", field="vkey")
        if len(self.public) != 32:
            raise KeyFormatError(f"an Ed25519 public key has 32 bytes, not {len(self.public)}", field="vkey")
        object.__setattr__(self, "key_id", key_hash(self.name, self.algorithm, self.public))

    @property
    def text(self) -> str:
        """The vkey: ``name+hash+base64(type || public key)``."""
        return f"{self.name}+{self.key_id.hex()}+{_b64(bytes([self.algorithm]) + self.public)}"

    @property
    def label(self) -> str:
        """``name+hash``, how errors and listings name the key."""
        return f"{self.name}+{self.key_id.hex()}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``message`` (the raw primitive)."""
        if len(signature) != 64:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class SignerKey:
    """A private key that signs: ``name``, ``key_id``, ``algorithm``; keep its ``text`` secret."""

    name: str
    seed: bytes = field(repr=False)
    algorithm: int = ALG_ED25519
    _public: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name, "signer key")
        if self.algorithm not in ALGORITHMS:
            raise KeyFormatError(f"unknown key type 0x{self.algorithm:02x}; known: 0x01 and 0x04", field="skey")
        if len(self.seed) != 32:
            raise KeyFormatError(f"an Ed25519 private key (seed) has 32 bytes, not {len(self.seed)}", field="skey")
        public = self._private().public_key().public_bytes(serialization.Encoding.Raw,
                                                           serialization.PublicFormat.Raw)
        object.__setattr__(self, "_public", public)

    def _private(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @property
    def key_id(self) -> bytes:
        """The four-byte key ID, the same as the verifier key's."""
        return key_hash(self.name, self.algorithm, self._public)

    @property
    def vkey(self) -> VerifierKey:
        """The verifier key that checks this key's signatures."""
        return VerifierKey(self.name, self._public, self.algorithm)

    @property
    def text(self) -> str:
        """The skey: ``PRIVATE+KEY+name+hash+base64(type || seed)``."""
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{_b64(bytes([self.algorithm]) + self.seed)}"

    def sign(self, message: bytes) -> bytes:
        """The Ed25519 signature of ``message`` (64 bytes; the raw primitive)."""
        return self._private().sign(message)


def generate_key(name: str, algorithm: int = ALG_ED25519) -> SignerKey:
    """A new random Ed25519 key named ``name`` (0x04: a tlog-cosignature cosigner key)."""
    _check_name(name, "key")
    seed = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return SignerKey(name, seed, algorithm)


def _split_key(text: str, parts: int, what: str) -> list[str]:
    """``text`` split on its first ``parts - 1`` plus signs, refusing surrounding space."""
    if text != text.strip():
        raise KeyFormatError(f"a {what} must not begin or end with white space", field=what)
    pieces = text.split("+", parts - 1)
    if len(pieces) != parts:
        raise KeyFormatError(f"a {what} has {parts} parts separated by '+'", field=what)
    return pieces


def _key_material(hash_text: str, data_text: str, what: str) -> tuple[bytes, int, bytes]:
    """The (key ID, type byte, key bytes) of a key's last two parts."""
    if not _HEX8.fullmatch(hash_text):
        raise KeyFormatError(f"a {what}'s key ID is 8 lowercase hex digits, not {hash_text!r}", field=what)
    data = _b64decode(data_text, what)
    if len(data) != 33:
        raise KeyFormatError(f"a {what}'s key data is a type byte and 32 bytes, not {len(data)} bytes", field=what)
    if data[0] not in ALGORITHMS:
        raise KeyFormatError(f"a {what} of unknown type 0x{data[0]:02x}; known: 0x01 and 0x04", field=what)
    return bytes.fromhex(hash_text), data[0], data[1:]


def parse_vkey(text: str) -> VerifierKey:
    """Read a verifier key ``name+hash+base64``; its key ID must match its name and key."""
    name, hash_text, data_text = _split_key(text, 3, "vkey")
    _check_name(name, "verifier key")
    key_id, algorithm, public = _key_material(hash_text, data_text, "vkey")
    key = VerifierKey(name, public, algorithm)
    if key.key_id != key_id:
        raise KeyFormatError(f"the vkey's key ID {hash_text} does not match its name and key ({key.key_id.hex()})",
                        field="vkey")
    return key


def parse_skey(text: str) -> SignerKey:
    """Read a signer key ``PRIVATE+KEY+name+hash+base64``; its key ID must match the derived public key."""
    private, key, name, hash_text, data_text = _split_key(text, 5, "skey")
    if (private, key) != ("PRIVATE", "KEY"):
        raise KeyFormatError("a signer key begins with PRIVATE+KEY+", field="skey")
    _check_name(name, "signer key")
    key_id, algorithm, seed = _key_material(hash_text, data_text, "skey")
    signer = SignerKey(name, seed, algorithm)
    if signer.key_id != key_id:
        raise KeyFormatError(f"the skey's key ID {hash_text} does not match its name and key ({signer.key_id.hex()})",
                        field="skey")
    return signer


# -- signed notes --------------------------------------------------------------------------------

SIG_PREFIX = "\u2014 "  # em dash, space
MAX_SIGNATURES = 100  # the Go reference's limit; C2SP asks a verifier to accept at least 16
COSIGNATURE_HEADER = "cosignature/v1\n"
MAX_TIMESTAMP = 2**63 - 1


@dataclass(frozen=True)
class Signature:
    """One signature line of a note: ``— name base64(key ID || signature bytes)``."""

    name: str
    key_id: bytes
    base64: str
    timestamp: int | None = None  # a verified cosignature/v1's time (POSIX seconds)

    @property
    def line(self) -> str:
        """The signature line, with its newline."""
        return f"{SIG_PREFIX}{self.name} {self.base64}\n"

    @property
    def label(self) -> str:
        """``name+hash``, as a vkey names the key."""
        return f"{self.name}+{self.key_id.hex()}"

    @property
    def data(self) -> bytes:
        """The signature bytes after the key ID."""
        return base64.b64decode(self.base64)[4:]


@dataclass(frozen=True)
class Note:
    """An opened note: its ``text`` (ending in a newline), the ``signatures`` verified by known keys,
    and the ``unverified`` ones (by keys the reader does not know)."""

    text: str
    signatures: tuple[Signature, ...]
    unverified: tuple[Signature, ...] = ()

    @property
    def signed_by(self) -> set[str]:
        """The names of the keys whose signatures verified."""
        return {s.name for s in self.signatures}


def check_text(text: str, what: str = "note") -> None:
    """Refuse a note text C2SP forbids: an ASCII control character other than newline (a ``str`` is
    valid Unicode; surrogates, which UTF-8 cannot carry, are refused too)."""
    for index, ch in enumerate(text):
        if (ch < " " and ch != "\n") or "\ud800" <= ch <= "\udfff":
            line = text.count("\n", 0, index) + 1
            raise NoteError(f"the {what} has a control character U+{ord(ch):04X} on line {line}", field=what)


def check_body(text: str) -> None:
    """A note text that can be signed: non-empty, allowed characters, ending in a newline."""
    check_text(text, "note text")
    if not text.endswith("\n"):
        raise NoteError("the note text must end with a newline", field="note text")


def parse_signature_line(line: str) -> Signature:
    """One signature line without its newline: ``— name base64``, at least five signature bytes."""
    if not line.startswith(SIG_PREFIX):
        raise NoteError(f"a signature line begins with an em dash and a space, not {line[:12]!r}",
                        field="signature")
    name, _, b64 = line[len(SIG_PREFIX):].partition(" ")
    if " " in b64:
        raise NoteError("a signature line is '— name signature': the key name or signature has a space",
                        field="signature")
    if not valid_name(name):
        raise NoteError(f"the signature line's key name {name!r} is empty or has a space or '+'",
                        field="signature")
    raw = _b64decode(b64, "signature", NoteError) if b64 else b""
    if len(raw) < 5:
        raise NoteError(f"the signature by {name!r} is too short (a key ID and a signature)", field="signature")
    return Signature(name, raw[:4], b64)


def decode_note(note_text: str | bytes) -> str:
    """A note's text from bytes (it must be valid UTF-8) or a string."""
    if isinstance(note_text, bytes):
        try:
            return note_text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NoteError(f"the note is not valid UTF-8 (byte {exc.start})", field="note") from None
    return note_text


def split_note(note_text: str | bytes) -> tuple[str, list[Signature]]:
    """The text and the signature lines of a signed note, checked for form but not verified."""
    note_text = decode_note(note_text)
    check_text(note_text)
    split = note_text.rfind("\n\n")
    if split < 0:
        raise NoteError("the note has no blank line before its signatures", field="note")
    text, block = note_text[:split + 1], note_text[split + 2:]
    if not block:
        raise NoteError("the note has no signature lines after its blank line", field="note")
    if not block.endswith("\n"):
        raise NoteError("the note must end with a newline", field="note")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"the note has {len(lines)} signatures; at most {MAX_SIGNATURES} are read", field="note")
    return text, [parse_signature_line(line) for line in lines]


def cosigned_message(body: str, timestamp: int) -> bytes:
    """What a cosignature/v1 signs: ``cosignature/v1``, ``time T`` and the checkpoint body."""
    return f"{COSIGNATURE_HEADER}time {timestamp}\n{body}".encode()


def _verify(key: VerifierKey, text: str, signature: Signature) -> Signature | None:
    """``signature`` (timestamp filled in for a cosignature) if ``key`` verifies it over ``text``."""
    data = signature.data
    if key.algorithm == ALG_COSIGNATURE_V1:
        if len(data) != 72:
            return None
        timestamp = int.from_bytes(data[:8], "big")
        ok = timestamp <= MAX_TIMESTAMP and key.verify(cosigned_message(text, timestamp), data[8:])
        return Signature(signature.name, signature.key_id, signature.base64, timestamp) if ok else None
    return signature if key.verify(text.encode(), data) else None


def _index(verifiers) -> dict[tuple[str, bytes], list[VerifierKey]]:
    """The verifiers by (name, key ID); a duplicate of the same key counts once."""
    known: dict[tuple[str, bytes], list[VerifierKey]] = {}
    for key in verifiers:
        found = known.setdefault((key.name, key.key_id), [])
        if key not in found:
            found.append(key)
    return known


def open_note(note_text: str | bytes, verifiers) -> Note:
    """Parse a signed note and verify it with the known ``verifiers`` (C2SP signed-note):
    a signature by an unknown key (name and key ID) is kept unverified; a known key's signature
    must verify, else :class:`SignatureError`; and at least one known key must have signed."""
    text, lines = split_note(note_text)
    known = _index(verifiers)
    verified: dict[tuple[str, bytes], Signature] = {}
    unverified: dict[str, Signature] = {}
    for sig in lines:
        keys = known.get((sig.name, sig.key_id))
        if not keys:
            unverified.setdefault(sig.line, sig)
            continue
        if len(keys) > 1:
            raise SignatureError(f"ambiguous key {sig.label}: two different verifier keys have that name and ID")
        if (sig.name, sig.key_id) in verified:
            continue  # a repeated signature by one key counts once
        checked = _verify(keys[0], text, sig)
        if checked is None:
            raise SignatureError(f"invalid signature for key {sig.label}")
        verified[(sig.name, sig.key_id)] = checked
    if not verified:
        names = ", ".join(k.label for keys in known.values() for k in keys) or "none given"
        raise SignatureError(f"the note has no signature by a known key (known: {names})")
    return Note(text, tuple(verified.values()), tuple(unverified.values()))


def signature_line(text: str, signer: SignerKey, timestamp: int | None = None) -> str:
    """``signer``'s signature line for the note ``text`` (a cosigner key signs cosignature/v1 at ``timestamp``)."""
    check_body(text)
    if signer.algorithm == ALG_COSIGNATURE_V1:
        if timestamp is None or not 0 <= timestamp <= MAX_TIMESTAMP:
            raise NoteError("a cosignature needs a timestamp from 0 to 2^63 - 1", field="timestamp")
        data = timestamp.to_bytes(8, "big") + signer.sign(cosigned_message(text, timestamp))
    else:
        data = signer.sign(text.encode())
    return f"{SIG_PREFIX}{signer.name} {_b64(signer.key_id + data)}\n"


def sign_note(text: str, signers, timestamp: int | None = None) -> str:
    """The signed note: ``text``, a blank line, and each signer's signature line in order."""
    signers = list(signers)
    if not signers:
        raise NoteError("a note needs at least one signer", field="key")
    return text + "\n" + "".join(signature_line(text, s, timestamp) for s in signers)


def add_signature(note_text: str, line: str) -> str:
    """``note_text`` with one more signature ``line``, replacing a line by the same key (name and ID)."""
    text, sigs = split_note(note_text)
    new = parse_signature_line(line.removesuffix("\n"))
    kept = [s.line for s in sigs if (s.name, s.key_id) != (new.name, new.key_id)]
    return text + "\n" + "".join(kept) + new.line


# -- checkpoints (C2SP tlog-checkpoint) ------------------------------------------------------------

EXT_RECORDED = "gpufleet-recorded"  # gpufleet-recorded <recorded_at of event tree_size>
EXT_CHAIN = "gpufleet-chain"  # gpufleet-chain <seq> <hash of event seq>: the ledger's hash-chain head
_RECORDED = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Checkpoint:
    """A Merkle tree head: ``origin`` (the log's identity), ``tree_size``, ``root_hash`` (32 bytes) and
    optional ``extensions`` (lines without newline). gpufleet's own extension lines are
    ``gpufleet-recorded <time>`` and ``gpufleet-chain <seq> <hash>`` (the chain head at that size)."""

    origin: str
    tree_size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise NoteError("a checkpoint's origin is one non-empty line", field="origin")
        check_text(self.origin, "origin")
        if not 0 <= self.tree_size <= MAX_TIMESTAMP:
            raise NoteError(f"tree size {self.tree_size} is out of range", field="tree_size")
        if len(self.root_hash) != 32:
            raise NoteError(f"a root hash has 32 bytes, not {len(self.root_hash)}", field="root_hash")
        for line in self.extensions:
            if not line or "\n" in line:
                raise NoteError("an extension line is one non-empty line", field="extension")
            check_text(line, "extension")
        _check_extensions(self)

    @property
    def body(self) -> str:
        """The note text: origin, size, base64 root hash, the extension lines; each ending in a newline."""
        lines = [self.origin, str(self.tree_size), _b64(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines)

    def extension(self, keyword: str) -> list[str] | None:
        """The words after ``keyword`` on its extension line, or None without one."""
        for line in self.extensions:
            word, _, rest = line.partition(" ")
            if word == keyword:
                return rest.split(" ")
        return None

    @property
    def recorded_at(self) -> str | None:
        """The ``gpufleet-recorded`` time: when the last event of the tree was recorded."""
        words = self.extension(EXT_RECORDED)
        return words[0] if words else None

    @property
    def chain_head(self) -> tuple[int, str] | None:
        """The ``gpufleet-chain`` (seq, hash): the ledger's hash-chain head at this size."""
        words = self.extension(EXT_CHAIN)
        return (int(words[0]), words[1]) if words else None


def gpufleet_extensions(recorded_at: str | None, seq: int, chain_hash: str) -> tuple[str, ...]:
    """The extension lines for a ledger whose head is event ``seq`` with ``chain_hash``."""
    lines = [f"{EXT_RECORDED} {recorded_at}"] if recorded_at else []
    return (*lines, f"{EXT_CHAIN} {seq} {chain_hash}")


def _check_extensions(cp: Checkpoint) -> None:
    """gpufleet's extension lines, when present, are well formed, once each, and agree with the size."""
    for keyword in (EXT_RECORDED, EXT_CHAIN):
        if sum(line.partition(" ")[0] == keyword for line in cp.extensions) > 1:
            raise NoteError(f"the checkpoint has more than one {keyword} line", field="extension")
    recorded = cp.extension(EXT_RECORDED)
    if recorded is not None and (len(recorded) != 1 or not _RECORDED.fullmatch(recorded[0])):
        raise NoteError(f"{EXT_RECORDED} is followed by one time YYYY-MM-DDTHH:MM:SS.ffffffZ", field="extension")
    chain = cp.extension(EXT_CHAIN)
    if chain is None:
        return
    if len(chain) != 2 or not _decimal(chain[0]) or not _HEX64.fullmatch(chain[1]):
        raise NoteError(f"{EXT_CHAIN} is followed by a sequence number and a 64-hex-digit hash", field="extension")
    if int(chain[0]) != cp.tree_size:
        raise NoteError(f"{EXT_CHAIN} names event {chain[0]}, but the tree has {cp.tree_size} events",
                        field="extension")


def _decimal(text: str) -> bool:
    """ASCII decimal without leading zeros (``0`` itself allowed)."""
    return text.isascii() and text.isdigit() and (text == "0" or not text.startswith("0"))


def parse_checkpoint(body: str) -> Checkpoint:
    """Read a checkpoint's note text (without signatures): at least three lines, each ending in a newline."""
    check_body(body)
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise NoteError(f"a checkpoint has at least 3 lines (origin, size, root hash), not {len(lines)}",
                        field="checkpoint")
    origin, size, root, *extensions = lines
    if not _decimal(size):
        raise NoteError(f"the tree size {size!r} is not a decimal number without leading zeros", field="tree_size")
    root_hash = _b64decode(root, "root_hash", NoteError)
    if not origin:
        raise NoteError("the checkpoint's origin (line 1) is empty", field="origin")
    if any(not line for line in extensions):
        raise NoteError("a checkpoint's extension lines must not be empty", field="extension")
    return Checkpoint(origin, int(size), root_hash, tuple(extensions))


def open_checkpoint(note_text: str | bytes, verifiers, origin: str | None = None) -> tuple[Checkpoint, Note]:
    """Verify a signed checkpoint with ``verifiers`` and read it; ``origin``: the one expected."""
    note = open_note(note_text, verifiers)
    checkpoint = parse_checkpoint(note.text)
    if origin is not None and checkpoint.origin != origin:
        raise SignatureError(f"the checkpoint's origin is {checkpoint.origin!r}, not the expected {origin!r}")
    return checkpoint, note


# -- signature policy ----------------------------------------------------------------------------

_QUORUM = re.compile(r"\s*(\d+)\s+of\s+\[([^\]]*)\]\s*")


class PolicyNotMet(SignatureError):
    """The note verifies, but not with the signatures a reader's policy requires."""


class Quorum(BaseModel):
    """At least ``at_least`` of the keys named in ``of`` must have signed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    at_least: int = Field(ge=1, le=MAX_SIGNATURES)
    of: tuple[str, ...] = Field(min_length=1, max_length=MAX_SIGNATURES)

    @model_validator(mode="after")
    def _reachable(self) -> Quorum:
        if self.at_least > len(set(self.of)):
            raise ValueError(f"asks for {self.at_least} of {len(set(self.of))} distinct keys")
        return self

    def __str__(self) -> str:
        return f"{self.at_least} of [{', '.join(self.of)}]"


class SignaturePolicy(BaseModel):
    """What a reader requires of a signed note: the verifier keys it trusts (``keys``, vkeys), the key
    names that must all have signed (``required``) and quorums (``quorum``: ``"2 of [a, b]"`` or
    ``{at_least: 2, of: [a, b]}``, one or a list). ``origin``: the checkpoint origin expected."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    keys: tuple[str, ...] = Field(min_length=1, max_length=MAX_SIGNATURES)
    required: tuple[str, ...] = ()
    quorum: tuple[Quorum, ...] = ()
    origin: str | None = None

    @field_validator("keys")
    @classmethod
    def _vkeys(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        for index, text in enumerate(keys):
            try:
                parse_vkey(text)
            except KeyFormatError as exc:
                raise ValueError(f"keys[{index}]: {exc.message}") from None
        return keys

    @field_validator("quorum", mode="before")
    @classmethod
    def _quorum_text(cls, value):
        items = value if isinstance(value, list | tuple) else [value]
        return [_parse_quorum(item) if isinstance(item, str) else item for item in items]

    @model_validator(mode="after")
    def _known_names(self) -> SignaturePolicy:
        known = {key.name for key in self.verifiers()}
        named = [*self.required, *(n for q in self.quorum for n in q.of)]
        unknown = sorted({n for n in named if n not in known})
        if unknown:
            raise ValueError(f"names keys not listed in 'keys': {', '.join(unknown)}")
        return self

    def verifiers(self) -> list[VerifierKey]:
        """The trusted verifier keys."""
        return [parse_vkey(text) for text in self.keys]


def _parse_quorum(text: str) -> dict:
    """``"N of [a, b, c]"`` as a quorum's fields."""
    found = _QUORUM.fullmatch(text)
    if not found:
        raise ValueError(f"a quorum is written 'N of [name, name, ...]', not {text!r}")
    names = [n.strip() for n in found.group(2).split(",") if n.strip()]
    return {"at_least": int(found.group(1)), "of": names}


def policy_from_data(data: object, source: str = "policy") -> SignaturePolicy:
    """A policy from parsed YAML, TOML or JSON; errors name the file and the field."""
    from pydantic import ValidationError

    try:
        return SignaturePolicy.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "policy"
        raise InputError(first["msg"].removeprefix("Value error, "), field=where, location=source) from None


def check_policy(note: Note, policy: SignaturePolicy) -> tuple[Signature, ...]:
    """The verified signatures of ``note`` by the policy's keys that satisfy it; :class:`PolicyNotMet`
    naming what is missing otherwise (a signature counts only by a key the policy lists)."""
    trusted = {(k.name, k.key_id) for k in policy.verifiers()}
    counted = tuple(s for s in note.signatures if (s.name, s.key_id) in trusted)
    names = {s.name for s in counted}
    missing = [f"no verified signature by {name}" for name in policy.required if name not in names]
    for quorum in policy.quorum:
        have = sorted(names & set(quorum.of))
        if len(have) < quorum.at_least:
            missing.append(f"quorum {quorum}: {len(have)} signed ({', '.join(have) or 'none'})")
    if not counted:
        missing.append("no signature by any key of the policy")
    if missing:
        raise PolicyNotMet("the signature policy is not met: " + "; ".join(missing))
    return counted


def verify_with_policy(note_text: str | bytes, policy: SignaturePolicy) -> tuple[Checkpoint, Note,
                                                                                  tuple[Signature, ...]]:
    """Open a signed checkpoint with the policy's keys, check its origin, then the policy."""
    checkpoint, note = open_checkpoint(note_text, policy.verifiers(), policy.origin)
    return checkpoint, note, check_policy(note, policy)
