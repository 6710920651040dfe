"""The dashboard's sign-in through an OpenID provider (docs/dashboard.md): the authorization code flow with PKCE.

The provider is made here: an Ed25519 key and its JWKS file, a discovery document, an authorization endpoint
that signs in whoever the test names and a token endpoint that checks the code, the client and the PKCE
verifier as a real provider does. The TestClient tests reach it through an ``httpx.MockTransport``; the last
test serves it over HTTP on another site (``localhost`` against the dashboard's ``127.0.0.1``) and signs in
with Chromium, where the SameSite rules of the cookies are real.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api_world import build_world, free_port
from gpufleet.api.settings import ServiceSettings
from gpufleet.services import identity
from gpufleet.services.fleet import FleetService
from gpufleet.web import oidc
from gpufleet.web import session as sessions
from gpufleet.web.app import create_app

ISSUER, CLIENT_ID, AUDIENCE, KID = "https://idp.example.test/realms/acme", "gpufleet-dashboard", "gpufleet", "k1"
KEY, OTHER_KEY = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
LONG_AGO = int(time.time()) - 3600


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


@dataclass
class Grant:
    """What the provider remembers of an authorization until its code is redeemed."""

    redirect_uri: str
    challenge: str
    nonce: str
    subject: str
    scope: str


class FakeProvider:
    """An OpenID provider: discovery, authorization (signs in ``subject``), token endpoint (codes used once,
    the client authenticated, the PKCE verifier checked against the challenge). ``id_changes`` and
    ``access_changes`` alter the claims of the tokens it issues (None removes one)."""

    def __init__(self, issuer: str = ISSUER, secret: str | None = None):
        self.issuer, self.secret = issuer, secret
        self.reset()

    def reset(self) -> None:
        self.grants: dict[str, Grant] = {}
        self.discovered, self.requests = 0, []  # token requests: (form, Authorization header)
        self.id_changes, self.access_changes, self.id_key = {}, {}, KEY
        self.doc_changes: dict = {}
        self.down, self.token_answer = False, None  # (status, body) instead of the token endpoint's own
        self.subject = "tesla-viewer"

    def document(self) -> dict:
        return _changed({"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/auth",
                         "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/certs",
                         "response_types_supported": ["code"], "code_challenge_methods_supported": ["S256"]},
                        self.doc_changes)

    def authorize(self, url: str, subject: str | None = None) -> str:
        """The person at the browser signs in as ``subject``: where the provider sends the browser back."""
        assert url.startswith(self.document()["authorization_endpoint"] + "?"), url
        asked = dict(parse_qsl(urlsplit(url).query))
        if asked.get("response_type") != "code" or asked.get("client_id") != CLIENT_ID \
                or asked.get("code_challenge_method") != "S256" or "openid" not in asked.get("scope", "").split():
            return f"{asked['redirect_uri']}?" + urlencode({"error": "invalid_request", "state": asked.get("state")})
        code = secrets.token_urlsafe(24)
        self.grants[code] = Grant(asked["redirect_uri"], asked["code_challenge"], asked["nonce"],
                                  subject or self.subject, asked["scope"])
        return f"{asked['redirect_uri']}?" + urlencode({"code": code, "state": asked["state"]})

    def token(self, form: dict, authorization: str | None) -> tuple[int, dict | str]:
        self.requests.append((form, authorization))
        if self.token_answer is not None:
            return self.token_answer
        if self.secret is not None:
            given = authorization or ""
            basic = base64.b64decode(given.removeprefix("Basic ")).decode() if given.startswith("Basic ") else ":"
            if [unquote_plus(part) for part in basic.split(":", 1)] != [CLIENT_ID, self.secret]:  # RFC 6749 §2.3.1
                return 401, {"error": "invalid_client", "error_description": "client authentication failed"}
        elif form.get("client_id") != CLIENT_ID:
            return 401, {"error": "invalid_client"}
        grant = self.grants.pop(form.get("code", ""), None)  # a code is redeemed once
        if grant is None or form.get("grant_type") != "authorization_code" \
                or form.get("redirect_uri") != grant.redirect_uri:
            return 400, {"error": "invalid_grant", "error_description": "unknown or used code"}
        verifier = form.get("code_verifier", "")
        if not 43 <= len(verifier) <= 128 or s256(verifier) != grant.challenge:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        now = int(time.time())
        common = {"iss": self.issuer, "sub": grant.subject, "iat": now, "exp": now + 900}
        id_claims = _changed(common | {"aud": CLIENT_ID, "nonce": grant.nonce, "azp": CLIENT_ID}, self.id_changes)
        access = _changed(common | {"aud": AUDIENCE, "scope": grant.scope}, self.access_changes)
        return 200, {"access_token": _signed(access), "id_token": _signed(id_claims, self.id_key),
                     "token_type": "Bearer", "expires_in": 900}

    def handle(self, request: httpx.Request) -> httpx.Response:
        """The provider as an ``httpx.MockTransport`` handler."""
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        url = str(request.url).split("?")[0]
        if url == f"{self.issuer}/.well-known/openid-configuration" and request.method == "GET":
            self.discovered += 1
            return httpx.Response(200, json=self.document())
        if url == f"{self.issuer}/token" and request.method == "POST":
            status, body = self.token(dict(parse_qsl(request.content.decode())), request.headers.get("authorization"))
            return httpx.Response(status, json=body) if isinstance(body, dict) else httpx.Response(status, text=body)
        return httpx.Response(404, json={"error": "not_found"})


def _changed(claims: dict, changes: dict) -> dict:
    return {k: v for k, v in (claims | changes).items() if v is not None}


def _signed(claims: dict, key=KEY) -> str:
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": KID})


def jwks_file(folder) -> str:
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(KEY.public_key())) | {"kid": KID, "use": "sig"}
    path = folder / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("oidc-login")
    return build_world(f"sqlite:///{folder / 'ledger.db'}"), jwks_file(folder), folder


def settings_of(world, **changes) -> ServiceSettings:
    world, jwks, _ = world
    return ServiceSettings(db=world.db, job_workers=1, oidc_issuer=ISSUER, oidc_audience=AUDIENCE, oidc_jwks=jwks,
                           oidc_client_id=CLIENT_ID, **changes)


def started(world, provider: FakeProvider, **changes):
    """A TestClient of the dashboard whose relying party reaches ``provider`` through a MockTransport."""
    settings = settings_of(world, **changes)
    client = TestClient(create_app(settings))
    client.app.state.oidc_login = oidc.RelyingParty(settings, transport=httpx.MockTransport(provider.handle))
    return client


@pytest.fixture(scope="module")
def provider():
    return FakeProvider()


@pytest.fixture(scope="module")
def module_client(world, provider):
    with started(world, provider) as client:
        yield client


@pytest.fixture
def client(module_client, provider):
    """The module's client with no cookie, and its provider as new."""
    module_client.cookies.clear()
    provider.reset()
    return module_client


