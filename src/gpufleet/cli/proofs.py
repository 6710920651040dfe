"""``gpufleet prove`` and ``gpufleet tree``: the ledger's Merkle tree (RFC 9162), its roots and proofs, as JSON.

The formats are in docs/disclosure.md; the same answers come from the API (``GET /v1/tree``,
``/v1/proofs/inclusion/{seq}``, ``/v1/proofs/consistency``), which these commands call in client mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpufleet.cli import render
from gpufleet.domain.types import MAX_SEQ
from gpufleet.errors import InputError, LedgerCorrupt

prove_app = typer.Typer(no_args_is_help=True, help="Proofs from the ledger's Merkle tree (RFC 9162), as JSON.")
tree_app = typer.Typer(no_args_is_help=True, help="The ledger's Merkle tree (RFC 9162) over its events.")
SizeOpt = Annotated[int | None, typer.Option("--size", min=0, max=MAX_SEQ,
                                             help="the tree over events 1..N (default: every event)")]


def _remote():
    from gpufleet.cli.app import Settings

    return Settings.remote


def _fleet():
    from gpufleet.cli.app import _fleet as fleet

    return fleet()


CheckpointOpt = Annotated[Path | None, typer.Option("--checkpoint", help="a checkpoint note: the proof is in the "
                                                                      "tree of its size, whose root the ledger "
                                                                      "must still have")]


def _checkpoint_size(path: Path | None, field: str = "checkpoint") -> int | None:
    """The tree size of the checkpoint note at ``path``, after checking the ledger still has its root."""
    if path is None:
        return None
    from gpufleet.services import disclosure

    try:
        note = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", field=field) from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text: not a checkpoint note", field=field) from None
    checkpoint = disclosure.read_checkpoint(note, field)
    if (remote := _remote()) is not None:
        root = remote.get("/v1/tree", size=checkpoint.tree_size)["root_hash"]
        if root != checkpoint.root_hash.hex():
            raise LedgerCorrupt(f"the ledger does not match this {field} ({path}): its root at size "
                                f"{checkpoint.tree_size} is {root[:16]}..., the checkpoint's "
                                f"{checkpoint.root_hash.hex()[:16]}...", seq=checkpoint.tree_size)
        return checkpoint.tree_size
    with _fleet().engine.connect() as conn:
        disclosure.match_ledger(conn, checkpoint, f"{field} ({path})")
    return checkpoint.tree_size


def _size_or_checkpoint(value: str, field: str) -> int:
    """OLD / NEW: a tree size, or a checkpoint note file (its size, once the ledger matches it)."""
    if value.isdigit():
        size = int(value)
        if size > MAX_SEQ:
            raise InputError(f"tree size {value} is larger than {MAX_SEQ}", field=field)
        return size
    return _checkpoint_size(Path(value), field)


@prove_app.command("inclusion")
def prove_inclusion(
    seq: Annotated[int, typer.Argument(min=1, max=MAX_SEQ, help="the event's sequence number")],
    size: SizeOpt = None,
    checkpoint: CheckpointOpt = None,
) -> None:
    """The audit path of event SEQ in the tree of the first N events (or of a checkpoint), with the event."""
    from gpufleet.services import proofs

    if size is not None and checkpoint is not None:
        raise InputError("give --size or --checkpoint, not both", field="checkpoint")
    size = _checkpoint_size(checkpoint) if checkpoint is not None else size
    if (remote := _remote()) is not None:
        render.print_json(remote.get(f"/v1/proofs/inclusion/{seq}", size=size))
        return
    proof, event = proofs.inclusion(_fleet(), seq, size)
    render.print_json(proof | {"event": proofs.envelope(event)})


@prove_app.command("consistency")
def prove_consistency(
    old: Annotated[str, typer.Argument(metavar="OLD", help="the older tree size (events), or a checkpoint note")],
    new: Annotated[str, typer.Argument(metavar="NEW", help="the newer tree size (events), or a checkpoint note")],
) -> None:
    """The proof that the tree of the first OLD events is a prefix of the tree of the first NEW events
    (each a size or a checkpoint note file, whose root the ledger must have)."""
    from gpufleet.services import proofs

    old_size, new_size = _size_or_checkpoint(old, "old"), _size_or_checkpoint(new, "new")
    if (remote := _remote()) is not None:
        render.print_json(remote.get("/v1/proofs/consistency", old=old_size, new=new_size))
        return
    render.print_json(proofs.consistency(_fleet(), old_size, new_size))


@tree_app.command("root")
def tree_root(size: SizeOpt = None) -> None:
    """The root hash of the tree over the first N events: ``{"tree_size", "root_hash"}``."""
    from gpufleet.services import proofs

    if (remote := _remote()) is not None:
        render.print_json(remote.get("/v1/tree", size=size))
        return
    render.print_json(proofs.tree_root(_fleet(), size))
