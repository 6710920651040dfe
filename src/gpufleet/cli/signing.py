"""Signed votes on the command line: ``gpufleet keys register|list|revoke`` and the signing of
``gpufleet approvals approve|reject|waive SUBJECT --sign-with KEYFILE`` (docs/disclosure.md).

Everything secret happens here, on the voter's machine: the private key file is read (it must be
mode 0600), the proof of a registration and the signature of a vote are made, and only the public
key, the proof and the signature are sent or recorded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gpufleet.cli import client, render
from gpufleet.cli.app import ActorOpt, KeyOpt, OnOpt, Settings, _fleet, _record, app
from gpufleet.cli.render import Format, console
from gpufleet.domain import vote_signing
from gpufleet.errors import InputError
from gpufleet.services.keys import load_signer
from gpufleet.services.outputs import check_writable, write_text

try:  # helper B's `gpufleet keys generate` lives there, when it exists: the same `keys` group
    from gpufleet.cli.checkpoints import keys_app  # type: ignore[attr-defined]
except ImportError:
    keys_app = typer.Typer(no_args_is_help=True, help="Keys: register, list and revoke a person's vote-signing "
                                                      "keys (docs/disclosure.md).")
if not any(group.name == "keys" for group in app.registered_groups):
    app.add_typer(keys_app, name="keys")

KeyFileOpt = Annotated[Path | None, typer.Option("--key", help="the person's private key file (mode 0600), from "
                                                 "`gpufleet keys generate`: it signs the proof here")]
REQUEST_FIELDS = ("person", "entity", "public_key", "proof")


def registration(person: str, entity: str, key_file: Path) -> dict:
    """The payload of ``person_key_registered``, its proof signed with the private key in ``key_file``."""
    signer = load_signer(key_file)
    public_key = signer.vkey.text
    proof = signer.sign(vote_signing.registration_message(person, entity, public_key))
    return {"person": person, "entity": entity, "public_key": public_key, "proof": vote_signing.b64(proof)}


def read_request(path: Path) -> dict:
    """A registration request written by ``keys register --out``: its four fields, nothing else."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the request: {exc}", location=str(path)) from None
    except ValueError as exc:
        raise InputError(f"not JSON: {exc}", location=str(path)) from None
    if not isinstance(data, dict) or set(data) != set(REQUEST_FIELDS):
        raise InputError(f"a registration request is a JSON object with exactly {', '.join(REQUEST_FIELDS)}",
                         location=str(path), field="request")
    return data


@keys_app.command("register")
def keys_register(
    person: Annotated[str | None, typer.Option(help="whose key (a person of the ledger)")] = None,
    entity: Annotated[str | None, typer.Option(help="the entity whose admin registers it (the person holds "
                                                    "a role there)")] = None,
    key: KeyFileOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="write the registration request here for an admin "
                                                           "to record (nothing is recorded)")] = None,
    request: Annotated[Path | None, typer.Option("--request", help="record a request written with --out "
                                                                   "(the admin's side)")] = None,
    on: OnOpt = None, actor: ActorOpt = None, idempotency_key: KeyOpt = None,
) -> None:
    """Register a person's vote-signing key: the person signs a proof with the private key (`--key`),
    and an admin of the entity records it, at once or from the request written with `--out`."""
    if request is not None:
        if any(v is not None for v in (person, entity, key, out)):
            raise typer.BadParameter("give --request alone, or --person, --entity and --key",
                                     param_hint="'--request'")
        data = read_request(request)
    else:
        for name, value in (("--person", person), ("--entity", entity), ("--key", key)):
            if value is None:
                raise typer.BadParameter(f"{name} is required (or --request FILE)", param_hint=f"'{name}'")
        assert person is not None and entity is not None and key is not None
        data = registration(person, entity, key)
        if out is not None:
            check_writable(out, "out")
            write_text(out, json.dumps(data, indent=2) + "\n", "out")
            console.print(f"wrote the registration request of {data['public_key']} for {person} in {entity} to "
                          f"{out}; an admin of {entity} records it with `gpufleet keys register --request {out}`",
                          markup=False, highlight=False)
            return
    _record("person_key_registered", data, on, actor, idempotency_key)


@keys_app.command("revoke")
def keys_revoke(
    person: Annotated[str, typer.Option(help="whose key")],
    key_id: Annotated[str, typer.Option("--key-id", help="the key ID, 8 hex digits (as `keys list` shows)")],
    reason: Annotated[str, typer.Option(help="why (e.g. the private key was lost)")] = "",
    on: OnOpt = None, actor: ActorOpt = None, idempotency_key: KeyOpt = None,
) -> None:
    """Revoke a person's key from the effective date on: votes it signs after are refused."""
    _record("person_key_revoked", {"person": person, "key_id": key_id, "reason": reason}, on, actor,
            idempotency_key)


@keys_app.command("list")
def keys_list(
    person: Annotated[str | None, typer.Option(help="only this person's keys")] = None,
    as_of: Annotated[str | None, typer.Option(help="as of this date (default: latest)")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table, json or csv")] = Format.table,
) -> None:
    """The persons' vote-signing keys, with their registration and revocation dates (a local database)."""
    from gpufleet.services.fleet import parse_date

    if Settings.remote is not None:
        raise client.local_only("keys list", Settings.remote)
    state = _fleet().state(parse_date(as_of, "as_of"))
    rows = [{"person": k.person, "entity": k.entity, "key_id": k.key_id, "registered_on": k.registered_on.isoformat(),
             "revoked_on": k.revoked_on.isoformat() if k.revoked_on else None, "reason": k.reason,
             "public_key": k.public_key}
            for _id, k in sorted(state.person_keys.items()) if person in (None, k.person)]
    if fmt is Format.json:
        render.print_json(rows)
    elif fmt is Format.csv:
        render.print_csv(rows)
    else:
        console.print(render.table("Vote-signing keys", rows))


# -- signing a vote ----------------------------------------------------------------------------


def sign_vote(key_file: Path, subject: str, decision: str, person: str, terms: dict,
              content_sha256: str | None = None) -> dict:
    """Sign a vote on ``terms`` with the private key in ``key_file``: the hash is recomputed here from
    the terms shown (``content_sha256``, the server's, must agree with it); answer the vote's fields."""
    signer = load_signer(key_file)
    if terms.get("subject") != subject:
        raise InputError(f"the terms read are those of {terms.get('subject')}, not {subject}", field="subject")
    digest = vote_signing.content_sha256(terms)
    if content_sha256 is not None and content_sha256 != digest:
        raise InputError(f"the server's content hash {content_sha256} is not the hash of the terms it shows "
                         f"({digest}); nothing was signed", field="content_sha256")
    signature = signer.sign(vote_signing.vote_message(subject, decision, person, digest))
    return {"content_sha256": digest, "key_id": signer.key_id.hex(), "signature": vote_signing.b64(signature),
            "terms": terms}


def show_terms(terms: dict) -> None:
    """The terms being signed, on standard error (standard output stays the command's answer)."""
    from gpufleet.cli.render import errors

    shown = ", ".join(f"{k}={v}" for k, v in terms.items() if v is not None and k != "policy_sha256")
    errors.print(f"signing: {shown}; policy {str(terms.get('policy_sha256'))[:16]}", markup=False, highlight=False,
                 soft_wrap=True)
