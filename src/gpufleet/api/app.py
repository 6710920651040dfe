"""``create_app(settings)``: the FastAPI application. Nothing is opened at import time."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gpufleet import errors
from gpufleet.api import problems
from gpufleet.api.settings import ServiceSettings
from gpufleet.ledger import db
from gpufleet.services import identity
from gpufleet.services.fleet import FleetService
from gpufleet.services.jobs import JobRunner
from gpufleet.services.jobs import Settings as JobSettings
from gpufleet.services.verification import LedgerChecks

log = logging.getLogger("gpufleet.api")
API_VERSION = "1"


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, message and the request's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname.lower(),
                "logger": record.name, "message": record.getMessage()}
        line |= getattr(record, "fields", {})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger("gpufleet")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class RequestContext:
    """Pure ASGI middleware: a request id (``X-Request-ID``, kept from the client when sane), a body
    size limit (413, also for chunked bodies), and one JSON log line per request."""

    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = given if 0 < len(given) <= 64 and given.replace("-", "").isalnum() else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        started, status = time.perf_counter(), [0]
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await _send_problem(send, problems.problem(
                413, "payload-too-large", "Payload too large",
                f"the request body is over {self.max_body_bytes} bytes"), rid)
            return
        seen = [0]

        async def limited() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.max_body_bytes:
                    raise _TooLarge(self.max_body_bytes)
            return message

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, limited, tagged)
        except _TooLarge:
            if not status[0]:
                await _send_problem(send, problems.problem(
                    413, "payload-too-large", "Payload too large",
                    f"the request body is over {self.max_body_bytes} bytes"), rid)
                status[0] = 413
        finally:
            state = scope.get("state", {})
            log.info("request", extra={"fields": {
                "request_id": rid, "method": scope["method"], "path": scope["path"], "status": status[0],
                "ms": round(1000 * (time.perf_counter() - started), 2), "principal": state.get("principal")}})


class _TooLarge(StarletteHTTPException):
    """Raised by the body stream past the limit: FastAPI passes an HTTPException through its body
    parsing (any other error there becomes a 400), and the handler answers it as problem+json."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is over {limit} bytes")


async def _send_problem(send: Send, response, rid: str) -> None:
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": [*response.raw_headers, (b"x-request-id", rid.encode())]})
    await send({"type": "http.response.body", "body": response.body})


def check_database(settings: ServiceSettings) -> FleetService:
    """Open the database; refuse one whose migrations are behind, naming the command to run."""
    engine = db.make_engine(settings.db, must_exist=True)
    try:
        db.require_schema(engine)
    except errors.NotInitialized as exc:
        engine.dispose()
        raise errors.NotInitialized(f"{exc.message}; run `gpufleet db upgrade --db {settings.db}`") from None
    return FleetService(engine)


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """The application for ``settings`` (default: from the environment). The database is opened
    when the application starts, and refused if its schema is not current."""
    settings = settings or ServiceSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from gpufleet.services.governance import load_policy

        app.state.fleet = check_database(settings)
        app.state.policy = load_policy(settings.policy)
        app.state.checkpoint_signer = None
        if settings.checkpoint_key_file is not None:  # refused at start when others may read it
            from gpufleet.services.keys import load_signer

            app.state.checkpoint_signer = load_signer(settings.checkpoint_key_file)
        app.state.oidc = None
        if settings.oidc_issuer:
            app.state.oidc = identity.OidcVerifier(identity.OidcConfig(
                settings.oidc_issuer, settings.oidc_audience or "", settings.oidc_jwks or "", settings.oidc_claim))
        app.state.jobs = JobRunner(app.state.fleet, settings.job_workers,
                                   JobSettings(settings.traces_dir, settings.policy))
        if settings.recover_jobs:
            app.state.jobs.recover()
        app.state.checks = LedgerChecks(app.state.fleet, app.state.jobs.store)  # the chain's verification
        try:
            yield
        finally:
            app.state.jobs.shutdown()
            app.state.fleet.engine.dispose()

    app = FastAPI(title="gpufleet", version=API_VERSION, lifespan=lifespan,
                  description="The system of record and planner for a GPU fleet shared by several entities. "
                              "Every request is made by an authenticated principal (an API token or an OIDC "
                              "token); errors are RFC 9457 problem details.")
    app.state.settings = settings
    app.add_middleware(RequestContext, max_body_bytes=settings.max_body_bytes)
    app.add_exception_handler(errors.GpufleetError, problems.gpufleet_error)
    app.add_exception_handler(RequestValidationError, problems.validation_error)
    app.add_exception_handler(StarletteHTTPException, problems.http_error)
    app.add_exception_handler(Exception, problems.internal_error)

    @app.get("/healthz", tags=["health"], summary="The process is up")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="The database is reachable, migrated, and its head readable",
             responses={503: {"description": "not ready", "content": {problems.PROBLEM: {}}}})
    def readyz(request: Request):
        fleet: FleetService = request.app.state.fleet
        try:
            db.require_schema(fleet.engine)
            head = fleet.head()
        except errors.GpufleetError as exc:
            return problems.problem(503, "not-ready", "Not ready", str(exc))
        except Exception as exc:  # the database is unreachable: that is the answer, not a crash
            return problems.problem(503, "not-ready", "Not ready", f"database unreachable: {type(exc).__name__}")
        return JSONResponse({"status": "ready", "schema": db.HEAD_REVISION, "head_seq": head.seq,
                             "head_hash": head.hash})

    from gpufleet.api.routes import admin, checkpoints, fleet, governance, work

    for module in (fleet, governance, work, admin, checkpoints):
        app.include_router(module.router)

    from gpufleet.api.routes import proofs as proof_routes

    app.include_router(proof_routes.router)

    from gpufleet.api.routes import disclosures as disclosure_routes

    app.include_router(disclosure_routes.router)

    def openapi() -> dict:
        """FastAPI's document, with the error answers of every route documented in one place."""
        if app.openapi_schema is None:
            app.openapi_schema = problems.document(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
