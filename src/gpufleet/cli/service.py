"""``gpufleet serve``, ``db upgrade``, ``users``, ``tokens`` and ``access``: running the service and its identities.

These act on the database directly, as its custodian (whoever may open the database file or URL);
over HTTP the same operations need the admin role (docs/service.md).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated

import typer

from gpufleet.cli import render
from gpufleet.cli.render import Format, console

db_app = typer.Typer(no_args_is_help=True, help="The database's schema.")
users_app = typer.Typer(no_args_is_help=True, help="Principals (persons, service accounts) that may sign in.")
tokens_app = typer.Typer(no_args_is_help=True, help="API tokens: created once, stored only as a hash.")
access_app = typer.Typer(no_args_is_help=True, help="Access roles per entity, granted and revoked as ledger events.")
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="table or json")]


def _db() -> str:
    from gpufleet.cli.app import Settings

    return Settings.db


def _fleet():
    from gpufleet.services.fleet import FleetService

    return FleetService.open(_db())


def serve(
    host: Annotated[str | None, typer.Option(help="address to listen on (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default 8000)", min=1, max=65535)] = None,
    workers: Annotated[int | None, typer.Option(help="server processes (default 1)", min=1, max=64)] = None,
    config: Annotated[Path | None, typer.Option(help="a TOML file of settings (docs/service.md)")] = None,
) -> None:
    """Run the REST service (FastAPI under uvicorn) and its dashboard (/ui) on the --db database; stop with Ctrl-C."""
    import uvicorn
    from pydantic import SecretStr, ValidationError

    from gpufleet.api.app import check_database, configure_logging
    from gpufleet.api.settings import ServiceSettings
    from gpufleet.errors import InputError
    from gpufleet.services.jobs import JobStore

    given = {"db": _db(), "host": host, "port": port, "workers": workers, "config": config}  # db: --db or GPUFLEET_DB
    try:
        settings = ServiceSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(err["msg"].removeprefix("Value error, "), field=".".join(map(str, err["loc"])) or None) \
            from None
    fleet = check_database(settings)  # refuse a database whose migrations are behind, before listening
    recovered = JobStore(fleet).recover()
    fleet.engine.dispose()
    for name, value in settings.model_dump(exclude_none=True).items():  # a secret's value, not its mask
        value = value.get_secret_value() if isinstance(value, SecretStr) else value
        os.environ[f"GPUFLEET_{name.upper()}"] = str(value)
    os.environ["GPUFLEET_RECOVER_JOBS"] = "false"  # done once, above, not by each worker
    os.environ.setdefault("GPUFLEET_UI_SECRET", secrets.token_hex(32))  # the dashboard's sessions, for every worker
    configure_logging(settings.log_level)
    render.errors.print(f"gpufleet serving {settings.db} on http://{settings.host}:{settings.port} "
                        f"({settings.workers} worker(s); {recovered} interrupted job(s) marked)",
                        markup=False, highlight=False)
    uvicorn.run("gpufleet.web:create_app", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers, log_config=None, access_log=False, timeout_graceful_shutdown=10)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create the schema, or migrate it to the newest revision (idempotent)."""
    from gpufleet.ledger import db

    engine = db.make_engine(_db())
    db.upgrade(engine)
    engine.dispose()
    console.print(f"database {_db()} is at schema {db.HEAD_REVISION}")


@users_app.command("add")
def users_add(principal: Annotated[str, typer.Argument(help="a person or service account of the ledger")]) -> None:
    """Enable a principal to sign in (it must be registered in the ledger first)."""
    from gpufleet.services import identity

    identity.add_user(_fleet(), principal)
    console.print(f"user {principal} enabled; create a token with `gpufleet tokens create {principal}`")


@users_app.command("disable")
def users_disable(principal: str) -> None:
    """Stop a principal signing in, with any token or OIDC identity."""
    from gpufleet.services import identity

    identity.disable_user(_fleet(), principal)
    console.print(f"user {principal} disabled")


@users_app.command("list")
def users_list(fmt: FormatOpt = Format.table) -> None:
    from gpufleet.services import identity

    rows = identity.list_users(_fleet())
    render.print_json(rows) if fmt is Format.json else console.print(render.table("Users", rows))


@tokens_app.command("create")
def tokens_create(
    principal: str,
    scope: Annotated[str, typer.Option(help="read or write")] = "read",
    days: Annotated[int, typer.Option(help="days until it expires (1-366)")] = 90,
    name: Annotated[str, typer.Option(help="what it is for")] = "",
    fmt: FormatOpt = Format.table,
) -> None:
    """Create a token for a user; it is printed once and stored only as a hash."""
    from gpufleet.services import identity

    issued = identity.create_token(_fleet(), principal, name=name, scope=scope, days=days)
    if fmt is Format.json:
        render.print_json({"token": issued.token, "token_id": issued.token_id, "principal": issued.principal,
                           "scope": issued.scope, "expires_at": issued.expires_at})
        return
    console.print(issued.token, markup=False, highlight=False)
    render.errors.print(f"token {issued.token_id} for {principal} ({issued.scope}, expires {issued.expires_at}); "
                        "it is not shown again", markup=False, highlight=False)


@tokens_app.command("list")
def tokens_list(principal: Annotated[str | None, typer.Option(help="only this principal's")] = None,
                fmt: FormatOpt = Format.table) -> None:
    from gpufleet.services import identity

    rows = identity.list_tokens(_fleet(), principal)
    render.print_json(rows) if fmt is Format.json else console.print(render.table("API tokens", rows))


@tokens_app.command("revoke")
def tokens_revoke(token_id: str) -> None:
    from gpufleet.services import identity

    identity.revoke_token(_fleet(), token_id)
    console.print(f"token {token_id} revoked")


@access_app.command("grant")
def access_grant(principal: str, entity: str, role: Annotated[str, typer.Argument(
        help="viewer, operator, planner, finance, auditor or admin")],
        on: Annotated[str | None, typer.Option(help="effective date (default: today)")] = None) -> None:
    """Record an access_granted event (the local custodian's way to name the first admins)."""
    _access("access_granted", principal, entity, role, on)


@access_app.command("revoke")
def access_revoke(principal: str, entity: str, role: str,
                  reason: Annotated[str, typer.Option(help="why")] = "",
                  on: Annotated[str | None, typer.Option(help="effective date (default: today)")] = None) -> None:
    """Record an access_revoked event."""
    _access("access_revoked", principal, entity, role, on, reason=reason)


def _access(event_type: str, principal: str, entity: str, role: str, on: str | None, **extra) -> None:
    from gpufleet.services.fleet import make_payload, parse_date

    payload = make_payload(event_type, {"principal": principal, "entity": entity, "role": role} | extra)
    event = _fleet().record(payload, parse_date(on, "on"))
    console.print(f"recorded event {event.seq}: {event.event_type} {principal} {role} in {entity}")
