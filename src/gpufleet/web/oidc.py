"""The dashboard as an OpenID Connect relying party: the authorization code flow with PKCE.

``GET /ui/login/oidc`` sends the browser to the issuer's authorization endpoint (OpenID Connect Core
§3.1.2.1) with a random ``state``, a ``nonce`` and a PKCE S256 challenge (RFC 7636). The state, the nonce,
the PKCE verifier and the page to return to stay in this browser, in a signed cookie that lives ten
minutes (:class:`Flow`). The issuer sends the browser back to ``/ui/login/oidc/callback`` with a code: the
server checks the state, redeems the code at the token endpoint (with the verifier, and the secret of a
confidential client), verifies the ID token (the issuer's JWKS, ``iss``, ``aud`` = the client id, ``exp``,
the nonce) and authenticates the access token as the API authenticates a bearer token, so the principal's
roles are the ledger's. Neither token is kept: the session is the one the token form opens.

Errors are :class:`SignInFailed` with the HTTP status the sign-in page answers with: 400 for a round trip
that does not match this browser's, 401 for a refusal, 502 when the issuer cannot be read or answers
nonsense.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from gpufleet.api.settings import ServiceSettings, check_url
from gpufleet.services import identity
from gpufleet.services.fleet import FleetService
from gpufleet.web import session as sessions

FLOW_COOKIE = "gpufleet_oidc"
FLOW_PATH = "/ui/login/oidc"
CALLBACK = "/ui/login/oidc/callback"
FLOW_TTL_S = 600  # time to sign in at the issuer
TIMEOUT_S = 10.0  # each request to the issuer
MAX_TEXT = 300  # of an issuer's error description shown on the page


class SignInFailed(identity.Unauthenticated):
    """A browser sign-in that did not complete; ``status`` is the sign-in page's answer."""

    def __init__(self, message: str, status: int = 401):
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class Endpoints:
    authorization: str
    token: str


@dataclass(frozen=True)
class Flow:
    """One sign-in in progress: what its cookie holds (signed, not encrypted: only this browser has it,
    and the PKCE verifier in it is worth nothing without the code the issuer gives this browser)."""

    state: str
    nonce: str
    verifier: str  # PKCE code_verifier: 86 characters of [A-Za-z0-9_-] (RFC 7636 §4.1 asks for 43 to 128)
    redirect_uri: str
    next: str
    expires: int

    @classmethod
    def new(cls, redirect_uri: str, next_path: str) -> Flow:
        return cls(secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(64), redirect_uri,
                   next_path, int(time.time()) + FLOW_TTL_S)

    @property
    def challenge(self) -> str:
        """The S256 code_challenge: BASE64URL(SHA256(verifier)) without padding (RFC 7636 §4.2)."""
        digest = hashlib.sha256(self.verifier.encode("ascii")).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def seal(self, signer: sessions.Signer) -> str:
        return signer.seal("oidc-flow", asdict(self))

    @classmethod
    def unseal(cls, signer: sessions.Signer, cookie: str | None) -> Flow:
        """The flow this browser started, or :class:`SignInFailed` if it has none (or a forged or old one)."""
        data = signer.unseal("oidc-flow", cookie)
        try:
            flow = cls(**data) if data is not None else None
        except TypeError:
            flow = None
        if flow is None or flow.expires <= time.time():
            raise SignInFailed("this browser has no sign-in in progress (it was completed already, took more than "
                               f"{FLOW_TTL_S // 60} minutes, or began in another browser): start again", 400)
        return flow

    def check_state(self, given: str | None) -> None:
        """The answer's state must be this browser's (compared in constant time): no login CSRF."""
        if not given or not hmac.compare_digest(given.encode(), self.state.encode()):
            raise SignInFailed("the answer's state is not this browser's sign-in (an answer to another sign-in, "
                               "or a forged one): start again", 400)


