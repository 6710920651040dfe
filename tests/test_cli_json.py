"""Every command that offers ``--format json`` writes JSON and nothing else on standard output.

The commands run as real subprocesses, so that whatever a library writes on file descriptor 1
(HiGHS 1.16 prints a banner when its first ``Highs()`` is created) is caught here. The commands
are discovered from the Typer application itself: one that gains ``--format`` without a row in
:data:`INVOCATIONS` fails :func:`test_every_json_command_is_exercised`.
"""

from __future__ import annotations

import inspect
import json
from enum import Enum
from pathlib import Path

import pytest
import typer

from gpufleet.cli.app import app
from gpufleet.domain.notes import Checkpoint, generate_key, gpufleet_extensions, sign_note
from test_cli import ok

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "h100-2024.yaml"
TRACE = """\
timestamp,duration,num_gpus,gpu_time,cluster
2024-03-01 00:00:00,3600.0,4,14400.0,y
2024-03-01 00:30:00,600.0,4,2400.0,x
"""

# command path -> the arguments that make it do real work (a solve where it plans)
INVOCATIONS: dict[str, list[str]] = {
    "status": ["status", "--as-of", "2024-06-04"],
    "events": ["events", "--since", "5"],
    "demo": ["demo"],
    "plan": ["plan", "--as-of", "2024-06-01", "--horizon", "8"],
    "plan --compare": ["plan", "--as-of", "2024-06-01", "--horizon", "8", "--compare"],
    "plan --integral": ["plan", "--as-of", "2024-06-01", "--horizon", "8", "--integral"],
    "approvals list": ["approvals", "list"],
    "audit": ["audit"],
    "costs": ["costs", "--month", "2024-01"],
    "ledger verify": ["ledger", "verify"],
    "simulate": ["simulate", "{trace}", "--compare"],
    "sweep supply": ["sweep", "supply", "--known-at", "2024-06-04", "--samples", "4", "--workers", "1"],
    "sweep quotas": ["sweep", "quotas", "{trace}", "--policies", "static,borrow", "--mix", "0", "--lending", "none",
                     "--borrowing", "none", "--workers", "1", "--max-guarantee-wait", "60"],
    "users list": ["users", "list"],
    "tokens create": ["tokens", "create", "musk", "--scope", "read"],
    "tokens list": ["tokens", "list"],
    "keys list": ["keys", "list"],
    "checkpoint list": ["checkpoint", "list"],
    "checkpoint verify": ["checkpoint", "verify", "{note}", "--key", "{vkey}"],
    "verify-bundle": ["verify-bundle", "{bundle}", "--key", "{vkey}"],
}


def json_commands() -> set[str]:
    """The command paths with an option whose choices (an enum) include ``json``."""
    found: set[str] = set()

    def offers_json(callback) -> bool:
        defaults = (p.default for p in inspect.signature(callback).parameters.values())
        return any(isinstance(d, Enum) and "json" in type(d).__members__ for d in defaults)

    def walk(typer_app: typer.Typer, path: list[str]) -> None:
        if typer_app.registered_callback and typer_app.registered_callback.callback and path \
                and offers_json(typer_app.registered_callback.callback):
            found.add(" ".join(path))
        for command in typer_app.registered_commands:
            name = command.name or command.callback.__name__.replace("_", "-")
            if offers_json(command.callback):
                found.add(" ".join(path + [name]))
        for group in typer_app.registered_groups:
            walk(group.typer_instance, path + [group.name])

    walk(app, [])
    return found


@pytest.fixture(scope="module")
def example_db(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("json") / "fleet.db"
    ok("init", db=db)
    ok("load", EXAMPLE, db=db)
    ok("users", "add", "musk", db=db)
    return db


def test_every_json_command_is_exercised():
    assert json_commands() == {key.split(" --")[0] for key in INVOCATIONS}


@pytest.mark.parametrize("key", list(INVOCATIONS))
def test_json_output_is_only_json(key, example_db, tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE)
    log = generate_key("log.example")
    note = tmp_path / "checkpoint.note"
    note.write_text(sign_note(Checkpoint("log.example", 1, bytes(32)).body, [log]))
    given = {"{trace}": str(trace), "{note}": str(note), "{vkey}": log.vkey.text}
    if "{bundle}" in INVOCATIONS[key]:
        given["{bundle}"] = str(_bundle(example_db, log, tmp_path))
    args = [given.get(a, a) for a in INVOCATIONS[key]]
    proc = ok(*args, "--format", "json", db=example_db)
    json.loads(proc.stdout)  # the whole of standard output, not a line of it


def _bundle(db: Path, log, folder: Path) -> Path:
    """A related-party disclosure bundle of ``db``, against a checkpoint of its head signed with ``log``
    (not recorded: the module's ledger stays as it is)."""
    from gpufleet.ledger import merkle_store
    from gpufleet.services import disclosure
    from gpufleet.services.fleet import FleetService

    fleet = FleetService.open(str(db))
    try:
        head = fleet.head()
        with fleet.engine.connect() as conn:
            root = merkle_store.root_hash(conn, head.seq)
        body = Checkpoint("log.example", head.seq, root,
                          gpufleet_extensions(head.recorded_at, head.seq, head.hash)).body
        bundle = disclosure.build_bundle(fleet, "related-party", note=sign_note(body, [log]))
    finally:
        fleet.engine.dispose()
    (path := folder / "bundle.json").write_text(disclosure.bundle_text(bundle))
    return path
