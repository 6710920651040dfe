"""Administration: users and API tokens (access roles are ledger events: POST /v1/events/access_granted)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from gpufleet.api.deps import Caller, Fleet, HeadState, IdempotencyKey, body_digest, idempotent
from gpufleet.api.routes.fleet import ERRORS
from gpufleet.domain import access
from gpufleet.domain.access import Capability, Forbidden, Principal
from gpufleet.domain.state import FleetState
from gpufleet.domain.types import FIRST_DAY, LAST_DAY, Id
from gpufleet.services import identity

router = APIRouter(prefix="/v1", tags=["admin"])


class UserIn(BaseModel):
    principal: Id


class TokenIn(BaseModel):
    name: Annotated[str, Field(max_length=200)] = ""
    scope: Literal["read", "write"] = "read"
    days: Annotated[int, Field(ge=1, le=identity.MAX_TOKEN_DAYS)] = identity.DEFAULT_TOKEN_DAYS
    principal: Id | None = Field(None, description="whose token (admins, for a principal of their entity); "
                                                   "default: the caller's own")


class UserOut(BaseModel):
    principal: str
    enabled: bool


class TokenOut(BaseModel):
    token: str = Field(description="the secret: shown in this answer only")
    token_id: str
    principal: str
    scope: Literal["read", "write"]
    expires_at: str


class Revoked(BaseModel):
    token_id: str
    revoked: bool


def _administers(state: FleetState, admin: Principal, principal: str) -> None:
    """An admin manages the principals of its entities: their service accounts, and persons who hold
    an access role there."""
    mine = {e for e, roles in access.grants(state, admin.id).items() if access.R.ADMIN in roles}
    theirs = set(access.grants(state, principal))
    if principal in state.service_accounts:
        theirs.add(state.service_accounts[principal])
    if not mine & theirs:
        raise Forbidden(f"'{admin.id}' administers {', '.join(sorted(mine)) or 'no entity'}; '{principal}' holds "
                        "no role there (grant one first: POST /v1/events/access_granted)")


@router.post("/users", status_code=201, response_model=UserOut, responses=ERRORS,
             summary="Enable a principal of your entity to sign in")
async def add_user(request: Request, body: UserIn, fleet: Fleet, who: Caller, head: HeadState,
                   key: IdempotencyKey = None) -> Any:
    access.require(head.state, who, Capability.ADMINISTER, None, writes=True)
    _administers(head.state, who, body.principal)
    digest = await body_digest(request)
    return await idempotent(fleet, who, key, digest, lambda: (201, identity.add_user(fleet, body.principal)))


@router.get("/users", responses=ERRORS, summary="Users (admins and auditors)")
def users(fleet: Fleet, who: Caller, head: HeadState) -> list[dict]:
    if not access.is_auditor(head.state, who.id):
        access.require(head.state, who, Capability.ADMINISTER, None)
    return identity.list_users(fleet)


@router.post("/tokens", status_code=201, response_model=TokenOut, responses=ERRORS,
             summary="Create an API token; the token is in this answer only")
async def create_token(request: Request, body: TokenIn, fleet: Fleet, who: Caller, head: HeadState,
                       key: IdempotencyKey = None) -> Any:
    """Your own token (never wider than the credential you call with), or, as an admin, one for a
    principal of your entity."""
    if not who.can_write():
        raise Forbidden("this credential is read-only; creating a token is a write")
    target = body.principal or who.id
    if target != who.id:
        access.require(head.state, who, Capability.ADMINISTER, None, writes=True)
        _administers(head.state, who, target)
        if target not in head.state.service_accounts:  # else an admin could act, and vote, as that person
            raise Forbidden(f"'{target}' is a person, whose tokens are their own (POST /v1/tokens with theirs, or "
                            "`gpufleet tokens create` by the ledger's custodian); admins issue them for service "
                            "accounts only")
    digest = await body_digest(request)

    def run() -> tuple[int, dict]:
        issued = identity.create_token(fleet, target, name=body.name, scope=body.scope, days=body.days)
        return 201, {"token": issued.token, "token_id": issued.token_id, "principal": issued.principal,
                     "scope": issued.scope, "expires_at": issued.expires_at}

    return await idempotent(fleet, who, key, digest, run)


@router.get("/tokens", responses=ERRORS, summary="Your tokens (never their secrets)")
def tokens(fleet: Fleet, who: Caller, head: HeadState,
           principal: Annotated[str | None, Query(max_length=80)] = None) -> list[dict]:
    target = principal or who.id
    if target != who.id:
        access.require(head.state, who, Capability.ADMINISTER, None)
        _administers(head.state, who, target)
    return identity.list_tokens(fleet, target)


@router.delete("/tokens/{token_id}", response_model=Revoked,
               responses=ERRORS | {404: {"description": "no such active token"}},
               summary="Revoke a token (yours, or as an admin one of your entity's principals)")
async def revoke(request: Request, token_id: Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")], fleet: Fleet,
                 who: Caller, head: HeadState, key: IdempotencyKey = None) -> Any:
    """A retry with the same Idempotency-Key gets the first answer (without it, a second revoke is a 422)."""
    if not who.can_write():
        raise Forbidden("this credential is read-only; revoking a token is a write")
    owner = next((t["principal"] for t in identity.list_tokens(fleet) if t["token_id"] == token_id), None)
    if owner is None:
        from gpufleet.api.problems import NotFound

        raise NotFound(f"no token '{token_id}'")
    if owner != who.id:
        access.require(head.state, who, Capability.ADMINISTER, None, writes=True)
        _administers(head.state, who, owner)
    digest = await body_digest(request)
    return await idempotent(fleet, who, key, digest, lambda: (200, identity.revoke_token(fleet, token_id)))


@router.get("/access", responses=ERRORS, summary="Access roles held, as of a date and as recorded by a time")
def access_roles(fleet: Fleet, who: Caller, head: HeadState,
                 as_of: Annotated[date | None, Query(ge=FIRST_DAY, le=LAST_DAY)] = None,
                 known_at: Annotated[str | None, Query(max_length=40)] = None,
                 entity: Annotated[str | None, Query(max_length=80)] = None) -> list[dict]:
    """Who could do what, when: the grants in force on ``as_of`` as the ledger knew them at ``known_at``.
    Auditors see every entity's; admins their entities'; others only their own grants."""
    state = fleet.state(as_of, known_at) if as_of or known_at else head.state
    mine = {e for e, roles in access.grants(head.state, who.id).items() if access.R.ADMIN in roles}
    everything = access.is_auditor(head.state, who.id)
    rows = [{"principal": p, "entity": e, "role": r} for p, e, r in sorted(state.access)
            if (entity is None or e == entity) and (everything or e in mine or p == who.id)]
    return rows

