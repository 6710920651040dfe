"""``gpufleet keys generate`` and ``gpufleet checkpoint create|show|list|cosign|verify``: signed checkpoints
of the ledger's Merkle tree as C2SP signed notes (docs/disclosure.md). Thin shells over
:mod:`gpufleet.services.keys` and :mod:`gpufleet.services.checkpoints`; ``verify``, ``keys generate``
and the cosigning of a note file read no database."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from gpufleet.cli import render
from gpufleet.cli.app import _fleet, app
from gpufleet.cli.render import Format, console
from gpufleet.domain.types import MAX_SEQ
from gpufleet.errors import InputError
from gpufleet.services import checkpoints, keys
from gpufleet.services.outputs import check_writable, write_text

keys_app = typer.Typer(no_args_is_help=True, help="Signing keys (C2SP signed-note Ed25519): generate a key pair; "
                                                  "register, list and revoke a person's vote-signing keys.")
checkpoint_app = typer.Typer(no_args_is_help=True, help="Signed checkpoints of the ledger's Merkle tree "
                                                        "(C2SP tlog-checkpoint): create, show, list, cosign, verify.")
if not any(group.name == "keys" for group in app.registered_groups):
    app.add_typer(keys_app, name="keys")
app.add_typer(checkpoint_app, name="checkpoint")

SignerOpt = Annotated[Path, typer.Option("--key", help="the private key file (mode 0600), from `gpufleet keys "
                                                       "generate`")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="write the note to this file instead of standard output")]
OriginOpt = Annotated[str | None, typer.Option("--origin", envvar="GPUFLEET_CHECKPOINT_ORIGIN",
                                               help="the log's origin line (default: the key's name); the same "
                                                    "for every checkpoint of a ledger")]
LogKeyOpt = Annotated[str, typer.Option("--log-key", help="the log's verifier key (vkey text or FILE.pub): its "
                                                          "signature is checked before cosigning")]


@keys_app.command("generate")
def keys_generate(
    name: Annotated[str, typer.Option("--name", help="the key's name, e.g. example.com/gpufleet-log (no spaces "
                                                     "or '+')")],
    out: Annotated[Path, typer.Option("--out", help="the private key file to create (mode 0600); the verifier "
                                                    "key goes to FILE.pub")],
    cosigner: Annotated[bool, typer.Option("--cosigner", help="a C2SP tlog-cosignature/v1 key (type 0x04) for "
                                                              "witnesses and auditors, instead of a note key")] = False,
) -> None:
    """Make a key pair; print the verifier key (vkey), which readers are given to trust signatures."""
    check_writable(out, "out")
    signer = keys.generate_key_files(name, out, cosigner=cosigner)
    render.errors.print(f"private key written to {out} (mode 0600, keep it secret); verifier key to "
                        f"{keys.pub_path(out)}", markup=False, highlight=False)
    sys.stdout.write(signer.vkey.text + "\n")


def _emit(note: str, out: Path | None) -> None:
    """A note to ``out`` or standard output, exactly as signed."""
    if out is None:
        sys.stdout.write(note)
    else:
        write_text(out, note, "out")


@checkpoint_app.command("create")
def checkpoint_create(key: SignerOpt, origin: OriginOpt = None, out: OutOpt = None) -> None:
    """Sign a checkpoint of the ledger at its head with KEY and record it; print the signed note."""
    if out is not None:
        check_writable(out, "out")
    signer = keys.load_signer(key)
    recorded = checkpoints.create_checkpoint(_fleet(), signer, origin)
    _emit(recorded.note, out)


@checkpoint_app.command("show")
def checkpoint_show(
    size: Annotated[int | None, typer.Argument(help="the tree size (default: the latest checkpoint)",
                                               min=0, max=MAX_SEQ)] = None,
    out: OutOpt = None,
) -> None:
    """Print a recorded checkpoint as its signed note (C2SP form), with every signature line recorded."""
    if out is not None:
        check_writable(out, "out")
    _emit(checkpoints.note_text(_fleet(), size), out)


@checkpoint_app.command("list")
def checkpoint_list(
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table or json")] = Format.table,
) -> None:
    """The recorded checkpoints, newest first, with who signed each."""
    rows = checkpoints.list_checkpoints(_fleet())
    if fmt is Format.json:
        render.print_json(rows)
        return
    shown = [r | {"root_hash": r["root_hash"][:16] + "...", "signers": ", ".join(r["signers"])} for r in rows]
    console.print(render.table("Checkpoints", shown, ["tree_size", "origin", "root_hash", "created_at", "signers"]))


def _read_note(path: str) -> str:
    """A note from a file, or standard input for ``-``."""
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", field="file") from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text: not a signed note", field="file") from None


@checkpoint_app.command("cosign")
def checkpoint_cosign(
    target: Annotated[str, typer.Argument(metavar="FILE_OR_SIZE", help="a tree size recorded in this ledger (or "
                                                                       "'latest'), or a note file to cosign offline")],
    key: SignerOpt, log_key: LogKeyOpt, out: OutOpt = None,
) -> None:
    """Add your signature line to a checkpoint after checking the log's signature: a recorded one (checked
    against the ledger and against the last one your key signed), or a note file (offline)."""
    if out is not None:
        check_writable(out, "out")
    signer, log = keys.load_signer(key), keys.load_verifier(log_key)
    if target == "latest" or target.isdigit():
        size = None if target == "latest" else int(target)
        recorded, added = checkpoints.cosign(_fleet(), size, signer, log)
        if not added:
            render.errors.print(f"{signer.vkey.label} had already signed the checkpoint of size "
                                f"{recorded.checkpoint.tree_size}; nothing new recorded", markup=False)
        _emit(recorded.note, out)
        return
    _emit(checkpoints.cosign_note(_read_note(target), signer, log), out)


@checkpoint_app.command("verify")
def checkpoint_verify(
    file: Annotated[str, typer.Argument(help="the signed checkpoint note (- for standard input)")],
    key: Annotated[list[str] | None, typer.Option("--key", help="a trusted verifier key (vkey text or FILE.pub); "
                                                                "repeat for several")] = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="a signature policy (YAML, TOML or JSON): the "
                                                                 "keys and signatures required")] = None,
    origin: Annotated[str | None, typer.Option("--origin", help="the origin the checkpoint must have")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table or json")] = Format.table,
) -> None:
    """Verify a signed checkpoint offline (no database): a signature by a known key, none bad, the policy;
    exit 1 if it does not verify."""
    verifiers = [keys.load_verifier(k) for k in key or []]
    loaded = keys.load_policy(policy) if policy is not None else None
    result = checkpoints.verify_checkpoint(_read_note(file), verifiers, loaded, origin)
    if fmt is Format.json:
        render.print_json({"ok": True} | result.as_dict())
        return
    cp = result.checkpoint
    console.print(f"checkpoint verifies: {cp.origin}, tree size {cp.tree_size:,}, root {cp.root_hash.hex()}",
                  markup=False, highlight=False)
    for sig in result.note.signatures:
        when = f" (cosigned at {sig.timestamp})" if sig.timestamp is not None else ""
        console.print(f"  signed by {sig.label}{when}", markup=False, highlight=False)
    for sig in result.note.unverified:
        console.print(f"  not checked (unknown key): {sig.label}", markup=False, highlight=False)
    if loaded is not None:
        console.print(f"  policy met by {', '.join(s.label for s in result.satisfied)}", markup=False,
                      highlight=False)
