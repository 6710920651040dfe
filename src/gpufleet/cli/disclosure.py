"""``gpufleet disclose`` and ``gpufleet verify-bundle``: a self-contained, verifiable disclosure of selected
events (docs/disclosure.md, "Disclosure bundles"). ``disclose`` reads the ledger (or asks the server's
``GET /v1/disclosures``); ``verify-bundle`` reads no database and asks no server."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from gpufleet.cli import render
from gpufleet.cli.render import Format, console
from gpufleet.domain import disclosure as bundles
from gpufleet.errors import InputError
from gpufleet.services.outputs import check_writable, write_text


class Kind(StrEnum):
    related_party = "related-party"
    claims = "claims"
    loans = "loans"
    all = "all"


KeysOpt = Annotated[list[str] | None, typer.Option("--key", help="a verifier key (vkey text or FILE.pub); repeat "
                                                                  "for several")]


def _settings():
    from gpufleet.cli.app import Settings

    return Settings


def _read(path: Path | None, field: str) -> str | None:
    """A text file given as an option (a note, a bundle); InputError naming the option."""
    if path is None:
        return None
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", field=field) from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text", field=field) from None


def disclose(
    out: Annotated[Path, typer.Option("--out", help="the bundle file to write (JSON)")],
    entity: Annotated[str | None, typer.Option("--entity", help="only events where this entity is a party")] = None,
    kind: Annotated[Kind, typer.Option("--kind", help="related-party, claims, loans or all")] = Kind.all,
    start: Annotated[str | None, typer.Option("--from", help="effective on or after YYYY-MM-DD")] = None,
    end: Annotated[str | None, typer.Option("--to", help="effective on or before YYYY-MM-DD")] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="prove against this checkpoint note "
                                                                         "(default: the latest recorded)")] = None,
    previous: Annotated[Path | None, typer.Option("--previous", help="an earlier checkpoint note: add the proof "
                                                                     "that the tree only grew since")] = None,
    key: KeysOpt = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="approval policy YAML: the terms signed votes "
                                                                 "are checked against (default: sourced defaults)")]
    = None,
) -> None:
    """Write a disclosure bundle: the selected events (canonical bytes), an inclusion proof of each against
    a signed checkpoint, the verifier keys, each vote's signature status. Other events are not revealed."""
    from gpufleet.services.fleet import parse_date

    check_writable(out, "out")
    day_from, day_to = parse_date(start, "from"), parse_date(end, "to")
    settings = _settings()
    if settings.remote is not None:
        from gpufleet.cli.client import refuse_option

        for option, given in (("--checkpoint", checkpoint), ("--previous", previous), ("--key", key),
                              ("--policy", policy)):
            if given:
                raise refuse_option(option, "the server proves against its latest checkpoint")
        params = {"entity": entity, "kind": kind.value, "from": start, "to": end}
        bundle = settings.remote.get("/v1/disclosures", **params)
    else:
        bundle = _local(kind.value, entity, day_from, day_to, checkpoint, previous, key, policy)
    from gpufleet.services.disclosure import bundle_text, read_checkpoint

    write_text(out, bundle_text(bundle), "out")
    size = read_checkpoint(bundle["checkpoint"]).tree_size
    render.errors.print(f"{len(bundle['selection']['seqs'])} events disclosed in {out}, proven against the "
                        f"checkpoint of size {size}", markup=False, highlight=False)


def _local(kind, entity, start, end, checkpoint, previous, key, policy) -> dict:
    from gpufleet.cli.app import _fleet
    from gpufleet.services import disclosure, governance, keys

    return disclosure.build_bundle(_fleet(), kind, entity, start, end, note=_read(checkpoint, "checkpoint"),
                                   keys=[keys.load_verifier(k) for k in key or []],
                                   previous=_read(previous, "previous"), policy=governance.load_policy(policy))


def verify_bundle(
    file: Annotated[Path, typer.Argument(help="the bundle (JSON), from `gpufleet disclose`")],
    key: KeysOpt = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="a signature policy (YAML, TOML or JSON): the "
                                                                 "keys and signatures required")] = None,
    previous: Annotated[Path | None, typer.Option("--previous", help="a checkpoint note you hold from earlier: the "
                                                                     "bundle must prove the log only grew since")]
    = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table or json")] = Format.table,
) -> None:
    """Verify a disclosure bundle offline (no database, no server): the checkpoint's signatures with your
    keys, every event's bytes and inclusion proof, every vote, and the consistency proof; exit 1 naming the
    first failure."""
    from gpufleet.services import keys as key_files

    bundle = bundles.load_bundle(_read(file, "file"), str(file))
    verifiers = [key_files.load_verifier(k) for k in key or []]
    loaded = key_files.load_policy(policy) if policy is not None else None
    try:
        report = bundles.verify_bundle(bundle, verifiers, loaded, _read(previous, "previous"))
    except bundles.BundleInvalid as exc:
        if fmt is Format.json:
            render.print_json({"ok": False, "failed": exc.item, "reason": exc.message})
        raise
    if fmt is Format.json:
        render.print_json(report.as_dict())
        return
    _print_report(report.as_dict())


def _print_report(report: dict) -> None:
    """The proven events, the checkpoint and who signed it, the votes, the consistency proof."""
    cp = report["checkpoint"]
    console.print(f"bundle verifies: {len(report['events'])} events proven in the checkpoint {cp['origin']}, "
                  f"tree size {cp['tree_size']:,}, root {cp['root_hash'][:16]}..., signed by "
                  f"{', '.join(cp['signed_by'])}", markup=False, highlight=False)
    if cp["not_checked"]:
        console.print(f"  not checked (unknown keys): {', '.join(cp['not_checked'])}", markup=False)
    sel = report["selection"]
    console.print(render.table(f"Events proven (selection: kind {sel['kind']}, entity {sel['entity'] or 'any'}, "
                               f"from {sel['from'] or '-'} to {sel['to'] or '-'})", report["events"],
                               ["seq", "type", "effective_date", "actor", "what", "role"]))
    if report["votes"]:
        console.print(render.table("Votes and their signatures", report["votes"],
                                   ["seq", "subject", "person", "decision", "on", "status", "detail"]))
    if report["consistency"]:
        c = report["consistency"]
        console.print(f"consistency: the tree of size {c['old_size']:,} (root {c['old_root'][:16]}...) is a prefix "
                      f"of the tree of size {c['new_size']:,}: nothing before it was rewritten",
                      markup=False, highlight=False)
