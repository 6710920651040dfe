"""A ledger with principals of every role in every entity, and their tokens; a live server to call.

The world is the bundled example (Tesla, X, xAI under one controlling shareholder; the December 2023
swap) plus, for each entity E and access role R, a person ``E-R`` holding R in E with an API token
(write scope). Also: ``tesla-indep``, an independent director of Tesla with no access role;
``xai-indep``, an independent director of Tesla who is a director of xAI (interested in any Tesla ->
xAI transaction); ``tesla-bot``, a service account of Tesla with the operator role; and the tokens
``read_only`` (tesla-operator, read scope), ``revoked`` and ``expired``. A loan proposal
``proposal:p1`` from Tesla to xAI awaits approval.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import httpx
from sqlalchemy import update

from gpufleet.domain.governance import GovernancePolicy
from gpufleet.ledger.schema import api_tokens
from gpufleet.services import identity
from gpufleet.services.fleet import FleetService, load_scenario, make_payload

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "h100-2024.yaml"
ENTITIES = ("tesla", "x", "xai")
ROLES = ("viewer", "operator", "planner", "finance", "auditor", "admin")
ON = date.today()  # proposals are judged on the day they are voted on: today


@dataclass
class World:
    db: str
    tokens: dict[str, str] = field(default_factory=dict)  # principal (or a special name) -> bearer token

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


def build_world(db: str) -> World:
    """Load the example into ``db`` (a path or URL) and add the principals above."""
    load_scenario(db, EXAMPLE)
    fleet = FleetService.open(db)
    world = World(db)
    items = []
    for entity in ENTITIES:
        for role in ROLES:
            person = f"{entity}-{role}"
            items.append(("person_registered", {"person": person, "name": person}))
            items.append(("access_granted", {"principal": person, "entity": entity, "role": role}))
    items += [
        ("person_registered", {"person": "tesla-indep", "name": "Tesla independent director"}),
        ("role_assigned", {"person": "tesla-indep", "entity": "tesla", "role": "independent_director"}),
        ("person_registered", {"person": "xai-indep", "name": "Tesla director who sits on xAI's board"}),
        ("role_assigned", {"person": "xai-indep", "entity": "tesla", "role": "independent_director"}),
        ("role_assigned", {"person": "xai-indep", "entity": "xai", "role": "director"}),
        ("service_account_registered", {"account": "tesla-bot", "entity": "tesla", "name": "Tesla's cluster agent"}),
        ("access_granted", {"principal": "tesla-bot", "entity": "tesla", "role": "operator"}),
    ]
    fee = GovernancePolicy().market_price(ON).usd_per_gpu_hour
    items.append(("loan_proposed", {"loan": "p1", "lender": "tesla", "borrower": "xai", "model": "h100",
                                    "site": _a_site(fleet, "tesla"), "gpus": 100, "start": (ON + timedelta(days=7)).isoformat(),
                                    "end_date": (ON + timedelta(days=90)).isoformat(), "fee_usd_per_gpu_hour": fee, "plan": "test",
                                    "reason": "a test proposal"}))
    fleet.record_many([(make_payload(t, d), ON, None) for t, d in items], actor="test-setup")
    for principal in [f"{e}-{r}" for e in ENTITIES for r in ROLES] + ["tesla-indep", "xai-indep", "tesla-bot"]:
        identity.add_user(fleet, principal)
        world.tokens[principal] = identity.create_token(fleet, principal, scope="write", name="test").token
    world.tokens["read_only"] = identity.create_token(fleet, "tesla-operator", scope="read").token
    revoked = identity.create_token(fleet, "tesla-operator", scope="write")
    identity.revoke_token(fleet, revoked.token_id)
    world.tokens["revoked"] = revoked.token
    expired = identity.create_token(fleet, "tesla-operator", scope="write")
    with fleet.engine.begin() as conn:
        conn.execute(update(api_tokens).where(api_tokens.c.token_id == expired.token_id)
                     .values(expires_at="2000-01-01T00:00:00.000000Z"))
    world.tokens["expired"] = expired.token
    fleet.engine.dispose()
    return world


def _a_site(fleet: FleetService, owner: str) -> str:
    state = fleet.state()
    return next(name for name, site in sorted(state.sites.items()) if site.owner == owner)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``gpufleet serve`` in a subprocess, on a free port; ``stop()`` or ``kill()`` it."""

    def __init__(self, db: str, workers: int = 1, env: dict[str, str] | None = None):
        self.db, self.workers, self.port = db, workers, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> LiveServer:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gpufleet", "--db", self.db, "serve", "--port", str(self.port),
             "--workers", str(self.workers)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, env=self.env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("the server did not become ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """kill -9 the server and its workers, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(20)
