"""Sign in (an API token or an OIDC access token, checked as the API checks it, or through the OIDC issuer:
:mod:`gpufleet.web.oidc`) and sign out."""

from __future__ import annotations

import secrets
import urllib.parse
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from gpufleet.domain.access import Forbidden
from gpufleet.services import identity
from gpufleet.web import common, oidc
from gpufleet.web import session as sessions

router = APIRouter(prefix="/ui", include_in_schema=False)


def _safe_next(target: str | None) -> str:
    """Only a path of this dashboard, not a sign-in page: never an absolute URL (no open redirect)."""
    if not target or not target.startswith("/ui/") or target.startswith("/ui/login") or "\\" in target:
        return "/ui/fleet"
    return target


def _login_page(request: Request, error: str | None = None, status: int = 200, target: str | None = None) -> Response:
    nonce = request.cookies.get(sessions.LOGIN_COOKIE) or secrets.token_urlsafe(16)
    rp = _relying_party(request)
    response = common.render(request, "login.html", None, None, status=status, error=error,
                             csrf=common.signer_of(request).csrf(nonce),
                             next=_safe_next(target or request.query_params.get("next")),
                             oidc=request.app.state.oidc is not None, oidc_label=rp.label if rp else None)
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
    if not common.signer_of(request).check_csrf(request.cookies.get(sessions.LOGIN_COOKIE), fields.get("csrf")):
        raise Forbidden("the sign-in form's CSRF token is missing or wrong: reload the page and sign in again")
    from starlette.concurrency import run_in_threadpool

    try:
        found = await run_in_threadpool(sessions.sign_in, request.app.state.fleet, request.app.state.oidc,
                                        fields.get("token", ""))
    except identity.Unauthenticated as exc:
        return _login_page(request, f"Sign-in refused: {exc}", status=401, target=fields.get("next"))
    return _start_session(request, RedirectResponse(_safe_next(fields.get("next")), 303), found)


def _start_session(request: Request, response: Response, found: sessions.Session) -> Response:
    response.set_cookie(sessions.COOKIE, common.signer_of(request).dump(found), max_age=max(1, found.expires - _now()),
                        path="/ui", httponly=True, secure=request.url.scheme == "https", samesite="strict")
    response.delete_cookie(sessions.LOGIN_COOKIE, path="/ui")
    return response


def _relying_party(request: Request) -> oidc.RelyingParty | None:
    return getattr(request.app.state, "oidc_login", None)


@router.get("/login/oidc")
def oidc_start(request: Request,
               next_path: Annotated[str | None, Query(alias="next", max_length=2000)] = None) -> Response:
    """Send the browser to the issuer with a new flow (state, nonce, PKCE challenge) kept in its cookie."""
    rp = _relying_party(request)
    if rp is None:
        raise common.NotFoundPage("this server has no OIDC sign-in (oidc_client_id is not set)")
    flow = oidc.Flow.new(rp.redirect_uri(str(request.base_url)), _safe_next(next_path))
    try:
        target = rp.authorization_url(flow)  # the first sign-in reads the discovery document
    except oidc.SignInFailed as exc:
        return _login_page(request, f"Sign-in with {rp.label} is not available: {exc}", exc.status, flow.next)
    response = RedirectResponse(target, 303)
    # SameSite=Lax, not Strict: the issuer sends the browser back with a cross-site top-level GET, on which a
    # Strict cookie is not sent, and the state could never be checked. Lax is sent on that navigation only
    # (no cross-site POST, no subresource), the cookie opens nothing by itself, and it is bound to the state.
    response.set_cookie(oidc.FLOW_COOKIE, flow.seal(common.signer_of(request)), max_age=oidc.FLOW_TTL_S,
                        path=oidc.FLOW_PATH, httponly=True, secure=request.url.scheme == "https", samesite="lax")
    return response


@router.get("/login/oidc/callback")
def oidc_callback(request: Request, code: Annotated[str | None, Query(max_length=4000)] = None,
                  state: Annotated[str | None, Query(max_length=1000)] = None,
                  error: Annotated[str | None, Query(max_length=200)] = None,
                  error_description: Annotated[str | None, Query(max_length=2000)] = None) -> Response:
    """The issuer's answer: check the state, redeem the code, open the session (neither token is kept)."""
    rp = _relying_party(request)
    if rp is None:
        raise common.NotFoundPage("this server has no OIDC sign-in (oidc_client_id is not set)")
    flow = None
    try:
        flow = oidc.Flow.unseal(common.signer_of(request), request.cookies.get(oidc.FLOW_COOKIE))
        flow.check_state(state)  # before showing anything from the answer: it could be forged
        if error:
            said = oidc.plain(error) + (f" ({oidc.plain(error_description)})" if error_description else "")
            raise oidc.SignInFailed(f"the issuer did not sign you in: {said}")
        if not code:
            raise oidc.SignInFailed("the issuer's answer has no code", 400)
        rp.spend(flow)
        found = rp.finish(request.app.state.fleet, request.app.state.oidc, flow, code)
    except identity.Unauthenticated as exc:
        status = exc.status if isinstance(exc, oidc.SignInFailed) else 401
        response = _login_page(request, f"Sign-in with {rp.label} failed: {exc}", status, flow and flow.next)
        response.delete_cookie(oidc.FLOW_COOKIE, path=oidc.FLOW_PATH)
        return response
    target = _safe_next(flow.next)
    # A page that moves on by itself, not a redirect: a navigation that began at the issuer's site stays
    # cross-site through redirects, so the browser would not send the new SameSite=Strict session cookie
    # to the next page (Chromium does not: tests/test_dashboard_oidc.py signs in with it).
    response = common.render(request, "signed_in.html", None, None, principal=found.principal, issuer=rp.label,
                             next=target)
    response.delete_cookie(oidc.FLOW_COOKIE, path=oidc.FLOW_PATH)
    return _start_session(request, response, found)


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
