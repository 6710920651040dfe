"""The service's settings: flags, then environment (``GPUFLEET_*``), then an optional TOML file."""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from gpufleet.ledger.db import DEFAULT_DB

MiB = 1024 * 1024
LOOPBACK = {"localhost", "127.0.0.1", "::1"}
SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 §3.3


class ServiceSettings(BaseSettings):
    """Everything ``create_app`` needs; nothing is read at import time."""

    model_config = SettingsConfigDict(env_prefix="GPUFLEET_", extra="forbid", frozen=True)

    db: str = Field(DEFAULT_DB, description="database URL or SQLite file path")
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    workers: Annotated[int, Field(ge=1, le=64, description="uvicorn worker processes")] = 1
    job_workers: Annotated[int, Field(ge=1, le=32, description="processes running jobs, per server process")] = 2
    max_body_bytes: Annotated[int, Field(ge=1024, le=1024 * MiB, description="larger request bodies get 413")] = 8 * MiB
    policy: Path | None = Field(None, description="governance policy file (YAML); default: the built-in policy")
    traces_dir: Path | None = Field(None, description="the folder simulations may read traces from, by name")
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks: str | None = Field(None, description="the issuer's JWKS: an https URL or a file")
    oidc_claim: str = "sub"
    # the dashboard's browser sign-in (authorization code flow with PKCE, docs/dashboard.md)
    oidc_client_id: str | None = Field(None, description="the dashboard's client id at the issuer: enables "
                                       "'Sign in with <issuer>' on /ui/login")
    oidc_client_secret: SecretStr | None = Field(None, description="a confidential client's secret (sent with "
                                                 "HTTP Basic); none: a public client, protected by PKCE alone")
    oidc_scope: str = Field("openid", description="the scopes the dashboard asks for, space-separated, with openid "
                            "(add gpufleet:write, or what the issuer needs, for a write session)")
    oidc_redirect_base: str | None = Field(None, description="this server's public URL (https://host[:port]) when "
                                           "behind a proxy; the callback is <base>/ui/login/oidc/callback")
    oidc_discovery: str | None = Field(None, description="the issuer's discovery document: an https URL or a file "
                                       "(default <issuer>/.well-known/openid-configuration); read once")
    oidc_authorization_endpoint: str | None = Field(None, description="instead of discovery, with the token endpoint")
    oidc_token_endpoint: str | None = Field(None, description="instead of discovery, with the authorization endpoint")
    log_level: str = "info"
    recover_jobs: bool = Field(True, description="mark jobs left running by a previous process interrupted")
    checkpoint_key_file: Path | None = Field(None, description="the log's private key file (mode 0600, from "
                                             "`gpufleet keys generate`): POST /v1/checkpoints signs with it")
    checkpoint_origin: str | None = Field(None, description="the checkpoints' origin line (default: the key's name)")
    config: Path | None = Field(None, description="a TOML file of these settings (GPUFLEET_CONFIG)")

    @model_validator(mode="after")
    def _oidc_whole(self) -> ServiceSettings:
        given = [self.oidc_issuer, self.oidc_audience, self.oidc_jwks]
        if any(given) and not all(given):
            raise ValueError("OIDC needs oidc_issuer, oidc_audience and oidc_jwks together")
        return self

    @model_validator(mode="after")
    def _oidc_login_whole(self) -> ServiceSettings:
        browser = {"oidc_client_secret": self.oidc_client_secret, "oidc_redirect_base": self.oidc_redirect_base,
                   "oidc_discovery": self.oidc_discovery, "oidc_token_endpoint": self.oidc_token_endpoint,
                   "oidc_authorization_endpoint": self.oidc_authorization_endpoint}
        if not self.oidc_client_id:
            given = [name for name, value in browser.items() if value]
            if given:
                raise ValueError(f"{given[0]} is set but oidc_client_id is not (the dashboard's OIDC sign-in "
                                 "needs the client id the issuer gave it)")
            return self
        if not self.oidc_issuer:
            raise ValueError("oidc_client_id needs oidc_issuer, oidc_audience and oidc_jwks: the dashboard checks the "
                             "access token it receives as the API checks bearer tokens")
        if any(not c.isprintable() or c.isspace() for c in self.oidc_client_id):
            raise ValueError("oidc_client_id has a space or a character that is not printable")
        endpoints = [self.oidc_authorization_endpoint, self.oidc_token_endpoint]
        if any(endpoints) and not all(endpoints):
            raise ValueError("oidc_authorization_endpoint and oidc_token_endpoint go together (or give neither: "
                             "they are read from the issuer's discovery document)")
        if all(endpoints) and self.oidc_discovery:
            raise ValueError("give oidc_discovery or the two endpoints (oidc_authorization_endpoint, "
                             "oidc_token_endpoint), not both")
        for name in ("oidc_authorization_endpoint", "oidc_token_endpoint", "oidc_redirect_base"):
            if browser[name]:
                check_url(name, browser[name], base=name == "oidc_redirect_base")
        if self.oidc_discovery and "://" in self.oidc_discovery:
            check_url("oidc_discovery", self.oidc_discovery)
        elif not self.oidc_discovery and not all(endpoints):  # the discovery document is the issuer's
            check_url("oidc_issuer", self.oidc_issuer)
        scopes = self.oidc_scope.split()
        if "openid" not in scopes or not all(SCOPE_TOKEN.fullmatch(s) for s in scopes):
            raise ValueError(f"oidc_scope '{self.oidc_scope}' must be space-separated scope names including openid")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings]
        config = init_settings.init_kwargs.get("config") or env_settings().get("config")
        if config:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config)))
        return tuple(sources)


def check_url(name: str, url: str, *, base: bool = False) -> str:
    """``url`` if it is https (http only on this machine, for a local test issuer); a ValueError naming
    ``name`` otherwise. With ``base``, only scheme, host and port (no path, query or fragment)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError:
        host = None
    if host is None or parts.scheme not in ("https", "http") or (parts.scheme == "http" and host not in LOOPBACK):
        raise ValueError(f"{name} '{url}' is not an https URL (plain http only for localhost)")
    if parts.fragment or (base and (parts.path not in ("", "/") or parts.query)):
        raise ValueError(f"{name} '{url}' must be " + ("scheme://host[:port], without a path" if base
                                                        else "a URL without a fragment"))
    return url
