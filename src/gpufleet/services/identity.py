"""Who is speaking to the service: users, API tokens and OIDC bearer tokens.

A *user* is a principal of the ledger (a person, or a service account bound to one entity) that an
admin has enabled to sign in. An API token is ``gpf_<token id>_<secret>``: random, shown once, kept
only as the SHA-256 of the secret (the secret has 256 bits of entropy, so a plain hash cannot be
reversed by search), with an expiry and a scope (read or write). An OIDC token is a JWT signed by the
configured issuer, checked against its JWKS, whose claim (``sub`` by default) names the principal.
What a principal may do is :mod:`gpufleet.domain.access`, on the ledger's access roles.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select, update

from gpufleet.domain import access
from gpufleet.domain.access import Principal, Scope
from gpufleet.domain.chain import format_instant
from gpufleet.errors import ConflictError, GpufleetError, InputError, UnknownReference
from gpufleet.ledger.schema import api_tokens, users
from gpufleet.services.fleet import FleetService

TOKEN_PREFIX = "gpf"
MAX_TOKEN_DAYS = 366
DEFAULT_TOKEN_DAYS = 90


class Unauthenticated(GpufleetError):
    """No credential, or one that is unknown, expired, revoked or not for an enabled user."""

    exit_code = 3


@dataclass(frozen=True)
class IssuedToken:
    token: str  # shown once; only its hash is stored
    token_id: str
    principal: str
    scope: str
    expires_at: str


def _now() -> datetime:
    return datetime.now(UTC)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# -- users ------------------------------------------------------------------------------------


def add_user(service: FleetService, principal: str) -> dict:
    """Enable ``principal`` (a person or service account of the ledger) to sign in."""
    state = service.state()
    if not access.is_known(state, principal):
        raise UnknownReference(f"'{principal}' is neither a registered person nor a service account of the "
                               "ledger (record person_registered or service_account_registered first)",
                               field="principal")
    with service.engine.begin() as conn:
        row = conn.execute(select(users).where(users.c.principal == principal)).first()
        if row is not None and row.disabled_at is None:
            raise ConflictError(f"'{principal}' is already a user", field="principal")
        if row is None:
            conn.execute(insert(users).values(principal=principal, created_at=format_instant(_now())))
        else:
            conn.execute(update(users).where(users.c.principal == principal).values(disabled_at=None))
    return {"principal": principal, "enabled": True}


def disable_user(service: FleetService, principal: str) -> dict:
    """Stop ``principal`` signing in, with any token or OIDC identity, from now on."""
    with service.engine.begin() as conn:
        done = conn.execute(update(users).where(users.c.principal == principal, users.c.disabled_at.is_(None))
                            .values(disabled_at=format_instant(_now()))).rowcount
    if not done:
        raise UnknownReference(f"'{principal}' is not an enabled user", field="principal")
    return {"principal": principal, "enabled": False}


def list_users(service: FleetService) -> list[dict]:
    with service.reader.connect() as conn:
        rows = conn.execute(select(users).order_by(users.c.principal)).all()
    return [{"principal": r.principal, "created_at": r.created_at, "enabled": r.disabled_at is None}
            for r in rows]


def _require_user(conn, principal: str) -> None:
    row = conn.execute(select(users.c.disabled_at).where(users.c.principal == principal)).first()
    if row is None or row.disabled_at is not None:
        raise Unauthenticated(f"'{principal}' is not an enabled user")


# -- API tokens -------------------------------------------------------------------------------


def create_token(service: FleetService, principal: str, *, name: str = "", scope: str = "read",
                 days: int = DEFAULT_TOKEN_DAYS) -> IssuedToken:
    """Issue a token for the user ``principal``; the returned ``token`` is the only copy."""
    try:
        scope = Scope(scope).value
    except ValueError:
        raise InputError(f"'{scope}' is not a scope (read or write)", field="scope") from None
    if not 1 <= days <= MAX_TOKEN_DAYS:
        raise InputError(f"a token lives 1 to {MAX_TOKEN_DAYS} days, not {days}", field="days")
    if len(name) > 200 or any(not c.isprintable() for c in name):
        raise InputError("a token name is at most 200 printable characters", field="name")
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    now = _now()
    expires = format_instant(now + timedelta(days=days))
    with service.engine.begin() as conn:
        try:
            _require_user(conn, principal)
        except Unauthenticated:
            raise UnknownReference(f"'{principal}' is not an enabled user (`gpufleet users add` first)",
                                   field="principal") from None
        conn.execute(insert(api_tokens).values(token_id=token_id, principal=principal, name=name,
                                               secret_sha256=_hash(secret), scope=scope,
                                               created_at=format_instant(now), expires_at=expires))
    return IssuedToken(f"{TOKEN_PREFIX}_{token_id}_{secret}", token_id, principal, scope, expires)


def list_tokens(service: FleetService, principal: str | None = None) -> list[dict]:
    """Tokens (never their secrets), newest first; only ``principal``'s if given."""
    query = select(api_tokens).order_by(api_tokens.c.created_at.desc())
    if principal is not None:
        query = query.where(api_tokens.c.principal == principal)
    now = format_instant(_now())
    with service.reader.connect() as conn:
        rows = conn.execute(query).all()
    return [{"token_id": r.token_id, "principal": r.principal, "name": r.name, "scope": r.scope,
             "created_at": r.created_at, "expires_at": r.expires_at, "revoked_at": r.revoked_at,
             "active": r.revoked_at is None and r.expires_at > now} for r in rows]


