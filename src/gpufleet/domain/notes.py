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