def begin(client, next_path: str | None = None) -> str:
    """``GET /ui/login/oidc``: the authorization URL the browser is sent to."""
    start = client.get("/ui/login/oidc", params={"next": next_path} if next_path else None, follow_redirects=False)
    assert start.status_code == 303, start.text
    return start.headers["location"]


def sign_in(client, provider: FakeProvider, subject: str | None = None, next_path: str | None = None):
    """The whole round trip; the callback's answer."""
    return client.get(provider.authorize(begin(client, next_path), subject), follow_redirects=False)


def session_of(client) -> dict:
    value = client.cookies.get(sessions.COOKIE)
    assert value, "no session cookie"
    body = value.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def page_text(answer) -> str:
    return html.unescape(answer.text)


# -- signing in --------------------------------------------------------------------------------------


def test_the_browser_is_sent_to_the_issuer_with_state_nonce_and_a_pkce_challenge(client):
    start = client.get("/ui/login/oidc", params={"next": "/ui/sites"}, follow_redirects=False)
    assert start.status_code == 303
    where = urlsplit(start.headers["location"])
    assert f"{where.scheme}://{where.netloc}{where.path}" == f"{ISSUER}/auth"
    asked = dict(parse_qsl(where.query))
    assert {k: asked[k] for k in ("response_type", "client_id", "redirect_uri", "scope", "code_challenge_method")} \
        == {"response_type": "code", "client_id": CLIENT_ID, "scope": "openid", "code_challenge_method": "S256",
            "redirect_uri": "http://testserver/ui/login/oidc/callback"}
    assert len(asked["state"]) >= 43 and len(asked["nonce"]) >= 43 and len(asked["code_challenge"]) == 43
    cookie = start.headers["set-cookie"]
    assert cookie.startswith(f"{oidc.FLOW_COOKIE}=")
    assert all(part in cookie for part in ("HttpOnly", "Max-Age=600", "Path=/ui/login/oidc", "SameSite=lax"))
    again = urlsplit(begin(client))
    assert dict(parse_qsl(again.query))["state"] != asked["state"]  # each sign-in its own state and nonce


