"""The service's settings: flags, then environment (``GPUFLEET_*``), then an optional TOML file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from gpufleet.ledger.db import DEFAULT_DB

MiB = 1024 * 1024


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

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings]
        config = init_settings.init_kwargs.get("config") or env_settings().get("config")
        if config:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config)))
        return tuple(sources)
