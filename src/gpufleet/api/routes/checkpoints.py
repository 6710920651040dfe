"""Signed checkpoints over HTTP: the notes as text/plain in the C2SP form (so standard tools fetch them),
the listing, a checkpoint signed with the server's key (``checkpoint_key_file``), and cosigners'
signature lines added by auditors (docs/disclosure.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from gpufleet.api.deps import Caller, Fleet, HeadState, IdempotencyKey, body_digest, idempotent
from gpufleet.api.problems import NotFound
from gpufleet.api.routes.fleet import ERRORS
from gpufleet.domain import access
from gpufleet.domain.access import Forbidden, Principal
from gpufleet.domain.notes import KeyFormatError, SignatureError, VerifierKey, parse_vkey
from gpufleet.domain.state import FleetState
from gpufleet.domain.types import MAX_SEQ
from gpufleet.errors import ConflictError, InputError
from gpufleet.services import checkpoints

router = APIRouter(prefix="/v1", tags=["checkpoints"])
NOTE = "text/plain; charset=utf-8"
NOTE_ANSWER = {200: {"description": "the signed note (C2SP tlog-checkpoint): body, blank line, signature lines",
                     "content": {"text/plain": {"schema": {"type": "string"}}}}}
NOT_FOUND = {404: {"description": "no checkpoint is recorded at that size (or none yet)"}}
NO_KEY = {409: {"description": "the server holds no checkpoint key (its checkpoint_key_file setting), or the "
                               "checkpoint conflicts with one recorded"}}
Size = Annotated[int, Path(ge=0, le=MAX_SEQ, description="the tree size (number of events)")]


class CheckpointOut(BaseModel):
    tree_size: int
    origin: str
    root_hash: str = Field(description="hex of the RFC 9162 root")
    created_at: str
    signers: list[str] = Field(description="the keys that signed, name+keyid, in the order they signed")


class Recorded(CheckpointOut):
    added: bool = Field(description="false when that key's line was already recorded")
    note: str = Field(description="the signed note with every line recorded")


class SignatureIn(BaseModel):
    signature: Annotated[str, Field(min_length=1, max_length=2000, description="one signature line, "
                                    "`— name base64(keyid || signature)` (the newline may be left out)")]
    vkey: Annotated[str, Field(min_length=1, max_length=1000, description="the signer's verifier key, "
                               "name+hash+base64: the line must verify with it")]


def _note(text: str) -> Response:
    return Response(text, media_type=NOTE)


def _missing(exc: checkpoints.CheckpointNotFound) -> NotFound:
    return NotFound(exc.message)


def _may_sign(state: FleetState, who: Principal, roles: str) -> None:
    """Auditors (and, for the log's own signature, admins) of any entity, with a read-write credential."""
    if not who.can_write():
        raise Forbidden("this credential is read-only; recording a signature is a write")
    if access.is_auditor(state, who.id) or ("admin" in roles and access.is_admin(state, who.id)):
        return
    raise Forbidden(f"'{who.id}' needs the role {roles} in any entity to sign checkpoints")


@router.get("/checkpoints", response_model=list[CheckpointOut], responses=ERRORS,
            summary="The recorded checkpoints, newest first, with who signed each")
def list_checkpoints(fleet: Fleet, who: Caller) -> list[dict]:
    return checkpoints.list_checkpoints(fleet)


@router.get("/checkpoints/latest", response_class=Response, responses=ERRORS | NOTE_ANSWER | NOT_FOUND,
            summary="The latest checkpoint's signed note (text/plain)")
def latest(fleet: Fleet, who: Caller) -> Response:
    found = checkpoints.latest(fleet)
    if found is None:
        raise NotFound("no checkpoint is recorded yet")
    return _note(found.note)


@router.get("/checkpoints/{size}", response_class=Response, responses=ERRORS | NOTE_ANSWER,
            summary="The signed note of the checkpoint at a tree size (text/plain)")
def checkpoint(size: Size, fleet: Fleet, who: Caller) -> Response:
    try:
        return _note(checkpoints.note_text(fleet, size))
    except checkpoints.CheckpointNotFound as exc:
        raise _missing(exc) from None


@router.post("/checkpoints", status_code=201, response_model=Recorded, responses=ERRORS | NO_KEY,
             summary="Sign a checkpoint at the head with the server's key and record it (admins, auditors)")
async def create(request: Request, fleet: Fleet, who: Caller, head: HeadState, key: IdempotencyKey = None) -> Any:
    _may_sign(head.state, who, "auditor or admin")
    signer = request.app.state.checkpoint_signer
    if signer is None:
        raise ConflictError("this server holds no checkpoint key: its custodian sets checkpoint_key_file "
                            "(GPUFLEET_CHECKPOINT_KEY_FILE), or signs with `gpufleet checkpoint create --key FILE`")
    origin = request.app.state.settings.checkpoint_origin
    digest = await body_digest(request)

    def run() -> tuple[int, dict]:
        recorded = checkpoints.create_checkpoint(fleet, signer, origin)
        return 201, recorded.summary() | {"added": True, "note": recorded.note}

    return await idempotent(fleet, who, key, digest, run)


def _verifier(text: str) -> VerifierKey:
    try:
        return parse_vkey(text.strip())
    except KeyFormatError as exc:
        raise InputError(exc.message, field="vkey") from None


@router.post("/checkpoints/{size}/signatures", status_code=201, response_model=Recorded,
             responses=ERRORS | NO_KEY, summary="Add a cosigner's signature line to a checkpoint (auditors); it "
                                                "must verify with the verifier key named")
async def add_signature(request: Request, size: Size, body: SignatureIn, fleet: Fleet, who: Caller,
                        head: HeadState, key: IdempotencyKey = None) -> Any:
    _may_sign(head.state, who, "auditor")
    verifier = _verifier(body.vkey)
    digest = await body_digest(request)

    def run() -> tuple[int, dict]:
        try:
            recorded, added = checkpoints.add_signature(fleet, size, body.signature, verifier)
        except checkpoints.CheckpointNotFound as exc:
            raise _missing(exc) from None
        except SignatureError as exc:  # the caller's line or key: invalid input, not a broken ledger
            raise InputError(exc.message, field="signature") from None
        return 201, recorded.summary() | {"added": added, "note": recorded.note}

    return await idempotent(fleet, who, key, digest, run)