def test_signing_in_opens_a_session_with_the_ledgers_roles_and_keeps_no_token(client, provider):
    url = begin(client, "/ui/sites?as_of=2024-06-30")
    answer = client.get(provider.authorize(url, "tesla-viewer"), follow_redirects=False)
    assert answer.status_code == 200, page_text(answer)
    assert "Signed in as tesla-viewer through idp.example.test/realms/acme" in page_text(answer)
    assert '<meta http-equiv="refresh" content="0; url=/ui/sites?as_of=2024-06-30">' in page_text(answer)
    form, auth = provider.requests[-1]
    assert s256(form["code_verifier"]) == dict(parse_qsl(urlsplit(url).query))["code_challenge"]
    assert auth is None and form["client_id"] == CLIENT_ID and "client_secret" not in form  # a public client
    session = session_of(client)  # who, how, until when: no token of the issuer's
    assert session | {"expires": 0, "nonce": ""} == {"principal": "tesla-viewer", "scope": "read", "via": "oidc",
                                                     "token_id": None, "expires": 0, "nonce": ""}
    assert abs(session["expires"] - (int(time.time()) + 900)) <= 5  # the access token's expiry
    assert oidc.FLOW_COOKIE not in client.cookies  # the flow is over
    fleet = client.get("/ui/fleet")
    assert fleet.status_code == 200 and "Signed in as <strong>tesla-viewer</strong>" in fleet.text
    assert "tesla: viewer" in fleet.text and 'action="/ui/logout"' in fleet.text
    refused = client.get("/ui/fleet", params={"entity": "x"})
    assert refused.status_code == 403 and "tesla-viewer" in page_text(refused)
    assert client.get("/ui/fleet", params={"entity": "nowhere"}).status_code == 404


def test_disabling_the_user_ends_a_session_opened_through_the_issuer(client, provider):
    assert sign_in(client, provider, "xai-finance").status_code == 200
    assert client.get("/ui/fleet").status_code == 200
    fleet = FleetService.open(client.app.state.settings.db)
    try:
        identity.disable_user(fleet, "xai-finance")
        gone = client.get("/ui/fleet", follow_redirects=False)
        assert gone.status_code == 303 and gone.headers["location"].startswith("/ui/login?")
        assert sign_in(client, provider, "xai-finance").status_code == 401  # and it cannot sign in again
    finally:
        identity.add_user(fleet, "xai-finance")
        fleet.engine.dispose()


@pytest.mark.parametrize("scope, subject, granted", [
    ("openid", "tesla-operator", "read"),
    ("openid gpufleet:write", "tesla-operator", "write"),
    ("openid gpufleet:write", "x-auditor", "write"),
], ids=["operator-asks-read", "operator-asks-write", "auditor-of-x"])
def test_the_session_has_the_access_tokens_scope_and_the_ledgers_roles(world, scope, subject, granted):
    provider = FakeProvider()
    with started(world, provider, oidc_scope=scope) as client:
        assert sign_in(client, provider, subject).status_code == 200
        assert session_of(client)["scope"] == granted
        page = client.get("/ui/fleet")
    assert f"Signed in as <strong>{subject}</strong>" in page.text and f"({granted} credential)" in page.text
    offered = "Record failure" in page.text  # the operator's button, only with a write session
    assert offered == (subject == "tesla-operator" and granted == "write")


