"""Key files: a signer key (the C2SP ``skey`` text) in a file only its owner can read, and its verifier
key (``vkey``) beside it in ``FILE.pub``; and signature policies read from YAML, TOML or JSON."""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path

import yaml

from gpufleet.domain.notes import (
    ALG_COSIGNATURE_V1, ALG_ED25519, KeyFormatError, SignaturePolicy, SignerKey, VerifierKey, generate_key,
    parse_skey, parse_vkey, policy_from_data,
)
from gpufleet.errors import ConflictError, InputError

MAX_KEY_FILE = 64 * 1024  # bytes: a key is one line; a policy is a few of them


def generate_key_files(name: str, path: Path, cosigner: bool = False) -> SignerKey:
    """Write a new key named ``name``: the skey to ``path`` (created mode 0600, never overwritten) and the
    vkey to ``path.pub``. ``cosigner``: a tlog-cosignature/v1 key (type 0x04) instead of a note key."""
    path = Path(path)
    public = pub_path(path)
    for target in (path, public):
        if target.exists() or target.is_symlink():
            raise ConflictError(f"{target} already exists; it is not overwritten (choose another --out)",
                                field="out")
    signer = generate_key(name, ALG_COSIGNATURE_V1 if cosigner else ALG_ED25519)
    _write_new(path, signer.text + "\n", 0o600)
    try:
        _write_new(public, signer.vkey.text + "\n", 0o644)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return signer


def pub_path(path: Path) -> Path:
    """Where the verifier key of the private key file ``path`` goes: ``path.pub``."""
    return path.with_name(path.name + ".pub")


def _write_new(path: Path, text: str, mode: int) -> None:
    """Create ``path`` with ``mode`` (O_EXCL: refuse one that appeared meanwhile) and write ``text``, synced."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    except FileExistsError:
        raise ConflictError(f"{path} already exists; it is not overwritten", field="out") from None
    except OSError as exc:
        raise InputError(f"cannot create {path}: {exc.strerror}", field="out") from None
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits away from a public file; never adds any here
        os.write(fd, text.encode())
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {exc.strerror}", field="out") from None
    os.close(fd)


def _read_small(path: Path, what: str) -> str:
    """A small text file's content, or an error naming the file and the reason."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", field=what) from None
    if len(data) > MAX_KEY_FILE:
        raise InputError(f"{path} is larger than {MAX_KEY_FILE} bytes: not a {what}", field=what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text", field=what) from None


def load_signer(path: Path) -> SignerKey:
    """The signer key in ``path``; refused when group or others may read or write it (mode not 0600)."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as exc:
        raise InputError(f"cannot read the key file {path}: {exc.strerror}", field="key") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"the key file {path} is not a regular file", field="key")
    if info.st_mode & 0o077:
        raise InputError(f"the private key file {path} has mode {stat.S_IMODE(info.st_mode):04o}: others may "
                         f"read it; run `chmod 600 {path}` (and consider the key exposed)", field="key")
    text = _read_small(path, "key").strip()
    try:
        return parse_skey(text)
    except KeyFormatError as exc:
        raise InputError(exc.message, field="key", location=str(path)) from None


def load_verifier(text_or_path: str | Path) -> VerifierKey:
    """A verifier key given as vkey text (``name+hash+base64``) or as a file holding one."""
    text = str(text_or_path).strip()
    if text.startswith("PRIVATE+KEY+"):
        return _vkey_of(text, None)
    if isinstance(text_or_path, Path) or not _looks_like_vkey(text):
        path = Path(text_or_path)
        if not path.exists():
            raise InputError(f"{text!r} is neither a verifier key (name+hash+base64) nor a file", field="vkey")
        return _vkey_of(_read_small(path, "vkey").strip(), str(path))
    return _vkey_of(text, None)


def _looks_like_vkey(text: str) -> bool:
    """Whether ``text`` has the shape of a vkey rather than a path (two plus signs, no newline)."""
    return text.count("+") >= 2 and "\n" not in text and not text.startswith("PRIVATE+KEY+")


def _vkey_of(text: str, source: str | None) -> VerifierKey:
    if text.startswith("PRIVATE+KEY+"):
        raise InputError("this is a private key (PRIVATE+KEY+...); give the verifier key, FILE.pub", field="vkey",
                         location=source)
    try:
        return parse_vkey(text)
    except KeyFormatError as exc:
        raise InputError(exc.message, field="vkey", location=source) from None


def load_policy(path: Path) -> SignaturePolicy:
    """A signature policy from a YAML, TOML (``.toml``) or JSON (``.json``) file."""
    path = Path(path)
    text = _read_small(path, "policy")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"cannot parse: {str(exc).splitlines()[0]}", field="policy", location=str(path)) from None
    if not isinstance(data, dict):
        raise InputError("a policy is a mapping with keys, required and quorum", field="policy", location=str(path))
    return policy_from_data(data, str(path))
