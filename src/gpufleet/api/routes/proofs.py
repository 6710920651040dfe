"""The ledger's Merkle tree (RFC 9162): roots, inclusion and consistency proofs (docs/disclosure.md).

Any authenticated principal reads roots and proofs: they are hashes only. An inclusion proof carries
the event itself only when the caller may read that event (as ``GET /v1/events`` filters); otherwise
``event`` is null and the caller learns only hashes.
"""

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from gpufleet.api.deps import Caller, Fleet, HeadState
from gpufleet.api.routes.fleet import ERRORS, may_read_event
from gpufleet.domain import access
from gpufleet.domain.types import MAX_SEQ
from gpufleet.services import proofs

router = APIRouter(prefix="/v1", tags=["proofs"])
HEX = r"^[0-9a-f]{64}$"
SizeQuery = Annotated[int | None, Query(ge=0, le=MAX_SEQ, description="the tree over events 1..size "
                                                                      "(default: every event, the head)")]


class TreeOut(BaseModel):
    tree_size: int = Field(description="the number of events (leaves) in the tree")
    root_hash: str = Field(pattern=HEX, description="RFC 9162 Merkle tree hash of events 1..tree_size, hex")


class EnvelopeOut(BaseModel):
    """The event as stored: ``leaf_hash = SHA-256(0x00 || canonical bytes of these fields)``."""

    seq: int
    recorded_at: str
    effective_date: str
    actor: str
    type: str
    idempotency_key: str | None
    prev_hash: str
    payload: str = Field(description="the canonical JSON text, exactly as hashed")
    hash: str


class InclusionOut(BaseModel):
    leaf_index: int = Field(description="seq - 1")
    seq: int
    tree_size: int
    leaf_hash: str = Field(pattern=HEX)
    root_hash: str = Field(pattern=HEX)
    audit_path: list[str] = Field(description="RFC 9162 inclusion path, bottom up, hex")
    event: EnvelopeOut | None = Field(description="the event, when the caller may read it; else null")


class ConsistencyOut(BaseModel):
    old_size: int
    new_size: int
    old_root: str = Field(pattern=HEX)
    new_root: str = Field(pattern=HEX)
    proof: list[str] = Field(description="RFC 9162 consistency proof, hex")


@router.get("/tree", response_model=TreeOut, responses=ERRORS, summary="The Merkle tree's root at a size")
def tree(fleet: Fleet, who: Caller, size: SizeQuery = None) -> dict:
    """``gpufleet tree root --size N``: hashes only, for any authenticated principal."""
    return proofs.tree_root(fleet, size)


@router.get("/proofs/inclusion/{seq}", response_model=InclusionOut, responses=ERRORS,
            summary="The audit path of one event in the tree of the first `size` events")
def inclusion(seq: Annotated[int, Path(ge=1, le=MAX_SEQ)], fleet: Fleet, who: Caller, head: HeadState,
              size: SizeQuery = None) -> dict:
    """``gpufleet prove inclusion SEQ --size N``. The event is included only when the caller may read it."""
    proof, event = proofs.inclusion(fleet, seq, size)
    shown = access.readable_entities(head.state, who.id) is None or may_read_event(head.state, who, event)
    return proof | {"event": proofs.envelope(event) if shown else None}


@router.get("/proofs/consistency", response_model=ConsistencyOut, responses=ERRORS,
            summary="The proof that the tree of `old` events is a prefix of the tree of `new` events")
def consistency(fleet: Fleet, who: Caller, old: Annotated[int, Query(ge=0, le=MAX_SEQ)],
                new: SizeQuery = None) -> dict:
    """``gpufleet prove consistency OLD NEW`` (``new`` defaults to the head): hashes only."""
    return proofs.consistency(fleet, old, new)