# -- what is refused --------------------------------------------------------------------------------


def _callback_with(url: str, **changes) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query)) | changes
    return parts._replace(query=urlencode({k: v for k, v in query.items() if v is not None})).geturl()


def _challenge_changed(url: str) -> str:
    return _callback_with(url, code_challenge=s256("a verifier this browser never had" + "x" * 20))


# (how the provider is set, how the authorization request is altered, how the callback is altered,
#  the subject it signs in) -> the sign-in page's status and what it says
REFUSED = [
    pytest.param({}, None, {"state": "forged-state"}, None, 400, "state is not this browser's", id="wrong-state"),
    pytest.param({}, None, {"state": None}, None, 400, "state is not this browser's", id="no-state"),
    pytest.param({}, None, {"code": None}, None, 400, "has no code", id="no-code"),
    pytest.param({"id_changes": {"nonce": "another-sign-in"}}, None, {}, None, 401, "nonce is not this sign-in's",
                 id="wrong-nonce"),
    pytest.param({"id_changes": {"nonce": None}}, None, {}, None, 401, "nonce", id="no-nonce"),
    pytest.param({"id_changes": {"aud": "another-client", "azp": None}}, None, {}, None, 401,
                 "ID token was refused: Audience doesn't match", id="id-token-for-another-client"),
    pytest.param({"id_changes": {"aud": ["another-client", CLIENT_ID], "azp": "another-client"}}, None, {}, None,
                 401, "several audiences", id="id-token-for-several-clients-azp-another"),
    pytest.param({"id_changes": {"iss": "https://idp.example.test/realms/other"}}, None, {}, None, 401,
                 "ID token was refused: Invalid issuer", id="id-token-of-another-issuer"),
    pytest.param({"id_changes": {"exp": LONG_AGO}}, None, {}, None, 401, "ID token was refused: Signature has expired",
                 id="id-token-expired"),
    pytest.param({"id_key": OTHER_KEY}, None, {}, None, 401, "ID token was refused", id="id-token-of-another-key"),
    pytest.param({"access_changes": {"aud": "another-api"}}, None, {}, None, 401, "OIDC token was refused",
                 id="access-token-for-another-audience"),
    pytest.param({"access_changes": {"exp": LONG_AGO}}, None, {}, None, 401, "OIDC token was refused",
                 id="access-token-expired"),
    pytest.param({"access_changes": {"sub": "tesla-admin"}}, None, {}, None, 401, "different subjects",
                 id="tokens-of-different-people"),
    pytest.param({}, _challenge_changed, {}, None, 401, "refused the code: invalid_grant (PKCE verification failed)",
                 id="pkce-verifier-not-the-challenges"),
    pytest.param({}, None, {}, "nobody", 401, "'nobody' is not an enabled user", id="person-unknown-to-the-ledger"),
    pytest.param({}, None, {}, "musk", 401, "'musk' is not an enabled user", id="person-of-the-ledger-not-a-user"),
    pytest.param({"down": True}, None, {}, None, 502, "token endpoint could not be reached (ConnectError)",
                 id="token-endpoint-unreachable"),
    pytest.param({"token_answer": (500, "<html>Internal error</html>")}, None, {}, None, 401,
                 "refused the code: HTTP 500", id="token-endpoint-fails"),
    pytest.param({"token_answer": (200, {"access_token": "a.b.c", "token_type": "Bearer"})}, None, {}, None, 502,
                 "no id_token", id="token-answer-without-id-token"),
    pytest.param({"token_answer": (200, {"access_token": "opaque", "id_token": _signed({}), "token_type": "Bearer"})},
                 None, {}, None, 401, "ID token was refused", id="token-answer-with-a-bad-id-token"),
]


