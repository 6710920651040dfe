"""The CLI in client mode, end to end: the real entry point (in-process, ``cli_runner.invoke``) talking to a
live ``gpufleet serve`` that this module starts on the world of ``api_world`` (one server for the module).

The same command, local (``--db``) and through the server on the same database, prints the same thing;
a write is the token's principal's and is applied once per idempotency key; a refusal is the server's
reason on standard error with the documented exit code and no traceback; ``login`` stores a 0600 file.
"""

from __future__ import annotations

import io
import json
import stat
import sys

import pytest

from api_world import LiveServer, build_world, free_port
from cli_runner import Result, invoke, refused
from gpufleet.services.fleet import FleetService, make_payload


class Server:
    def __init__(self, live: LiveServer, db: str, tokens: dict[str, str]):
        self.live, self.url, self.db, self.tokens = live, live.url, db, tokens


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("client") / "world.db")
    world = build_world(db)
    fleet = FleetService.open(db)  # a planner who also reads everything gets the whole plan, as local
    fleet.record(make_payload("access_granted", {"principal": "tesla-planner", "entity": "tesla", "role": "auditor"}))
    fleet.engine.dispose()
    live = LiveServer(db).start()
    try:
        yield Server(live, db, world.tokens)
    finally:
        live.stop()


@pytest.fixture(autouse=True)
def no_login(tmp_path, monkeypatch):
    """Neither the user's stored login nor their environment reaches these commands."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("GPUFLEET_URL", "GPUFLEET_TOKEN", "GPUFLEET_DB"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def remote(server, monkeypatch):
    """``remote(WHO, ARGS...)``: the command through the server, with WHO's token from the environment."""

    def call(who: str, *args: object) -> Result:
        monkeypatch.setenv("GPUFLEET_URL", server.url)
        monkeypatch.setenv("GPUFLEET_TOKEN", server.tokens.get(who, who))
        return invoke(*args)

    return call


def local(server: Server, *args: object) -> Result:
    return invoke(*args, db=server.db)


def ok(result: Result) -> Result:
    assert result.code == 0, f"exit {result.code}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


def without_timings(plan: dict) -> dict:
    return plan | {"solve": {k: v for k, v in plan["solve"].items() if not k.endswith("_s")}}


# who, the command, how its output is compared: "json" (parsed, through ``clean``) or "text" (as printed)
SAME_OUTPUT = {
    "status": ("tesla-auditor", ["status", "--format", "json"], "json", None),
    "status as of, as known at": ("tesla-auditor", ["status", "--as-of", "2024-06-04", "--known-at", "2024-06-04",
                                                    "--format", "json"], "json", None),
    "status table": ("tesla-auditor", ["status"], "text", None),
    "events": ("tesla-auditor", ["events", "--format", "json"], "json", None),
    "events by type, since, until, limit": ("tesla-auditor", ["events", "--type", "loan_opened", "--type",
                                            "access_granted", "--since", "3", "--until", "70", "--limit", "12",
                                            "--format", "json"], "json", None),
    "events table": ("tesla-auditor", ["events", "--limit", "20"], "text", None),
    "approvals": ("tesla-auditor", ["approvals", "list", "--format", "json"], "json", None),
    "approvals table": ("tesla-auditor", ["approvals", "list"], "text", None),
    "audit": ("tesla-auditor", ["audit", "--format", "json"], "json", None),
    "costs": ("tesla-finance", ["costs", "--entity", "tesla", "--month", "2024-06", "--format", "json"], "json",
              None),
    "verify": ("tesla-auditor", ["ledger", "verify", "--replay", "--format", "json"], "json", None),
    "verify table": ("tesla-auditor", ["ledger", "verify"], "text", None),
    "head": ("tesla-viewer", ["ledger", "head"], "text", None),
    "plan": ("tesla-planner", ["plan", "--horizon", "4", "--format", "json"], "json", without_timings),
    "plan compare": ("tesla-planner", ["plan", "--horizon", "3", "--compare", "--format", "json"], "json",
                     lambda plans: [without_timings(p) for p in plans]),
}


@pytest.mark.parametrize("who, args, compare, clean", SAME_OUTPUT.values(), ids=SAME_OUTPUT.keys())
def test_a_command_through_the_server_prints_what_the_local_command_prints(server, remote, who, args, compare,
                                                                            clean):
    here, there = ok(local(server, *args)), ok(remote(who, *args))
    if compare == "text":
        assert there.stdout == here.stdout
    else:
        clean = clean or (lambda x: x)
        assert clean(json.loads(there.stdout)) == clean(json.loads(here.stdout))
    assert there.stderr == ""


def test_a_write_is_the_principals_and_a_retry_is_applied_once(server, remote):
    def fail(gpus: int) -> list[object]:
        return ["fail", "--owner", "tesla", "--model", "h100", "--site", "tesla-dc", "--gpus", gpus,
                "--idempotency-key", "retry-1"]

    first, again = ok(remote("tesla-operator", *fail(1))), ok(remote("tesla-operator", *fail(1)))
    assert first.stdout == again.stdout and first.stdout.startswith("recorded event ")
    seq = int(first.stdout.split()[2].rstrip(":"))
    failed = json.loads(ok(local(server, "events", "--type", "gpus_failed", "--format", "json")).stdout)
    assert [(e["seq"], e["actor"]) for e in failed if e["idempotency_key"] == "api:tesla-operator:retry-1"] == \
        [(seq, "tesla-operator")]
    refused(remote("tesla-operator", *fail(2)), 5, "retry-1", "different request")