class RelyingParty:
    """The dashboard's client at the issuer. The endpoints come from the settings or from the discovery
    document, read once and kept (a failed read is retried at the next sign-in)."""

    def __init__(self, settings: ServiceSettings, transport: httpx.BaseTransport | None = None):
        self.issuer = settings.oidc_issuer or ""
        self.client_id = settings.oidc_client_id or ""
        secret = settings.oidc_client_secret
        self.client_secret = secret.get_secret_value() if secret else None  # an empty one is none
        self.scope = " ".join(settings.oidc_scope.split())
        self.redirect_base = (settings.oidc_redirect_base or "").rstrip("/") or None
        self.discovery = settings.oidc_discovery or self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        given = settings.oidc_authorization_endpoint, settings.oidc_token_endpoint
        self._endpoints = Endpoints(*given) if all(given) else None
        self._http = httpx.Client(transport=transport, timeout=TIMEOUT_S, follow_redirects=False)
        self._lock, self._spent_lock = threading.Lock(), threading.Lock()
        self._spent: dict[str, int] = {}  # state -> expiry: a callback is answered once per process

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> RelyingParty | None:
        return cls(settings) if settings.oidc_client_id else None

    @property
    def label(self) -> str:
        """The issuer as people read it: its host and path."""
        return self.issuer.split("://", 1)[-1].rstrip("/")

    def redirect_uri(self, base_url: str) -> str:
        return (self.redirect_base or base_url.rstrip("/")) + CALLBACK

    def endpoints(self) -> Endpoints:
        with self._lock:
            if self._endpoints is None:
                self._endpoints = self._discover()
            return self._endpoints

    def authorization_url(self, flow: Flow) -> str:
        """Where to send the browser (OpenID Connect Core §3.1.2.1, RFC 7636 §4.3)."""
        params = {"response_type": "code", "client_id": self.client_id, "redirect_uri": flow.redirect_uri,
                  "scope": self.scope, "state": flow.state, "nonce": flow.nonce,
                  "code_challenge": flow.challenge, "code_challenge_method": "S256"}
        endpoint = urllib.parse.urlsplit(self.endpoints().authorization)
        query = urllib.parse.parse_qsl(endpoint.query, keep_blank_values=True) + list(params.items())
        return urllib.parse.urlunsplit(endpoint._replace(query=urllib.parse.urlencode(query)))

    def spend(self, flow: Flow) -> None:
        """Refuse a second callback with this flow's state (a replay, even with the cookie copied)."""
        now = int(time.time())
        with self._spent_lock:
            self._spent = {state: until for state, until in self._spent.items() if until > now}
            if flow.state in self._spent:
                raise SignInFailed("this sign-in's answer was used already (a replayed callback): start again", 400)
            self._spent[flow.state] = flow.expires

    def finish(self, fleet: FleetService, verifier: identity.OidcVerifier, flow: Flow, code: str) -> sessions.Session:
        """Redeem ``code``, verify the ID token, authenticate the access token as the API does: the session."""
        id_token, access_token = self._redeem(code, flow)
        if not identity.looks_like_jwt(id_token):
            raise SignInFailed("the issuer's ID token is not a JWT", 502)
        claims = verifier.id_token_claims(id_token, self.client_id, flow.nonce)
        if not identity.looks_like_jwt(access_token):
            raise SignInFailed("the issuer's access token is not a JWT: configure the client to get JWT access "
                               f"tokens for the audience '{verifier.config.audience}' (docs/dashboard.md)")
        who = identity.authenticate_oidc(fleet, verifier, access_token)
        access = sessions.jwt_claims(access_token)
        if access.get("sub", claims["sub"]) != claims["sub"]:
            raise SignInFailed("the access token and the ID token name different subjects")
        return sessions.open_session(who, access["exp"])

    def _redeem(self, code: str, flow: Flow) -> tuple[str, str]:
        """The token endpoint's ID token and access token for ``code`` (OpenID Connect Core §3.1.3)."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": flow.redirect_uri,
                "code_verifier": flow.verifier}
        auth = None
        if self.client_secret is None:
            form["client_id"] = self.client_id  # a public client names itself; PKCE proves it started the flow
        else:  # client_secret_basic: each part form-urlencoded first (RFC 6749 §2.3.1)
            auth = (urllib.parse.quote(self.client_id, safe=""), urllib.parse.quote(self.client_secret, safe=""))
        try:
            answer = self._http.post(self.endpoints().token, data=form, auth=auth,
                                     headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise SignInFailed(f"the issuer's token endpoint could not be reached ({type(exc).__name__})", 502) \
                from None
        body = _json_object(answer)
        if answer.status_code != 200:
            reason = plain(body.get("error")) if body else f"HTTP {answer.status_code}"
            detail = plain(body.get("error_description")) if body else ""
            raise SignInFailed(f"the issuer refused the code: {reason}" + (f" ({detail})" if detail else ""))
        tokens = [body.get("id_token"), body.get("access_token")] if body else [None, None]
        if not all(isinstance(t, str) and t for t in tokens):
            raise SignInFailed("the token endpoint's answer has no id_token and access_token (is 'openid' among "
                               "the client's scopes?)", 502)
        if str(body.get("token_type", "")).lower() != "bearer":
            raise SignInFailed(f"the token endpoint's token_type is '{plain(body.get('token_type'))}', not Bearer",
                               502)
        return tokens[0], tokens[1]

    def _discover(self) -> Endpoints:
        """The endpoints of the discovery document (OpenID Connect Discovery 1.0 §3, §4.3)."""
        where = self.discovery
        try:
            if "://" in where:
                answer = self._http.get(where, headers={"Accept": "application/json"})
                doc = _json_object(answer) if answer.status_code == 200 else None
                if doc is None:
                    raise SignInFailed(f"the discovery document {where} answered HTTP {answer.status_code} "
                                       "without a JSON object", 502)
            else:
                doc = json.loads(Path(where).read_text())
        except (OSError, ValueError, httpx.HTTPError) as exc:
            raise SignInFailed(f"the discovery document {where} could not be read ({type(exc).__name__})", 502) \
                from None
        if not isinstance(doc, dict) or doc.get("issuer") != self.issuer:
            found = plain(doc.get("issuer")) if isinstance(doc, dict) else "no object"
            raise SignInFailed(f"the discovery document {where} is for the issuer '{found}', not '{self.issuer}'", 502)
        methods = doc.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            raise SignInFailed("the issuer does not support PKCE with S256 (code_challenge_methods_supported)", 502)
        try:
            return Endpoints(*(check_url(name, str(doc.get(name, ""))) for name in
                               ("authorization_endpoint", "token_endpoint")))
        except ValueError as exc:
            raise SignInFailed(f"the discovery document {where}: {exc}", 502) from None


def _json_object(answer: httpx.Response) -> dict | None:
    try:
        body = answer.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def plain(value: object) -> str:
    """An issuer's text as the page shows it: printable, at most :data:`MAX_TEXT` characters."""
    text = "".join(c for c in str(value or "") if c.isprintable())
    return text[:MAX_TEXT] + ("…" if len(text) > MAX_TEXT else "")