@pytest.mark.parametrize("provider_set, alter_request, alter_callback, subject, status, says", REFUSED)
def test_a_sign_in_that_is_not_right_is_refused_saying_why(client, provider, provider_set, alter_request,
                                                          alter_callback, subject, status, says):
    url = begin(client, "/ui/events")
    for name, value in provider_set.items():
        setattr(provider, name, value)
    callback = provider.authorize(alter_request(url) if alter_request else url, subject)
    answer = client.get(_callback_with(callback, **alter_callback), follow_redirects=False)
    text = page_text(answer)
    assert answer.status_code == status, text
    assert says in text and "Sign-in with idp.example.test/realms/acme failed" in text
    assert "Traceback" not in text and 'name="token"' in text  # the sign-in page, to try again
    assert sessions.COOKIE not in client.cookies and oidc.FLOW_COOKIE not in client.cookies
    assert 'name="next" value="/ui/events"' in text  # where it would have returned
    assert client.get("/ui/fleet", follow_redirects=False).status_code == 303  # not signed in


def test_a_replayed_callback_is_refused(client, provider):
    url = begin(client)
    flow_cookie = client.cookies.get(oidc.FLOW_COOKIE)
    callback = provider.authorize(url)
    assert client.get(callback, follow_redirects=False).status_code == 200
    replayed = client.get(callback, follow_redirects=False)  # the flow cookie is gone
    assert replayed.status_code == 400 and "no sign-in in progress" in page_text(replayed)
    client.cookies.clear()
    client.cookies.set(oidc.FLOW_COOKIE, flow_cookie, path=oidc.FLOW_PATH)  # and with a copy of it
    replayed = client.get(callback, follow_redirects=False)
    assert replayed.status_code == 400 and "was used already (a replayed callback)" in page_text(replayed)
    assert sessions.COOKIE not in client.cookies and len(provider.requests) == 1  # the code was redeemed once


def test_a_flow_cookie_that_is_forged_or_of_another_purpose_is_refused(client, provider):
    url = begin(client)
    callback = provider.authorize(url)
    signer = client.app.state.ui_signer
    flow = oidc.Flow.unseal(signer, client.cookies.get(oidc.FLOW_COOKIE))
    body = client.cookies.get(oidc.FLOW_COOKIE).split(".")[0]
    for forged in (f"{body}.{'A' * 43}", signer.seal("session", vars(flow)),
                   oidc.Flow(**vars(flow) | {"expires": int(time.time()) - 1}).seal(signer)):
        client.cookies.set(oidc.FLOW_COOKIE, forged, path=oidc.FLOW_PATH)
        answer = client.get(callback, follow_redirects=False)
        assert answer.status_code == 400 and "no sign-in in progress" in page_text(answer)
    assert provider.requests == []


@pytest.mark.parametrize("state_of, shown", [("this-sign-in", True), ("another", False)],
                         ids=["issuer-error-shown", "issuer-error-with-another-state-not-shown"])
def test_an_error_of_the_issuer_is_shown_plainly(client, provider, state_of, shown):
    url = begin(client)
    state = dict(parse_qsl(urlsplit(url).query))["state"] if state_of == "this-sign-in" else "forged"
    answer = client.get("/ui/login/oidc/callback", params={
        "error": "access_denied", "error_description": "The user declined to sign in", "state": state})
    text = page_text(answer)
    assert answer.status_code == (401 if shown else 400)
    assert ("the issuer did not sign you in: access_denied (The user declined to sign in)" in text) == shown
    assert ("The user declined" in text) == shown  # a forged answer puts no text of its own on the page
    assert provider.requests == [] and sessions.COOKIE not in client.cookies


@pytest.mark.parametrize("asked, goes_to", [
    ("https://evil.example/phish", "/ui/fleet"),
    ("//evil.example/phish", "/ui/fleet"),
    ("/\\evil.example/phish", "/ui/fleet"),
    ("/ui/\\evil.example", "/ui/fleet"),
    ("javascript:alert(1)", "/ui/fleet"),
    ("/ui/login/oidc", "/ui/fleet"),
    ("/ui/events?type=site_registered", "/ui/events?type=site_registered"),
], ids=["absolute-url", "scheme-relative", "backslashes", "backslash-under-ui", "javascript", "sign-in-loop",
        "a-page-of-the-dashboard"])
