"""``gpufleet prove`` and ``gpufleet tree``: the ledger's Merkle tree (RFC 9162), its roots and proofs, as JSON.

The formats are in docs/disclosure.md; the same answers come from the API (``GET /v1/tree``,
``/v1/proofs/inclusion/{seq}``, ``/v1/proofs/consistency``), which these commands call in client mode.
"""

from __future__ import annotations

from typing import Annotated

import typer

from gpufleet.cli import render
from gpufleet.domain.types import MAX_SEQ

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


@prove_app.command("inclusion")
def prove_inclusion(
    seq: Annotated[int, typer.Argument(min=1, max=MAX_SEQ, help="the event's sequence number")],
    size: SizeOpt = None,
) -> None:
    """The audit path of event SEQ in the tree of the first N events, with the event itself."""
    from gpufleet.services import proofs

    if (remote := _remote()) is not None:
        render.print_json(remote.get(f"/v1/proofs/inclusion/{seq}", size=size))
        return
    proof, event = proofs.inclusion(_fleet(), seq, size)
    render.print_json(proof | {"event": proofs.envelope(event)})


@prove_app.command("consistency")
def prove_consistency(
    old: Annotated[int, typer.Argument(min=0, max=MAX_SEQ, help="the older tree size (events)")],
    new: Annotated[int, typer.Argument(min=0, max=MAX_SEQ, help="the newer tree size (events)")],
) -> None:
    """The proof that the tree of the first OLD events is a prefix of the tree of the first NEW events."""
    from gpufleet.services import proofs

    if (remote := _remote()) is not None:
        render.print_json(remote.get("/v1/proofs/consistency", old=old, new=new))
        return
    render.print_json(proofs.consistency(_fleet(), old, new))


@tree_app.command("root")
def tree_root(size: SizeOpt = None) -> None:
    """The root hash of the tree over the first N events: ``{"tree_size", "root_hash"}``."""
    from gpufleet.services import proofs

    if (remote := _remote()) is not None:
        render.print_json(remote.get("/v1/tree", size=size))
        return
    render.print_json(proofs.tree_root(_fleet(), size))
