"""What every route needs: the service, the authenticated principal, idempotent writes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError
from starlette.responses import Response

from gpufleet.domain.access import Principal
from gpufleet.domain.chain import format_instant
from gpufleet.errors import ConflictError, InputError
from gpufleet.ledger.schema import api_requests
from gpufleet.services import identity
from gpufleet.services.fleet import FleetService
from gpufleet.services.head_state import HeadFold

bearer = HTTPBearer(auto_error=False, description="an API token (gpf_...) or an OIDC access token (JWT)")
MAX_KEY = 100


def service(request: Request) -> FleetService:
    return request.app.state.fleet


def principal(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
              ) -> Principal:
    """The caller, from its bearer token; who acts is this, never a field of the request."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise identity.Unauthenticated("send `Authorization: Bearer <token>` (an API token or an OIDC token)")
    fleet = request.app.state.fleet
    token = credentials.credentials
    verifier = request.app.state.oidc
    if identity.looks_like_jwt(token):
        if verifier is None:
            raise identity.Unauthenticated("this server accepts no OIDC tokens (no issuer is configured)")
        who = identity.authenticate_oidc(fleet, verifier, token)
    else:
        who = identity.authenticate_token(fleet, token)
    request.state.principal = who.id
    return who


Fleet = Annotated[FleetService, Depends(service)]
Caller = Annotated[Principal, Depends(principal)]
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", max_length=MAX_KEY,
    description="a retried write with the same key and body gets the first answer; another body gets 409")]


def head(fleet: Fleet) -> Iterator[HeadFold]:
    """The fold of the ledger at its head, held (never changed) until the answer is sent."""
    with fleet.reading_head() as fold:
        yield fold


HeadState = Annotated[HeadFold, Depends(head)]


async def body_digest(request: Request) -> str:
    body = await request.body()
    text = f"{request.method} {request.url.path}?{request.url.query}\n".encode() + body
    return hashlib.sha256(text).hexdigest()


def ledger_key(who: Principal, key: str | None) -> str | None:
    """The event's idempotency key: the caller's key, scoped to the caller."""
    return None if key is None else f"api:{who.id}:{key}"


async def idempotent(fleet: FleetService, who: Principal, key: str | None, digest: str,
                     run: Callable[..., tuple[int, Any]], *, with_answer: bool = False) -> Response:
    """:func:`answer_once` in the thread pool: a write's database work never holds the event loop."""
    return await run_in_threadpool(answer_once, fleet, who, key, digest, run, with_answer)


# remember(conn, status, body): store the answer in the write's own transaction
Remember = Callable[[Connection, int, Any], None]


def answer_once(fleet: FleetService, who: Principal, key: str | None, digest: str,
                run: Callable[..., tuple[int, Any]], with_answer: bool = False) -> Response:
    """Answer a write once per (caller, key): a retry with the same request gets the stored answer
    (``Idempotent-Replayed: true``), another request with the key gets 409. With ``with_answer``,
    ``run(remember)`` stores the answer inside its own transaction (one commit, and no acknowledged
    write without its answer); otherwise ``run()`` and the answer is stored after it."""
    if key is not None:
        if not key or any(not c.isprintable() for c in key):
            raise InputError("an Idempotency-Key is 1 to 100 printable characters", field="Idempotency-Key")
        stored = _stored(fleet, who, key, digest)
        if stored is not None:
            return stored

    def remember(conn: Connection, status: int, body: Any) -> None:
        if key is not None:
            conn.execute(insert(api_requests).values(
                principal=who.id, idempotency_key=key, request_sha256=digest, status=status,
                response=json.dumps(body, default=str), created_at=format_instant(datetime.now(UTC))))

    try:
        if with_answer:
            status, body = run(remember)
        else:
            status, body = run()
            if key is not None:
                with fleet.engine.begin() as conn:
                    remember(conn, status, body)
    except IntegrityError:  # a concurrent retry answered first: answer as it did
        stored = None if key is None else _stored(fleet, who, key, digest)
        if stored is None:
            raise
        return stored
    return Response(json.dumps(body, default=str), status, media_type="application/json")


def _stored(fleet: FleetService, who: Principal, key: str, digest: str) -> Response | None:
    with fleet.reader.connect() as conn:
        row = conn.execute(select(api_requests).where(api_requests.c.principal == who.id,
                                                      api_requests.c.idempotency_key == key)).first()
    if row is None:
        return None
    if row.request_sha256 != digest:
        raise ConflictError(f"Idempotency-Key '{key}' was used for a different request", field="Idempotency-Key")
    return Response(row.response, row.status, media_type="application/json",
                    headers={"Idempotent-Replayed": "true"})
