"""RFC 9457 problem details: every error the service answers is ``application/problem+json``."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from gpufleet import errors
from gpufleet.domain.access import Forbidden
from gpufleet.services.identity import Unauthenticated

PROBLEM = "application/problem+json"
TYPE_BASE = "https://gpufleet.dev/problems/"  # identifiers, documented in docs/service.md
SCHEMAS: dict[str, dict[str, Any]] = {
    "Problem": {"title": "Problem", "type": "object", "required": ["type", "title", "status"],
                "description": "RFC 9457 problem details; validation names each field in errors",
                "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                               "status": {"type": "integer", "minimum": 400, "maximum": 599},
                               "detail": {"type": "string"},
                               "errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}},
                               "request_id": {"type": ["string", "null"]}, "seq": {"type": "integer"}}},
    "FieldError": {"title": "FieldError", "type": "object", "required": ["field", "message"],
                   "properties": {"field": {"type": "string"}, "in": {"type": "string"},
                                  "message": {"type": "string"}}},
}
# Answers any authenticated route can give, documented on every one of them by document().
AUTHENTICATED = {"401": "no valid credential", "403": "the caller's roles or the credential's scope do not allow it",
                 "422": "invalid input, field by field",
                 "503": "the database is not ready, or the ledger failed its integrity checks"}


class NotFound(errors.GpufleetError):
    """A resource named by the URL does not exist (or is not visible to the caller)."""


class PreconditionFailed(errors.GpufleetError):
    """``If-Match`` named a version that is no longer the current one."""


class PreconditionRequired(errors.GpufleetError):
    """The request must say which version it acts on (``If-Match``)."""


class PayloadTooLarge(errors.GpufleetError):
    """The request body is larger than the service accepts."""


# Order matters: the first class an error is an instance of decides (subclasses before bases).
STATUS: list[tuple[type[errors.GpufleetError], int, str]] = [
    (Unauthenticated, 401, "unauthenticated"),
    (Forbidden, 403, "forbidden"),
    (NotFound, 404, "not-found"),
    (PreconditionFailed, 412, "precondition-failed"),
    (PreconditionRequired, 428, "precondition-required"),
    (PayloadTooLarge, 413, "payload-too-large"),
    (errors.UnknownReference, 422, "unknown-reference"),
    (errors.InputError, 422, "invalid-input"),
    (errors.InvariantViolation, 409, "invariant-violation"),
    (errors.ConflictError, 409, "conflict"),
    (errors.PlanInfeasible, 422, "plan-infeasible"),
    (errors.PlanError, 422, "plan-failed"),
    (errors.NotInitialized, 503, "not-initialized"),
    (errors.LedgerCorrupt, 503, "ledger-corrupt"),
]


def problem(status: int, kind: str, title: str, detail: str | None = None, **extra: Any) -> Response:
    body = {"type": TYPE_BASE + kind, "title": title, "status": status} | ({"detail": detail} if detail else {})
    headers = {"WWW-Authenticate": 'Bearer realm="gpufleet"'} if status == 401 else None
    return Response(json.dumps(body | extra), status, headers=headers, media_type=PROBLEM)


def from_error(exc: errors.GpufleetError, request: Request | None = None) -> Response:
    for cls, status, kind in STATUS:
        if isinstance(exc, cls):
            break
    else:
        status, kind = 400, "refused"
    extra: dict[str, Any] = {}
    if exc.field:
        extra["errors"] = [{"field": exc.field, "message": exc.message}]
    if isinstance(exc, errors.LedgerCorrupt) and exc.seq is not None:
        extra["seq"] = exc.seq
    return problem(status, kind, _title(kind), str(exc), **extra)


def _title(kind: str) -> str:
    return kind.replace("-", " ").capitalize()


async def gpufleet_error(request: Request, exc: errors.GpufleetError) -> Response:
    return from_error(exc, request)


async def validation_error(request: Request, exc: RequestValidationError) -> Response:
    """Field-level errors, worded as the CLI words them (pydantic's messages, field by dotted path); a
    JSON body sent as another media type is a 415."""
    given = request.headers.get("content-type", "")
    if not _is_json(given) and any(tuple(e.get("loc", ())) == ("body",) and e.get("type") != "missing"
                                     for e in exc.errors()):
        message = f"the body must be sent as application/json, not {given[:100]!r}" if given else \
            "the body must be sent with Content-Type: application/json"
        return problem(415, "unsupported-media-type", "Unsupported media type", message,
                       errors=[{"field": "Content-Type", "in": "header", "message": message}])
    found = []
    for err in exc.errors()[:50]:
        loc = [str(p) for p in err.get("loc", ())]
        where = loc[0] if loc else "request"
        field = ".".join(loc[1:]) or where
        found.append({"field": field, "in": where, "message": str(err.get("msg", "")).removeprefix("Value error, ")})
    detail = "; ".join(f"field '{e['field']}': {e['message']}" for e in found[:5])
    return problem(422, "invalid-input", "Invalid input", detail, errors=found)


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == 400 and exc.__cause__ is not None:  # FastAPI could not parse the body as JSON
        message = _unparsable(exc.__cause__)
        return problem(422, "invalid-input", "Invalid input", f"field 'body': {message}",
                       errors=[{"field": "body", "in": "body", "message": message}])
    kind = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}.get(exc.status_code, "http-error")
    return problem(exc.status_code, kind, _title(kind), str(exc.detail), )


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def _unparsable(cause: BaseException) -> str:
    if isinstance(cause, UnicodeDecodeError):
        return f"the body is not UTF-8 text ({cause.reason} at byte {cause.start})"
    if isinstance(cause, RecursionError):
        return "the body's JSON is nested too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "a number in the body's JSON has more than 4,300 digits"
    return f"the body is not JSON ({type(cause).__name__})"


async def internal_error(request: Request, exc: Exception) -> Response:
    """The last guard: logged with the request id, answered without internals."""
    rid = request.scope.get("state", {}).get("request_id")
    return problem(500, "internal-error", "Internal error",
                   "the service failed to answer; the operator can find the cause in the log by this request id",
                   request_id=rid)


def document(spec: dict[str, Any]) -> dict[str, Any]:
    """Complete the OpenAPI document in one place: every error answer is problem+json with the Problem
    schema; every authenticated operation documents 401, 403, 422 and 503, one with a body 413, one
    with path parameters 404."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(SCHEMAS)
    for operations in spec.get("paths", {}).values():
        for op in operations.values():
            responses = op.setdefault("responses", {})
            if op.get("security"):
                for code, text in AUTHENTICATED.items():
                    responses.setdefault(code, {"description": text})
            if "requestBody" in op:
                responses.setdefault("413", {"description": "the request body is over the size limit"})
                if "application/json" in op["requestBody"].get("content", {}):
                    responses.setdefault("415", {"description": "the body is not sent as application/json"})
            if any(p.get("in") == "path" for p in op.get("parameters", [])):
                responses.setdefault("404", {"description": "no such resource"})
            for code, response in responses.items():
                if code[0] in "45":
                    response["content"] = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    if "/HTTPValidationError" not in json.dumps(spec.get("paths", {})):  # FastAPI's own 422 body, replaced above
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
    return spec