def test_only_a_page_of_the_dashboard_is_returned_to(client, provider, asked, goes_to):
    answer = sign_in(client, provider, next_path=asked)
    assert answer.status_code == 200
    assert f'content="0; url={goes_to}"' in page_text(answer) and f'href="{goes_to}"' in page_text(answer)
    assert "evil" not in answer.text and "javascript" not in answer.text


# -- the provider's endpoints and client -----------------------------------------------------------------


@pytest.mark.parametrize("how", ["discovery-url", "discovery-file", "endpoints-given"])
def test_the_endpoints_come_from_discovery_once_or_from_the_settings(world, how):
    provider = FakeProvider()
    changes = {}
    if how == "discovery-file":
        path = world[2] / "openid-configuration.json"
        path.write_text(json.dumps(provider.document()))
        changes = {"oidc_discovery": str(path)}
    elif how == "endpoints-given":
        changes = {"oidc_authorization_endpoint": f"{ISSUER}/auth", "oidc_token_endpoint": f"{ISSUER}/token"}
    with started(world, provider, **changes) as client:
        for who in ("tesla-viewer", "x-viewer"):
            client.cookies.clear()
            assert sign_in(client, provider, who).status_code == 200
            assert session_of(client)["principal"] == who
    assert provider.discovered == (1 if how == "discovery-url" else 0)


def test_a_discovery_document_that_cannot_be_read_is_retried_at_the_next_sign_in(world):
    provider = FakeProvider()
    with started(world, provider) as client:
        provider.down = True
        answer = client.get("/ui/login/oidc", follow_redirects=False)
        assert answer.status_code == 502 and "could not be read (ConnectError)" in page_text(answer)
        assert oidc.FLOW_COOKIE not in client.cookies
        provider.down = False
        assert sign_in(client, provider).status_code == 200 and provider.discovered == 1


@pytest.mark.parametrize("changes, says", [
    ({"issuer": "https://idp.example.test/realms/other"}, "is for the issuer 'https://idp.example.test/realms/other'"),
    ({"code_challenge_methods_supported": ["plain"]}, "does not support PKCE with S256"),
    ({"token_endpoint": "http://idp.example.test/token"}, "token_endpoint 'http://idp.example.test/token' is not an"),
    ({"authorization_endpoint": None}, "authorization_endpoint '' is not an https URL"),
], ids=["another-issuer", "no-s256", "plain-http-token-endpoint", "no-authorization-endpoint"])
def test_a_discovery_document_that_is_not_right_is_refused(world, changes, says):
    provider = FakeProvider()
    provider.doc_changes = changes
    with started(world, provider) as client:
        answer = client.get("/ui/login/oidc", follow_redirects=False)
    assert answer.status_code == 502 and says in page_text(answer)
    assert "Sign-in with idp.example.test/realms/acme is not available" in page_text(answer)


@pytest.mark.parametrize("secret, signs_in", [("s3cret/with+odd=chars", True), ("wrong", False)],
                         ids=["right-secret", "wrong-secret"])
def test_a_confidential_client_authenticates_with_its_secret(world, secret, signs_in):
    provider = FakeProvider(secret="s3cret/with+odd=chars")
    with started(world, provider, oidc_client_secret=secret) as client:
        answer = sign_in(client, provider)
    form, auth = provider.requests[-1]
    assert auth.startswith("Basic ") and "client_secret" not in form and "client_id" not in form
    assert form["code_verifier"]  # PKCE also for a confidential client
    assert (answer.status_code == 200) == signs_in
    if not signs_in:
        assert "refused the code: invalid_client (client authentication failed)" in page_text(answer)


def test_the_redirect_uri_is_the_public_url_when_given(world):
    provider = FakeProvider()
    with started(world, provider, oidc_redirect_base="https://fleet.example.test") as client:
        url = begin(client)
        assert dict(parse_qsl(urlsplit(url).query))["redirect_uri"] == \
            "https://fleet.example.test/ui/login/oidc/callback"
        callback = urlsplit(provider.authorize(url))
        assert client.get(f"/ui/login/oidc/callback?{callback.query}", follow_redirects=False).status_code == 200
    assert provider.requests[-1][0]["redirect_uri"] == "https://fleet.example.test/ui/login/oidc/callback"


