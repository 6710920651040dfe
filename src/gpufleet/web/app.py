"""``create_app(settings)``: the API application with the dashboard under ``/ui`` (docs/dashboard.md).

The dashboard adds no second way in: its pages read the same services and call the same access checks
as the API routes. Under ``/ui`` errors are HTML pages with the reason (the API keeps problem+json),
every answer carries a Content-Security-Policy that allows only this server's own scripts and styles,
and every script and style is served from this package (plotly.js from the installed plotly package).
"""

from __future__ import annotations

import importlib.resources
import logging
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gpufleet import errors
from gpufleet.api import app as api_app
from gpufleet.api import problems
from gpufleet.api.settings import ServiceSettings
from gpufleet.web import common
from gpufleet.web.oidc import RelyingParty
from gpufleet.web.session import Signer

log = logging.getLogger("gpufleet.web")
STATIC = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain", ".svg": "image/svg+xml"}
# Scripts and styles from this server only. plotly.js sets element styles through the CSSOM (allowed)
# and adds its own rules with insertRule on a <style> element it creates, which needs 'unsafe-inline'
# for styles; scripts need nothing inline and no eval.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"), (b"x-frame-options", b"DENY")]


class UiHeaders:
    """Pure ASGI middleware: the security headers on every answer under ``/ui``."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/ui"):
            await self.app(scope, receive, send)
            return

        async def headed(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, headed)


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """The API of :func:`gpufleet.api.app.create_app` plus the dashboard under ``/ui``."""
    app = api_app.create_app(settings)
    app.state.ui_signer = Signer()
    app.state.oidc_login = RelyingParty.from_settings(app.state.settings)  # None without oidc_client_id
    app.add_middleware(UiHeaders)
    _html_errors(app)
    app.include_router(_assets_router())
    from gpufleet.web.pages import PAGES

    for module in PAGES:
        app.include_router(module.router)

    @app.get("/ui", include_in_schema=False)
    def ui_home() -> RedirectResponse:
        return RedirectResponse("/ui/fleet", 303)

    return app


def _assets_router() -> APIRouter:
    """``/ui/static/<file>``: the package's own files, and plotly.js from the plotly package."""
    router = APIRouter(prefix="/ui/static", include_in_schema=False)

    @router.get("/plotly.min.js")
    def plotly_js() -> Response:
        path = importlib.resources.files("plotly") / "package_data" / "plotly.min.js"
        return FileResponse(str(path), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    @router.get("/{name}")
    def static_file(name: str) -> Response:
        path = STATIC / name
        if "/" in name or name.startswith(".") or path.suffix not in STATIC_TYPES or not path.is_file():
            raise problems.NotFound(f"no file '{name}'")
        return FileResponse(path, media_type=STATIC_TYPES[path.suffix], headers={"Cache-Control": "max-age=3600"})

    return router


def _html_errors(app: FastAPI) -> None:
    """Under ``/ui``, errors are pages that say why (never a traceback); elsewhere the API's problems."""
    api_handlers = {errors.GpufleetError: problems.gpufleet_error, RequestValidationError: problems.validation_error,
                    StarletteHTTPException: problems.http_error, Exception: problems.internal_error}

    def dispatch(kind):
        async def handle(request: Request, exc: Exception) -> Response:
            if request.url.path.startswith("/ui"):
                return ui_error(request, exc)
            return await api_handlers[kind](request, exc)

        return handle

    for kind in api_handlers:
        app.add_exception_handler(kind, dispatch(kind))
    app.add_exception_handler(common.SignInRequired, lambda request, exc: _to_sign_in(request))
    app.add_exception_handler(common.NotFoundPage, lambda request, exc: ui_error(request, exc))


def _to_sign_in(request: Request) -> Response:
    """No session: back to the sign-in form, which returns here afterwards."""
    import urllib.parse

    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        target = "/ui/fleet"
    response = RedirectResponse("/ui/login?" + urllib.parse.urlencode({"next": target}), 303)
    response.delete_cookie("gpufleet_session", path="/ui")
    return response


def ui_error(request: Request, exc: Exception) -> Response:
    """The error as a page: its status and reason (an internal error only says where to look)."""
    if isinstance(exc, common.NotFoundPage):
        status, title, detail = 404, "Not found", str(exc)
    elif isinstance(exc, errors.GpufleetError):
        answer = problems.from_error(exc)
        status, title, detail = answer.status_code, _title(answer.status_code), str(exc)
    elif isinstance(exc, RequestValidationError):
        status, title = 422, "Invalid input"
        detail = "; ".join(f"{'.'.join(map(str, e.get('loc', ())[1:]))}: {e.get('msg')}" for e in exc.errors()[:5])
    elif isinstance(exc, StarletteHTTPException):
        status, title, detail = exc.status_code, _title(exc.status_code), str(exc.detail)
    else:
        log.exception("dashboard page failed", exc_info=exc)
        rid = request.scope.get("state", {}).get("request_id")
        status, title = 500, "Internal error"
        detail = f"the page failed; the operator can find the cause in the log by request id {rid}"
    who = None
    try:
        who = common.viewer(request)
    except Exception:  # the error page is shown signed out if the session is the problem
        who = None
    return common.render(request, "error.html", who, None, status=status, title=title, detail=detail,
                         code=status)


def _title(status: int) -> str:
    return {401: "Not signed in", 403: "Not allowed", 404: "Not found", 409: "Refused by the ledger",
            413: "Too large", 422: "Invalid input"}.get(status, "Error")
