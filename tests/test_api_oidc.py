"""OIDC bearer tokens (issue 13, point 3): JWTs of an issuer whose key pair and JWKS the test makes.

A token signed by the issuer's key, for the service's audience, in date, naming an enabled user in its
``sub`` claim, authenticates that user (``via: oidc``); every other token is a 401, and a token whose
``scope`` lacks ``gpufleet:write`` is read-only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from api_world import build_world
from gpufleet.api.app import create_app
from gpufleet.api.settings import ServiceSettings
from gpufleet.services import identity
from gpufleet.services.fleet import FleetService

ISSUER, AUDIENCE, KID = "https://idp.example.test/", "gpufleet", "key-1"
WRITE = "openid gpufleet:write"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


ISSUER_KEY, OTHER_KEY = _key(), _key()
PUBLIC_PEM = ISSUER_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)


def claims(**changes) -> dict:
    """A valid token's claims for tesla-operator, with ``changes`` (None: the claim is left out)."""
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "tesla-operator", "iat": now, "nbf": now, "exp": now + 600,
            "scope": WRITE}
    return {k: v for k, v in (base | changes).items() if v is not None}


def signed(body: dict, key=ISSUER_KEY, kid: str | None = KID, alg: str = "RS256") -> str:
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid} if kid else None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(body: dict) -> str:
    """``alg: none``: a header and claims, and no signature."""
    return f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT', 'kid': KID}).encode())}.{_b64(json.dumps(body).encode())}."


def hs256_with_public_key(body: dict) -> str:
    """The algorithm confusion: HMAC-SHA256 keyed with the issuer's public key (which anyone has)."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": KID}).encode())
    text = f"{head}.{_b64(json.dumps(body).encode())}"
    return f"{text}.{_b64(hmac.new(PUBLIC_PEM, text.encode(), hashlib.sha256).digest())}"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("oidc")
    world = build_world(f"sqlite:///{folder / 'ledger.db'}")
    fleet = FleetService.open(world.db)
    identity.disable_user(fleet, "tesla-finance")
    fleet.engine.dispose()
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(ISSUER_KEY.public_key())) | {"kid": KID, "use": "sig",
                                                                                     "alg": "RS256"}
    (folder / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    return world, str(folder / "jwks.json")


@pytest.fixture(scope="module")
def client(world):
    world, jwks = world
    settings = ServiceSettings(db=world.db, oidc_issuer=ISSUER, oidc_audience=AUDIENCE, oidc_jwks=jwks)
    with TestClient(create_app(settings)) as c:
        yield c


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_a_valid_token_authenticates_its_user(client):
    answer = client.get("/v1/me", headers=bearer(signed(claims())))
    assert answer.status_code == 200, answer.text
    assert answer.json() | {"roles": None} == {"principal": "tesla-operator", "scope": "write", "via": "oidc",
                                               "kind": "person", "roles": None}
    assert answer.json()["roles"] == {"tesla": ["operator"]}


REFUSED = [
    pytest.param(lambda: signed(claims(iss="https://other-idp.example.test/")), id="wrong-issuer"),
    pytest.param(lambda: signed(claims(iss=None)), id="no-issuer"),
    pytest.param(lambda: signed(claims(aud="another-service")), id="wrong-audience"),
    pytest.param(lambda: signed(claims(aud=None)), id="no-audience"),
    pytest.param(lambda: signed(claims(exp=int(time.time()) - 3600)), id="expired"),
    pytest.param(lambda: signed(claims(exp=None)), id="no-expiry"),
    pytest.param(lambda: signed(claims(nbf=int(time.time()) + 3600)), id="not-yet-valid"),
    pytest.param(lambda: signed(claims(), key=OTHER_KEY), id="another-key-same-kid"),
    pytest.param(lambda: signed(claims(), key=OTHER_KEY, kid="key-2"), id="another-key-unknown-kid"),
    pytest.param(lambda: signed(claims(), key=OTHER_KEY, kid=None), id="another-key-no-kid"),
    pytest.param(lambda: unsigned(claims()), id="alg-none"),
    pytest.param(lambda: hs256_with_public_key(claims()), id="hs256-keyed-with-the-public-key"),
    pytest.param(lambda: signed(claims())[:-8] + "AAAAAAAA", id="signature-altered"),
    pytest.param(lambda: signed(claims(sub=None)), id="no-subject"),
    pytest.param(lambda: signed(claims(sub="")), id="empty-subject"),
    pytest.param(lambda: signed(claims(sub=12345)), id="subject-not-a-string"),
    pytest.param(lambda: signed(claims(sub="nobody")), id="subject-unknown"),
    pytest.param(lambda: signed(claims(sub="musk")), id="person-not-a-user"),
    pytest.param(lambda: signed(claims(sub="tesla-finance")), id="user-disabled"),
    pytest.param(lambda: "e30.e30.e30", id="not-a-jwt"),
]


@pytest.mark.parametrize("make", REFUSED)
def test_a_token_that_is_not_valid_is_refused(client, make):
    answer = client.get("/v1/me", headers=bearer(make()))
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


GPUS_FAILED = {"owner": "tesla", "model": "h100", "gpus": 1, "site": "tesla-dc"}


@pytest.mark.parametrize("scope, status", [("openid gpufleet:write", 201), ("openid", 403), (None, 403),
                                           ("openid gpufleet:writer", 403)],
                         ids=["write-scope", "no-write-scope", "no-scope-claim", "a-longer-scope-name"])
def test_a_token_writes_only_with_the_write_scope(client, scope, status):
    token = signed(claims(scope=scope))
    assert client.get("/v1/me", headers=bearer(token)).json()["scope"] == ("write" if status == 201 else "read")
    before = client.get("/v1/ledger/head", headers=bearer(token)).json()
    answer = client.post("/v1/events/gpus_failed", json=GPUS_FAILED, headers=bearer(token))
    assert answer.status_code == status, answer.text
    after = client.get("/v1/ledger/head", headers=bearer(token)).json()
    if status == 201:
        assert answer.json()["actor"] == "tesla-operator" and after["seq"] == before["seq"] + 1
    else:
        assert "read-only" in answer.json()["detail"] and after == before


def test_a_server_without_an_issuer_refuses_every_jwt(world):
    with TestClient(create_app(ServiceSettings(db=world[0].db))) as c:
        answer = c.get("/v1/me", headers=bearer(signed(claims())))
    assert answer.status_code == 401 and "no OIDC tokens" in answer.json()["detail"]
