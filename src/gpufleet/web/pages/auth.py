"""Sign in (an API token or an OIDC access token, checked as the API checks it) and sign out."""

from __future__ import annotations

import secrets
import urllib.parse

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from gpufleet.domain.access import Forbidden
from gpufleet.services import identity
from gpufleet.web import common
from gpufleet.web import session as sessions

router = APIRouter(prefix="/ui", include_in_schema=False)


def _safe_next(target: str | None) -> str:
    """Only a path of this dashboard: never an absolute URL (no open redirect)."""
    if not target or not target.startswith("/ui/") or target.startswith("//") or "\\" in target:
        return "/ui/fleet"
    return target


def _login_page(request: Request, error: str | None = None, status: int = 200, target: str | None = None) -> Response:
    nonce = request.cookies.get(sessions.LOGIN_COOKIE) or secrets.token_urlsafe(16)
    response = common.render(request, "login.html", None, None, status=status, error=error,
                             csrf=common.signer_of(request).csrf(nonce),
                             next=_safe_next(target or request.query_params.get("next")),
                             oidc=request.app.state.oidc is not None)
    response.set_cookie(sessions.LOGIN_COOKIE, nonce, max_age=3600, path="/ui", httponly=True,
                        secure=request.url.scheme == "https", samesite="strict")
    return response


@router.get("/login")
def login_form(request: Request) -> Response:
    """The sign-in form: paste an API token (``gpf_...``) or an OIDC access token."""
    return _login_page(request)


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the credential as the API does; set the session cookie; the credential is not kept."""
    fields = await common.form_of(request)
    signer = common.signer_of(request)
    if not signer.check_csrf(request.cookies.get(sessions.LOGIN_COOKIE), fields.get("csrf")):
        raise Forbidden("the sign-in form's CSRF token is missing or wrong: reload the page and sign in again")
    from starlette.concurrency import run_in_threadpool

    try:
        found = await run_in_threadpool(sessions.sign_in, request.app.state.fleet, request.app.state.oidc,
                                        fields.get("token", ""))
    except identity.Unauthenticated as exc:
        return _login_page(request, f"Sign-in refused: {exc}", status=401, target=fields.get("next"))
    target = _safe_next(fields.get("next"))
    response = RedirectResponse(target, 303)
    response.set_cookie(sessions.COOKIE, signer.dump(found), max_age=max(1, found.expires - _now()), path="/ui",
                        httponly=True, secure=request.url.scheme == "https", samesite="strict")
    response.delete_cookie(sessions.LOGIN_COOKIE, path="/ui")
    return response


@router.post("/logout")
async def logout(request: Request, who: common.Viewer) -> Response:
    """Sign out: the session cookie is cleared (its CSRF token is needed, so no other site signs you out)."""
    common.check_csrf(request, who, await common.form_of(request))
    response = RedirectResponse("/ui/login?" + urllib.parse.urlencode({"signed_out": "1"}), 303)
    response.delete_cookie(sessions.COOKIE, path="/ui")
    return response


def _now() -> int:
    import time

    return int(time.time())