def test_a_vote_is_the_authenticated_persons(server, remote):
    voted = ok(remote("tesla-indep", "approvals", "approve", "proposal:p1", "--reason", "priced at market"))
    assert voted.stdout.startswith("recorded event ") and "tesla-indep approved proposal:p1" in voted.stdout
    rows = json.loads(ok(local(server, "approvals", "list", "--format", "json")).stdout)
    assert next(r for r in rows if r["subject"] == "proposal:p1")["approvals"] == ["tesla-indep"]


# who, the command, the exit code, what standard error must name
REFUSED = {
    "another entity's GPUs": ("tesla-operator", ["fail", "--owner", "xai", "--model", "h100", "--site", "colossus",
                                                 "--gpus", "1"], 3, ["operator", "xai"]),
    "an admin records": ("tesla-admin", ["fail", "--owner", "tesla", "--model", "h100", "--site", "tesla-dc",
                                         "--gpus", "1"], 3, ["tesla-admin"]),
    "a read-only token writes": ("read_only", ["fail", "--owner", "tesla", "--model", "h100", "--site", "tesla-dc",
                                               "--gpus", "1"], 3, ["read-only"]),
    "an invariant": ("tesla-operator", ["install", "--owner", "tesla", "--model", "h100", "--site", "tesla-dc",
                                        "--gpus", "900000"], 3, ["gpus_installed"]),
    "an interested person's vote": ("xai-indep", ["approvals", "approve", "proposal:p1"], 3, ["interested"]),
    "a vote as someone else": ("tesla-indep", ["approvals", "reject", "proposal:p1", "--person", "xai-indep"], 2,
                               ["--person", "tesla-indep"]),
    "an auditor's plan": ("tesla-auditor", ["plan", "--horizon", "2"], 3, ["planner"]),
    "--actor": ("tesla-operator", ["ship", "l1", "--actor", "someone"], 2, ["--actor", "principal"]),
    "--policy": ("tesla-auditor", ["audit", "--policy", "p.yaml"], 2, ["--policy"]),
    "a local-only command": ("tesla-admin", ["init"], 2, ["local database only", "--db"]),
    "a local-only subcommand": ("tesla-planner", ["plan", "apply", "plan.json"], 2, ["local database only"]),
    "a bad token": ("gpf_0123456789abcdef_nope", ["status"], 3, ["unknown, expired or revoked", "gpufleet login"]),
    "a revoked token": ("revoked", ["events"], 3, ["unknown, expired or revoked"]),
    "an expired token": ("expired", ["audit"], 3, ["unknown, expired or revoked"]),
}


@pytest.mark.parametrize("who, args, code, names", REFUSED.values(), ids=REFUSED.keys())
def test_a_refusal_is_the_servers_reason_and_writes_nothing(server, remote, who, args, code, names):
    head = ok(local(server, "ledger", "head")).stdout
    refused(remote(who, *args), code, *names)
    assert ok(local(server, "ledger", "head")).stdout == head


def test_an_unreachable_server_is_one_line(monkeypatch):
    monkeypatch.setenv("GPUFLEET_TOKEN", "gpf_0123456789abcdef_x")
    result = invoke("--server", f"http://127.0.0.1:{free_port()}", "status")
    refused(result, 4, "cannot reach the server", "connection refused")
    assert result.stderr.count("\n") == 1


def test_login_stores_a_private_file_that_later_commands_use(server, tmp_path, monkeypatch):
    def login(token: str, *args: str) -> Result:
        monkeypatch.setattr(sys, "stdin", io.StringIO(token + "\n"))
        return invoke("login", *args)

    stored = tmp_path / "config" / "gpufleet" / "credentials.json"
    refused(login(server.tokens["revoked"], "--server", server.url), 3, "unknown, expired or revoked")
    assert not stored.exists()
    assert "as tesla-viewer" in ok(login(server.tokens["tesla-viewer"], "--server", server.url)).stdout
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600 and stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    assert json.loads(stored.read_text()) == {"server": server.url, "token": server.tokens["tesla-viewer"]}
    assert ok(invoke("ledger", "head")).stdout == ok(local(server, "ledger", "head")).stdout
    # precedence: flag > environment > stored login
    monkeypatch.setenv("GPUFLEET_TOKEN", server.tokens["expired"])
    refused(invoke("ledger", "head"), 3, "unknown, expired or revoked", "$GPUFLEET_TOKEN")
    ok(invoke("--token", server.tokens["tesla-viewer"], "ledger", "head"))
    monkeypatch.delenv("GPUFLEET_TOKEN")
    monkeypatch.setenv("GPUFLEET_URL", f"http://127.0.0.1:{free_port()}")
    refused(invoke("ledger", "head"), 3, "no token for")  # the stored token is for another server
    ok(invoke("--server", server.url, "ledger", "head"))
    monkeypatch.delenv("GPUFLEET_URL")
    assert "logged out" in ok(invoke("logout")).stdout and not stored.exists()

