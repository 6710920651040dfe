"""Browser sessions of the dashboard: a signed cookie, checked against the credential on every request.

Signing in posts an API token (or an OIDC access token), or goes through the OIDC issuer
(:mod:`gpufleet.web.oidc`, which ends with the access token the issuer gave); the server checks it with
the same code as the API (:mod:`gpufleet.services.identity`) and sets a cookie holding only a signed
value: the principal, the credential's scope, how it was authenticated, the API token's *id* (never its
secret; an OIDC session keeps nothing of its tokens), an expiry (the credential's, eight hours at most)
and a random nonce. The cookie is HttpOnly, SameSite=Strict, and Secure when the page was
served over https. Each request checks the signature, the expiry, and again that the user is enabled
and the token neither revoked nor expired, so revoking a token or disabling a user ends its sessions.

The signing key is ``GPUFLEET_UI_SECRET`` (hex; ``gpufleet serve`` makes one per run and hands it to
its workers), or a random key per process: a restart signs everyone out. CSRF tokens are an HMAC of
the session's nonce: a form posts it back and :func:`check_csrf` compares.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select

from gpufleet.domain.access import Principal, Scope
from gpufleet.domain.chain import format_instant
from gpufleet.ledger.schema import api_tokens, users
from gpufleet.services import identity
from gpufleet.services.fleet import FleetService

COOKIE = "gpufleet_session"
LOGIN_COOKIE = "gpufleet_login"  # a nonce for the sign-in form's CSRF token, before there is a session
SECRET_ENV = "GPUFLEET_UI_SECRET"
MAX_AGE_S = 8 * 3600  # a session lasts a working day at most (less if its token expires sooner)


@dataclass(frozen=True)
class Session:
    """What the cookie says, once its signature and expiry are checked."""

    principal: str
    scope: str
    via: str  # token | oidc
    token_id: str | None
    expires: int  # seconds since the epoch
    nonce: str

    def as_principal(self) -> Principal:
        return Principal(self.principal, Scope(self.scope), self.via)


class Signer:
    """Signs and checks the session cookie and the CSRF tokens with one key."""

    def __init__(self, key: bytes | None = None):
        given = os.environ.get(SECRET_ENV, "")
        self.key = key or (bytes.fromhex(given) if given else secrets.token_bytes(32))

    def _mac(self, purpose: str, data: bytes) -> str:
        digest = hmac.new(self.key, purpose.encode() + b"\0" + data, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def seal(self, purpose: str, data: dict) -> str:
        """``data`` as a cookie value, signed for ``purpose`` (a value signed for one is refused for another)."""
        body = base64.urlsafe_b64encode(json.dumps(data, sort_keys=True).encode()).decode().rstrip("=")
        return f"{body}.{self._mac(purpose, body.encode())}"

    def unseal(self, purpose: str, cookie: str | None) -> dict | None:
        """The data :meth:`seal` signed for ``purpose``, or None if the value is missing or forged."""
        if not cookie or cookie.count(".") != 1 or len(cookie) > 2000:
            return None
        body, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac(purpose, body.encode())):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def dump(self, session: Session) -> str:
        return self.seal("session", vars(session))

    def load(self, cookie: str | None) -> Session | None:
        """The session the cookie holds, or None if it is missing, forged or expired."""
        data = self.unseal("session", cookie)
        try:
            session = Session(**data) if data is not None else None
        except TypeError:
            return None
        return session if session is not None and session.expires > time.time() else None

    def csrf(self, nonce: str) -> str:
        """The CSRF token of a session (or of a sign-in form) with ``nonce``."""
        return self._mac("csrf", nonce.encode())

    def check_csrf(self, nonce: str | None, given: str | None) -> bool:
        return bool(nonce) and bool(given) and hmac.compare_digest(self.csrf(nonce or ""), given or "")


def sign_in(fleet: FleetService, oidc, credential: str) -> Session:
    """Check ``credential`` as the API does; the session it opens (the credential itself is not kept)."""
    credential = credential.strip()
    if not credential:
        raise identity.Unauthenticated("paste an API token (gpf_...) or an OIDC access token")
    if identity.looks_like_jwt(credential):
        if oidc is None:
            raise identity.Unauthenticated("this server accepts no OIDC tokens (no issuer is configured)")
        return open_session(identity.authenticate_oidc(fleet, oidc, credential), jwt_claims(credential)["exp"])
    who = identity.authenticate_token(fleet, credential)
    token_id = credential.split("_", 2)[1]
    return open_session(who, _token_expiry(fleet, token_id), token_id)


def open_session(who: Principal, expires: int, token_id: str | None = None) -> Session:
    """The session of an authenticated principal, ending when its credential does (``expires``, seconds since
    the epoch) or after :data:`MAX_AGE_S`; an OIDC session keeps no token (``token_id`` is an API token's id)."""
    until = min(int(time.time()) + MAX_AGE_S, int(expires))
    return Session(who.id, who.scope.value, who.via, token_id, until, secrets.token_urlsafe(16))


def still_valid(fleet: FleetService, session: Session) -> bool:
    """Is the session's user still enabled, and its API token (if any) neither revoked nor expired?"""
    now = format_instant(identity._now())
    with fleet.reader.connect() as conn:
        user = conn.execute(select(users.c.disabled_at).where(users.c.principal == session.principal)).first()
        if user is None or user.disabled_at is not None:
            return False
        if session.token_id is None:
            return True
        row = conn.execute(select(api_tokens.c.principal, api_tokens.c.revoked_at, api_tokens.c.expires_at)
                           .where(api_tokens.c.token_id == session.token_id)).first()
    return row is not None and row.principal == session.principal and row.revoked_at is None \
        and row.expires_at > now


def _token_expiry(fleet: FleetService, token_id: str) -> int:
    from datetime import datetime

    with fleet.reader.connect() as conn:
        text = conn.execute(select(api_tokens.c.expires_at).where(api_tokens.c.token_id == token_id)).scalar_one()
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def jwt_claims(token: str) -> dict:
    """The claims of a JWT *already verified* by the OIDC verifier (this checks nothing)."""
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