def revoke_token(service: FleetService, token_id: str, principal: str | None = None) -> dict:
    """Revoke a token; with ``principal``, only if it is that principal's."""
    query = update(api_tokens).where(api_tokens.c.token_id == token_id, api_tokens.c.revoked_at.is_(None))
    if principal is not None:
        query = query.where(api_tokens.c.principal == principal)
    with service.engine.begin() as conn:
        done = conn.execute(query.values(revoked_at=format_instant(_now()))).rowcount
    if not done:
        raise UnknownReference(f"no active token '{token_id}'", field="token_id")
    return {"token_id": token_id, "revoked": True}


def authenticate_token(service: FleetService, token: str) -> Principal:
    """The principal of an API token, or :class:`Unauthenticated` (one message for every failure
    reason that would tell an attacker which part was right)."""
    parts = token.split("_", 2)
    refused = Unauthenticated("the token is unknown, expired or revoked")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or len(parts[1]) != 16 or len(parts[2]) > 100:
        raise refused
    with service.reader.connect() as conn:
        row = conn.execute(select(api_tokens).where(api_tokens.c.token_id == parts[1])).first()
        if row is None or not hmac.compare_digest(row.secret_sha256, _hash(parts[2])):
            raise refused
        if row.revoked_at is not None or row.expires_at <= format_instant(_now()):
            raise refused
        _require_user(conn, row.principal)
    return Principal(row.principal, Scope(row.scope), "token")


# -- OIDC -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OidcConfig:
    """An identity provider whose JWTs the service accepts."""

    issuer: str
    audience: str
    jwks: str  # the JWKS's URL (https://...) or a file holding it
    claim: str = "sub"  # the claim whose value is the principal's id
    scope_claim: str = "scope"  # space-separated; "gpufleet:write" grants writes
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")


class OidcVerifier:
    """Verifies bearer JWTs against the issuer's JWKS (fetched once and cached by PyJWT)."""

    def __init__(self, config: OidcConfig):
        import jwt

        self.config = config
        self._jwt = jwt
        if "://" in config.jwks:
            self._client = jwt.PyJWKClient(config.jwks, cache_keys=True, lifespan=300, timeout=5)
            self._keys = None
        else:
            self._client = None
            self._keys = jwt.PyJWKSet.from_dict(json.loads(Path(config.jwks).read_text()))

    def _key(self, token: str):
        header = self._jwt.get_unverified_header(token)
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        kid = header.get("kid")
        for key in self._keys.keys:
            if kid is None or key.key_id == kid:
                return key.key
        raise Unauthenticated("the token's signing key is not in the issuer's JWKS")

    def _claims(self, token: str, audience: str, required: list[str], what: str) -> dict:
        jwt = self._jwt
        try:
            return jwt.decode(token, self._key(token), algorithms=list(self.config.algorithms), audience=audience,
                              issuer=self.config.issuer, options={"require": required}, leeway=30)
        except (jwt.PyJWTError, ValueError, KeyError) as exc:
            raise Unauthenticated(f"{what} was refused: {exc}") from None

    def principal_id(self, token: str) -> tuple[str, Scope]:
        claims = self._claims(token, self.config.audience, ["exp", "iss", "aud", self.config.claim], "the OIDC token")
        who = claims.get(self.config.claim)
        if not isinstance(who, str) or not who:
            raise Unauthenticated(f"the OIDC token's claim '{self.config.claim}' names no principal")
        scopes = str(claims.get(self.config.scope_claim, "")).split()
        return who, Scope.WRITE if "gpufleet:write" in scopes else Scope.READ

    def id_token_claims(self, token: str, client_id: str, nonce: str) -> dict:
        """The claims of an ID token for ``client_id`` (OpenID Connect Core §3.1.3.7): signed by a key of the
        issuer's JWKS, its ``iss``, ``aud`` (with ``azp`` when it names several), ``exp``, ``iat``, ``sub``, and
        the ``nonce`` of this sign-in (so a token from another sign-in cannot be replayed into this one)."""
        claims = self._claims(token, client_id, ["exp", "iat", "iss", "aud", "sub"], "the ID token")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != client_id:
            raise Unauthenticated(f"the ID token names several audiences and its azp is not '{client_id}'")
        given = claims.get("nonce")
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), nonce.encode()):
            raise Unauthenticated("the ID token's nonce is not this sign-in's (a token of another sign-in)")
        return claims


def authenticate_oidc(service: FleetService, verifier: OidcVerifier, token: str) -> Principal:
    who, scope = verifier.principal_id(token)
    with service.reader.connect() as conn:
        _require_user(conn, who)
    return Principal(who, scope, "oidc")


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and not token.startswith(f"{TOKEN_PREFIX}_")