def test_the_sign_in_page_offers_the_issuer_only_when_configured(world, client):
    page = client.get("/ui/login", params={"next": "/ui/audit"})
    assert 'href="/ui/login/oidc?next=/ui/audit">Sign in with idp.example.test/realms/acme</a>' in page.text
    plain = ServiceSettings(db=world[0].db, job_workers=1, oidc_issuer=ISSUER, oidc_audience=AUDIENCE,
                            oidc_jwks=world[1])
    with TestClient(create_app(plain)) as other:
        assert "Sign in with" not in other.get("/ui/login").text
        for path in ("/ui/login/oidc", "/ui/login/oidc/callback?code=x&state=y"):
            answer = other.get(path, follow_redirects=False)
            assert answer.status_code == 404 and "no OIDC sign-in" in page_text(answer)


# -- settings ------------------------------------------------------------------------------------------


BAD_SETTINGS = [
    pytest.param({"oidc_client_secret": "s"}, "oidc_client_secret is set but oidc_client_id is not",
                 id="secret-without-client-id"),
    pytest.param({"oidc_token_endpoint": "https://i/t"}, "oidc_token_endpoint is set but oidc_client_id is not",
                 id="endpoint-without-client-id"),
    pytest.param({"oidc_client_id": "c", "oidc_issuer": None, "oidc_audience": None, "oidc_jwks": None},
                 "oidc_client_id needs oidc_issuer",
                 id="client-id-without-issuer"),
    pytest.param({"oidc_client_id": "c", "oidc_token_endpoint": "https://i/t"},
                 "oidc_authorization_endpoint and oidc_token_endpoint go together", id="one-endpoint"),
    pytest.param({"oidc_client_id": "c", "oidc_token_endpoint": "https://i/t", "oidc_authorization_endpoint":
                  "https://i/a", "oidc_discovery": "https://i/d"}, "not both", id="endpoints-and-discovery"),
    pytest.param({"oidc_client_id": "c", "oidc_token_endpoint": "http://idp.example.test/t",
                  "oidc_authorization_endpoint": "https://i/a"}, "oidc_token_endpoint 'http://idp.example.test/t' is "
                 "not an https URL", id="plain-http-endpoint"),
    pytest.param({"oidc_client_id": "c", "oidc_redirect_base": "https://fleet.example.test/ui"},
                 "oidc_redirect_base 'https://fleet.example.test/ui' must be scheme://host[:port]",
                 id="redirect-base-with-a-path"),
    pytest.param({"oidc_client_id": "c", "oidc_scope": "profile email"}, "including openid", id="scope-without-openid"),
    pytest.param({"oidc_client_id": "c", "oidc_scope": 'openid "quoted"'}, "including openid",
                 id="scope-not-a-scope-name"),
    pytest.param({"oidc_client_id": "c d"}, "oidc_client_id has a space", id="client-id-with-a-space"),
    pytest.param({"oidc_client_id": "c", "oidc_issuer": "http://idp.example.test/"},
                 "oidc_issuer 'http://idp.example.test/' is not an https URL", id="plain-http-issuer-to-discover"),
]


@pytest.mark.parametrize("changes, says", BAD_SETTINGS)
def test_browser_sign_in_settings_are_checked_as_a_whole(changes, says):
    given = {"oidc_issuer": ISSUER, "oidc_audience": AUDIENCE, "oidc_jwks": "jwks.json"} | changes
    with pytest.raises(ValidationError, match=re.escape(says)):
        ServiceSettings(**{k: v for k, v in given.items() if v is not None})


def test_the_client_secret_is_not_shown_in_the_settings():
    settings = ServiceSettings(oidc_issuer=ISSUER, oidc_audience=AUDIENCE, oidc_jwks="jwks.json",
                               oidc_client_id="c", oidc_client_secret="do-not-print")
    assert "do-not-print" not in repr(settings) and "do-not-print" not in str(settings.model_dump())


# -- in a browser --------------------------------------------------------------------------------------


class ServedProvider:
    """The fake provider over HTTP on ``localhost`` (another site than the dashboard's ``127.0.0.1``), for a
    confidential client (so ``gpufleet serve`` hands the secret to its workers); its authorization endpoint
    is a page with a button that signs in ``provider.subject``, so the way back to the dashboard starts at
    another site, as with a real provider."""

    def __init__(self):
        import uvicorn
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse
        from starlette.routing import Route

        port = free_port()
        self.provider = FakeProvider(issuer=f"http://localhost:{port}", secret="served-secret")

        def discovery(request: Request):
            self.provider.discovered += 1
            return JSONResponse(self.provider.document())

        async def auth(request: Request):  # the provider's own page: navigations from it are cross-site
            if request.method == "GET":
                action = html.escape(str(request.url), quote=True)
                return HTMLResponse('<!DOCTYPE html><html lang="en"><title>Provider</title><link rel="icon" '
                                    f'href="data:,"><form method="post" action="{action}"><button>Continue as '
                                    f'{self.provider.subject}</button></form>')
            return RedirectResponse(self.provider.authorize(str(request.url)), 302)

        async def token(request: Request):
            form = dict(parse_qsl((await request.body()).decode()))
            status, body = self.provider.token(form, request.headers.get("authorization"))
            return JSONResponse(body, status)

        app = Starlette(routes=[Route("/.well-known/openid-configuration", discovery),
                                Route("/auth", auth, methods=["GET", "POST"]),
                                Route("/token", token, methods=["POST"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> FakeProvider:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started, "the provider did not start"
        return self.provider

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def in_browser(tmp_path_factory):
    from dashboard_browser import start_dashboard

    with ServedProvider() as provider:
        jwks = jwks_file(tmp_path_factory.mktemp("served-provider"))
        env = {"GPUFLEET_OIDC_ISSUER": provider.issuer, "GPUFLEET_OIDC_AUDIENCE": AUDIENCE,
               "GPUFLEET_OIDC_JWKS": jwks, "GPUFLEET_OIDC_CLIENT_ID": CLIENT_ID,
               "GPUFLEET_OIDC_SCOPE": "openid gpufleet:write", "GPUFLEET_OIDC_CLIENT_SECRET": provider.secret}
        for dashboard in start_dashboard(tmp_path_factory, env=env):
            yield dashboard, provider


def test_signing_in_with_the_issuer_in_chromium(in_browser):
    """The flow cookie must be SameSite=Lax and the callback a page, not a redirect: with a Strict flow cookie,
    or a 303 from the callback, Chromium never reaches the page asked for (both tried by hand)."""
    dashboard, provider = in_browser
    provider.subject = "tesla-operator"
    tab = dashboard.new_tab("tesla-operator")
    tab.visit("/ui/sites?as_of=2024-06-30")
    assert "/ui/login" in tab.page.url
    tab.check("login-with-oidc")
    tab.page.get_by_role("link", name=f"Sign in with {provider.issuer.split('://')[1]}").click()
    tab.page.get_by_role("button", name="Continue as tesla-operator").click()  # at the provider's site
    # the provider, the callback's page, then the page asked for: with the SameSite=Strict session cookie sent
    tab.page.wait_for_url("**/ui/sites?as_of=2024-06-30", wait_until="load")
    tab.wait_for_charts()
    assert "Signed in as tesla-operator (write credential)" in " ".join(tab.page.locator(".who").inner_text().split())
    tab.check("sites-after-oidc-sign-in", charts=1)
    assert provider.discovered == 1 and len(provider.requests) == 1
    tab.visit("/ui/fleet")
    assert tab.page.get_by_role("button", name="Record failure").count() == 1  # an operator with writes
    cookies = {c["name"]: c for c in tab.page.context.cookies()}
    assert cookies[sessions.COOKIE]["sameSite"] == "Strict" and cookies[sessions.COOKIE]["httpOnly"]
    assert oidc.FLOW_COOKIE not in cookies
