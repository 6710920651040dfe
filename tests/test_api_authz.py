"""The authorization matrix (issue 13): every route of the real app x every principal, on SQLite and PostgreSQL.

The world is ``tests/api_world.py``'s: a principal ``E-R`` of every access role R in Tesla, X and xAI,
approvers, ``tesla-bot`` (Tesla's service account), special tokens, and ``proposal:p1`` (Tesla lends to
xAI). Each row names the principal's relation to the data the request touches, which is always
Tesla's: ``own`` (a Tesla principal), ``party`` (xAI, the counterparty of the related-party
transaction) or ``other`` (X). Every write row first records what the write needs (a lot to ship, a loan
to close...), so a refused write is refused by the access rules and not by the fleet's invariants. An
allowed write answers 2xx with the authenticated principal as the event's actor; a refused one leaves
the ledger's head as it was. ``test_every_route_has_rows`` fails when a route has no row.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

import postgres_server
from api_world import ENTITIES, EXAMPLE, ON, ROLES, World, build_world
from gpufleet.api.app import create_app
from gpufleet.api.settings import ServiceSettings
from gpufleet.domain import vote_signing
from gpufleet.domain.governance import GovernancePolicy
from gpufleet.domain.notes import generate_key, signature_line
from gpufleet.services import checkpoints, identity
from gpufleet.services.fleet import FleetService, make_payload

QUOTAS = EXAMPLE.parent / "quotas.yaml"
RELATION = {"tesla": "own", "xai": "party", "x": "other"}
PEOPLE = [f"{e}-{r}" for e in ENTITIES for r in ROLES] + ["tesla-indep", "xai-indep", "tesla-bot"]
UNAUTHENTICATED = ("revoked", "expired", "anonymous")
EVERYONE = PEOPLE + ["read_only", *UNAUTHENTICATED]
ACTS_AS = {"read_only": "tesla-operator"}  # the principal behind a special token

TESLA = {f"tesla-{r}" for r in ROLES} | {"tesla-bot", "read_only"}  # everything that reads Tesla's data
XAI = {f"xai-{r}" for r in ROLES}
AUDITORS = {f"{e}-auditor" for e in ENTITIES}
ADMINS = {f"{e}-admin" for e in ENTITIES}
AUTHENTICATED = set(PEOPLE) | {"read_only"}
OPERATORS = {"tesla-operator", "tesla-bot"}  # record for Tesla
P1_SEERS = TESLA | XAI | AUDITORS | {"tesla-indep", "xai-indep"}  # the parties, auditors and the giver's approvers
# jobs that only read (a simulation, an export) are not writes: a read-only token may run them
SIMULATORS = {f"{e}-{r}" for e in ENTITIES for r in ("operator", "planner")} | {"tesla-bot", "read_only"}
FEE = GovernancePolicy().market_price(ON).usd_per_gpu_hour
LOG_KEY = generate_key("gpufleet.example/authz")  # the server's checkpoint key (checkpoint_key_file)


def label(who: str) -> str:
    entity, _, role = who.partition("-")
    return f"{who}({RELATION[entity]})" if role in ROLES or role == "bot" else who


class Ctx:
    """The app under test on one backend, and the setup writes rows need (recorded by ``test-setup``)."""

    def __init__(self, client: TestClient, world: World, fleet: FleetService, job_id: str):
        self.client, self.world, self.fleet, self.job_id = client, world, fleet, job_id
        self.ids = itertools.count(1)

    def uid(self, prefix: str) -> str:
        return f"{prefix}-{next(self.ids)}"

    def setup(self, *items: tuple[str, dict]) -> None:
        self.fleet.record_many([(make_payload(t, d), ON, None) for t, d in items], actor="test-setup")

    def headers(self, who: str) -> dict[str, str]:
        return {} if who == "anonymous" else self.world.headers(who)

    def head(self) -> tuple[int, str]:
        h = self.fleet.head()
        return h.seq, h.hash

    # things a row's request acts on, made fresh for each row
    def person(self, grant: str | None = None) -> str:
        person = self.uid("spare")
        self.setup(("person_registered", {"person": person, "name": person}),
                   *([("access_granted", {"principal": person, "entity": "tesla", "role": grant})] if grant else []))
        return person

    def lot(self, owner: str, *then: str) -> str:
        lot = self.uid(f"{owner}-lot")
        self.setup(("purchase_order_placed", {"po": self.uid("po"), "buyer": owner, "vendor": "nvidia", "model": "h100",
                                              "unit_price_usd": 30000.0, "lots": [
                                                  {"lot": lot, "gpus": 1, "planned_date": ON + timedelta(days=30)}]}),
                   *[(t, {"lot": lot}) for t in then])
        return lot

    def loan(self) -> str:
        loan = self.uid("loan")
        self.setup(("loan_opened", _loan(loan)))
        return loan

    def step(self) -> str:
        step = self.uid("step")
        self.setup(("site_capacity_added", {"site": "tesla-dc", "capacity": {
            "step": step, "online_date": ON + timedelta(days=30), "slots": 10, "mw": 1.0}}))
        return step

    def swap(self) -> dict:
        """One GPU of Tesla's for one of X's: under the threshold (the app's policy does not make every lot
        redirect need approval, since a swap cannot be voted on before it is recorded)."""
        return {"swap": self.uid("swap"), "lots_a": [self.lot("tesla")], "lots_b": [self.lot("x")], "reason": "a test"}


def _loan(loan: str) -> dict:
    return {"loan": loan, "lender": "tesla", "borrower": "xai", "model": "h100", "site": "tesla-dc", "gpus": 1,
            "end_date": (ON + timedelta(days=2)).isoformat(), "fee_usd_per_gpu_hour": FEE}


def _key_registration(person: str) -> dict:
    """A vote-signing key of ``person`` (who holds a role in Tesla), with its proof of possession."""
    key = generate_key(person)
    message = vote_signing.registration_message(person, "tesla", key.vkey.text)
    return {"person": person, "entity": "tesla", "public_key": key.vkey.text,
            "proof": vote_signing.b64(key.sign(message))}


def _key_revocation(c: Ctx) -> dict:
    registered = _key_registration(c.person("viewer"))
    c.setup(("person_key_registered", registered))
    return {"person": registered["person"], "key_id": registered["public_key"].split("+")[1], "reason": "lost"}


GPUS = {"owner": "tesla", "model": "h100", "gpus": 1}
LATER = (ON + timedelta(days=30)).isoformat()
# event type -> (who may record it for Tesla, the payload: made by the context, with what it needs recorded)
RECORDS: dict[str, tuple[set[str], Callable[[Ctx], dict]]] = {
    "entity_registered": ({"tesla-admin"}, lambda c: {"entity": c.uid("sub"), "name": "a subsidiary",
                                                      "parent": "tesla"}),
    "person_registered": (ADMINS, lambda c: {"person": c.uid("person"), "name": "a person"}),  # of no entity
    "role_assigned": ({"tesla-admin"}, lambda c: {"person": c.person(), "entity": "tesla", "role": "director"}),
    "service_account_registered": ({"tesla-admin"}, lambda c: {"account": c.uid("bot"), "entity": "tesla",
                                                               "name": "a bot"}),
    "access_granted": ({"tesla-admin"}, lambda c: {"principal": c.person(), "entity": "tesla", "role": "viewer"}),
    "access_revoked": ({"tesla-admin"}, lambda c: {"principal": c.person("viewer"), "entity": "tesla",
                                                   "role": "viewer", "reason": "left"}),
    "person_key_registered": ({"tesla-admin"}, lambda c: _key_registration(c.person("viewer"))),
    "person_key_revoked": ({"tesla-admin"}, lambda c: _key_revocation(c)),
    "gpu_model_registered": ({f"{e}-operator" for e in ENTITIES} | {"tesla-bot"},  # of no entity
                             lambda c: {"model": c.uid("gpu"), "name": "a GPU", "watts": 700.0, "memory_gb": 80.0}),
    "site_registered": (OPERATORS, lambda c: {"site": c.uid("site"), "name": "a site", "owner": "tesla", "pue": 1.2,
                                              "capacity": [{"step": "s1", "online_date": LATER, "slots": 10,
                                                            "mw": 1.0}]}),
    "site_capacity_added": (OPERATORS, lambda c: {"site": "tesla-dc", "capacity": {
        "step": c.uid("step"), "online_date": LATER, "slots": 10, "mw": 1.0}}),
    "site_capacity_slipped": (OPERATORS, lambda c: {"site": "tesla-dc", "step": c.step(), "reason": "late",
                                                    "online_date": (ON + timedelta(days=60)).isoformat()}),
    "purchase_order_placed": (OPERATORS, lambda c: {"po": c.uid("po"), "buyer": "tesla", "vendor": "nvidia",
                                                    "model": "h100", "unit_price_usd": 30000.0, "lots": [
                                                        {"lot": c.uid("lot"), "gpus": 1, "planned_date": LATER}]}),
    "lot_rescheduled": (OPERATORS, lambda c: {"lot": c.lot("tesla"), "reason": "late",
                                              "planned_date": (ON + timedelta(days=45)).isoformat()}),
    "lot_shipped": (OPERATORS, lambda c: {"lot": c.lot("tesla")}),
    "lot_delivered": (OPERATORS, lambda c: {"lot": c.lot("tesla", "lot_shipped")}),
    "delivery_slot_swap": (OPERATORS, lambda c: c.swap()),
    "opening_balance": (OPERATORS, lambda c: GPUS | {"unit_price_usd": 30000.0}),
    "gpus_installed": (OPERATORS, lambda c: (c.setup(("gpus_uninstalled", GPUS | {"site": "tesla-dc"})),
                                             GPUS | {"site": "tesla-dc"})[1]),
    "gpus_uninstalled": (OPERATORS, lambda c: GPUS | {"site": "tesla-dc"}),
    "gpus_failed": (OPERATORS, lambda c: GPUS | {"site": "tesla-dc"}),
    "gpus_repaired": (OPERATORS, lambda c: (c.setup(("gpus_failed", GPUS | {"site": "tesla-dc"})), GPUS)[1]),
    "gpus_retired": (OPERATORS, lambda c: GPUS | {"site": "tesla-dc"}),
    "loan_opened": (OPERATORS, lambda c: _loan(c.uid("loan"))),
    "loan_reclaimed": (OPERATORS, lambda c: {"loan": c.loan(), "gpus": 1, "notice_given_on": ON.isoformat()}),
    "loan_closed": (OPERATORS | {"xai-operator"}, lambda c: {"loan": c.loan()}),  # lender or borrower
    "demand_recorded": ({"tesla-planner"}, lambda c: {"demand": c.uid("demand"), "entity": "tesla", "gpus": 1,
                                                      "start": LATER, "end": (ON + timedelta(days=60)).isoformat(),
                                                      "value_usd_per_gpu_hour": 5.0}),
    "loan_proposed": ({"tesla-planner"}, lambda c: _loan(c.uid("prop")) | {
        "start": (ON + timedelta(days=1)).isoformat(), "plan": "test", "reason": "a test"}),
    "install_planned": ({"tesla-planner"}, lambda c: GPUS | {"site": "tesla-dc", "planned_date": LATER,
                                                              "plan": "test"}),
    "claim_recorded": (OPERATORS, lambda c: {"claim": c.uid("claim"), "claimant": "tesla", "metric": "active_gpus",
                                             "model": "h100", "target": 1.0,
                                             "deadline": (ON + timedelta(days=365)).isoformat()}),
}
SCENARIO = """gpufleet: 1
name: api-load
start: {on}
sites:
  - site: {site}
    name: a site loaded over the API
    owner: tesla
    capacity:
      - {{step: s1, online_date: {on}, slots: 10, mw: 1}}
"""


@dataclass(frozen=True)
class Request:
    url: str
    json: Any = None
    content: str | None = None
    headers: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """One route (``route`` as the app declares it) as requested by a row; who gets what."""

    name: str
    method: str
    route: str
    request: Callable[[Ctx], Request]
    allowed: set[str]
    ok: int = 200
    denied: int = 403
    public: bool = False
    writes_ledger: bool = False
    sees: Callable[[Any], bool] | None = None  # a filtered read: 200 for everyone, ``sees`` only for ``allowed``
    special: dict[str, tuple[int, str]] = field(default_factory=dict)  # who -> (status, a word of the detail)

    def expect(self, who: str) -> tuple[int, str | None]:
        if self.public:
            return self.ok, None
        if who in UNAUTHENTICATED:
            return 401, None
        if who in self.special:
            return self.special[who]
        if self.sees is not None or who in self.allowed:
            return self.ok, None
        return self.denied, None


def get(url: str) -> Callable[[Ctx], Request]:
    return lambda c: Request(url)


def _record_case(event_type: str) -> Case:
    allowed, make = RECORDS[event_type]
    return Case(event_type, "POST", f"/v1/events/{event_type}",
                lambda c: Request(f"/v1/events/{event_type}", json=make(c)), allowed, 201,
                writes_ledger=True)


def _vote_case() -> Case:
    """Only tesla-indep counts; the interested one is told why; who cannot see p1 does not learn it exists."""
    special = {who: (403, "admin") for who in ADMINS} | {"tesla-bot": (403, "person"), "read_only": (403, "read-only"),
                                                         "xai-indep": (409, "interested in proposal:p1")}
    special |= {who: (409, "not an independent director") for who in P1_SEERS - set(special) - {"tesla-indep"}}
    special |= {who: (404, "no transaction") for who in AUTHENTICATED - set(special) - {"tesla-indep"}}

    def request(c: Ctx) -> Request:
        etag = c.client.get("/v1/approvals/proposal:p1", headers=c.headers("tesla-auditor")).headers["ETag"]
        return Request("/v1/approvals/proposal:p1/votes", json={"decision": "approved", "reason": "fair"},
                       headers={"If-Match": etag})

    return Case("vote", "POST", "/v1/approvals/{subject}/votes", request, {"tesla-indep"}, 201, special=special,
                writes_ledger=True)


def _plan(c: Ctx) -> dict:
    """A plan as a plan job gives it, with one loan from Tesla to xAI (made unique by its policy name)."""
    loan = _loan("unused")
    return {"policy": c.uid("owner-first"), "start": ON.isoformat(), "installs": [], "loans": [
        {k: loan[k] for k in ("lender", "borrower", "model", "site", "gpus", "fee_usd_per_gpu_hour")}
        | {"start": (ON + timedelta(days=7)).isoformat(), "end": (ON + timedelta(days=30)).isoformat()}]}


def _token_of(c: Ctx, who: str) -> str:
    return identity.create_token(c.fleet, who, scope="read", days=1).token_id


def _tesla_dc(c: Ctx) -> int:
    """The seq of the event that registered Tesla's site tesla-dc."""
    return next(e.seq for e in c.fleet.events(types=["site_registered"]) if '"site":"tesla-dc"' in e.payload)


def _event_about(body: dict, event_type: str, key: str, value: str) -> bool:
    return any(e["event_type"] == event_type and e["payload"].get(key) == value for e in body["events"])


def _checkpoint(c: Ctx) -> int:
    """A checkpoint recorded at the head now (by the custodian, with the server's key); its size."""
    return checkpoints.create_checkpoint(c.fleet, LOG_KEY).checkpoint.tree_size


def _disclosed(bundle: dict, event_type: str, key: str, value: str) -> bool:
    """Whether a disclosure bundle proves the event of ``event_type`` whose payload's ``key`` is ``value``."""
    return any(e["event"]["type"] == event_type and e["event"]["payload"].get(key) == value for e in bundle["events"])


def _cosignature(c: Ctx) -> Request:
    """A fresh cosigner's signature line on a checkpoint, with its verifier key."""
    recorded = checkpoints.create_checkpoint(c.fleet, LOG_KEY)
    cosigner = generate_key(c.uid("cosigner"))
    line = signature_line(recorded.checkpoint.body, cosigner)
    return Request(f"/v1/checkpoints/{recorded.checkpoint.tree_size}/signatures",
                   json={"signature": line, "vkey": cosigner.vkey.text})


CASES: list[Case] = [
    Case("healthz", "GET", "/healthz", get("/healthz"), set(), public=True),
    Case("readyz", "GET", "/readyz", get("/readyz"), set(), public=True),
    Case("openapi", "GET", "/openapi.json", get("/openapi.json"), set(), public=True),
    Case("docs", "GET", "/docs", get("/docs"), set(), public=True),
    Case("docs-redirect", "GET", "/docs/oauth2-redirect", get("/docs/oauth2-redirect"), set(), public=True),
    Case("redoc", "GET", "/redoc", get("/redoc"), set(), public=True),
    Case("me", "GET", "/v1/me", get("/v1/me"), AUTHENTICATED),
    Case("ledger-head", "GET", "/v1/ledger/head", get("/v1/ledger/head"), AUTHENTICATED),
    Case("tree", "GET", "/v1/tree", get("/v1/tree"), AUTHENTICATED),  # hashes only: any principal
    Case("consistency", "GET", "/v1/proofs/consistency", get("/v1/proofs/consistency?old=1"), AUTHENTICATED),
    Case("inclusion", "GET", "/v1/proofs/inclusion/{seq}", lambda c: Request(f"/v1/proofs/inclusion/{_tesla_dc(c)}"),
         TESLA | AUDITORS, sees=lambda body: body["event"] is not None),  # the event as GET /v1/events shows it
    Case("status", "GET", "/v1/status", get("/v1/status?entity=tesla"), TESLA | AUDITORS),
    Case("events", "GET", "/v1/events", get("/v1/events?limit=1000"), TESLA | AUDITORS,
         sees=lambda body: _event_about(body, "site_registered", "site", "tesla-dc")),
    Case("events-of-p1", "GET", "/v1/events", get("/v1/events?limit=1000&type=loan_proposed"), TESLA | XAI | AUDITORS,
         sees=lambda body: _event_about(body, "loan_proposed", "loan", "p1")),
    Case("approvals", "GET", "/v1/approvals", get("/v1/approvals"), P1_SEERS,
         sees=lambda body: "proposal:p1" in {row["subject"] for row in body}),
    Case("approval", "GET", "/v1/approvals/{subject}", get("/v1/approvals/proposal:p1"), P1_SEERS, denied=404),
    _vote_case(),
    Case("audit", "GET", "/v1/audit", get("/v1/audit"), AUDITORS),
    Case("costs", "GET", "/v1/costs", get("/v1/costs?entity=tesla&month=2024-06"), {"tesla-finance"} | AUDITORS),
    Case("claims", "GET", "/v1/claims", get("/v1/claims"), TESLA | AUDITORS,
         sees=lambda body: "tesla-85k-h100-2024" in {row["claim"] for row in body}),
    Case("plans", "POST", "/v1/plans", lambda c: Request("/v1/plans", json={"horizon_weeks": 1, "time_limit_s": 30}),
         {f"{e}-planner" for e in ENTITIES}, 202),
    Case("apply", "POST", "/v1/plans/apply", lambda c: Request("/v1/plans/apply", json=_plan(c)), {"tesla-planner"},
         201, writes_ledger=True),
    Case("reports", "POST", "/v1/reports", lambda c: Request("/v1/reports", json={}), AUDITORS, 202),
    Case("simulations", "POST", "/v1/simulations", lambda c: Request("/v1/simulations", json={
        "trace": "small.csv", "cluster": "2x8:A100", "policy": "static"}), SIMULATORS, 202),
    Case("exports", "POST", "/v1/exports", lambda c: Request("/v1/exports", json={
        "engine": "slurm", "cluster": "16x8:A100,2x8:H100", "quotas": "quotas.yaml"}), SIMULATORS),
    Case("verify", "POST", "/v1/ledger/verify", lambda c: Request("/v1/ledger/verify", json={}), AUDITORS, 202),
    Case("checkpoints", "GET", "/v1/checkpoints", get("/v1/checkpoints"), AUTHENTICATED),
    Case("checkpoint-latest", "GET", "/v1/checkpoints/latest",
         lambda c: (_checkpoint(c), Request("/v1/checkpoints/latest"))[1], AUTHENTICATED),
    Case("checkpoint", "GET", "/v1/checkpoints/{size}", lambda c: Request(f"/v1/checkpoints/{_checkpoint(c)}"),
         AUTHENTICATED),
    Case("create-checkpoint", "POST", "/v1/checkpoints", lambda c: Request("/v1/checkpoints"),
         AUDITORS | ADMINS, 201),
    Case("cosign-checkpoint", "POST", "/v1/checkpoints/{size}/signatures", _cosignature, AUDITORS, 201),
    Case("disclosures", "GET", "/v1/disclosures", lambda c: (_checkpoint(c), Request("/v1/disclosures?kind=loans"))[1],
         TESLA | XAI | AUDITORS, sees=lambda body: _disclosed(body, "loan_proposed", "loan", "p1")),
    Case("job-result", "GET", "/v1/jobs/{job_id}/result", lambda c: Request(f"/v1/jobs/{c.job_id}/result"),
         {"tesla-planner"}, denied=404),
    Case("jobs", "GET", "/v1/jobs", get("/v1/jobs"), AUTHENTICATED),
    Case("job", "GET", "/v1/jobs/{job_id}", lambda c: Request(f"/v1/jobs/{c.job_id}"), {"tesla-planner"},
         denied=404),
    Case("add-user", "POST", "/v1/users", lambda c: Request("/v1/users", json={"principal": c.person("viewer")}),
         {"tesla-admin"}, 201),
    Case("users", "GET", "/v1/users", get("/v1/users"), ADMINS | AUDITORS),
    Case("own-token", "POST", "/v1/tokens", lambda c: Request("/v1/tokens", json={"scope": "read", "days": 1}),
         AUTHENTICATED - {"read_only"}, 201),
    Case("token-for-tesla-viewer", "POST", "/v1/tokens",  # not its admin's: it could act and vote as the person
         lambda c: Request("/v1/tokens", json={"principal": "tesla-viewer", "days": 1}), {"tesla-viewer"}, 201),
    Case("token-for-tesla-bot", "POST", "/v1/tokens",
         lambda c: Request("/v1/tokens", json={"principal": "tesla-bot", "days": 1}), {"tesla-admin", "tesla-bot"},
         201),
    Case("tokens-of-tesla-viewer", "GET", "/v1/tokens", get("/v1/tokens?principal=tesla-viewer"),
         {"tesla-admin", "tesla-viewer"}),
    Case("revoke-tesla-viewer-token", "DELETE", "/v1/tokens/{token_id}",
         lambda c: Request(f"/v1/tokens/{_token_of(c, 'tesla-viewer')}"), {"tesla-admin", "tesla-viewer"}),
    Case("access", "GET", "/v1/access", get("/v1/access?entity=tesla"), {"tesla-admin", "tesla-operator", "read_only"}
         | AUDITORS, sees=lambda body: {"principal": "tesla-operator", "entity": "tesla", "role": "operator"} in body),
    Case("scenario", "POST", "/v1/scenario", lambda c: Request(
        "/v1/scenario", content=SCENARIO.format(on=ON.isoformat(), site=c.uid("loaded")),
        headers={"Content-Type": "application/yaml"}), OPERATORS, 201, writes_ledger=True),
    *[_record_case(t) for t in RECORDS],
]
BY_NAME = {case.name: case for case in CASES}
assert len(BY_NAME) == len(CASES), "case names are unique"
ROWS = [pytest.param(case.name, who, id=f"{case.name}/{label(who)}") for case in CASES for who in EVERYONE]


def route_table(app) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, through included routers too."""
    found: set[tuple[str, str]] = set()

    def walk(routes) -> None:
        for route in routes:
            if hasattr(route, "effective_route_contexts"):  # FastAPI's included router
                walk(route.effective_route_contexts())
            elif getattr(route, "path", None) is not None:
                for method in sorted(getattr(route, "methods", None) or {"GET"}):
                    if method != "HEAD":
                        found.add((method, route.path))

    walk(app.routes)
    return found


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ctx(request, tmp_path_factory):
    """One world per backend for the module, behind one TestClient."""
    pg = request.getfixturevalue("pg_server") if request.param == "postgres" else None
    name = f"authz_{os.getpid()}"
    url = (postgres_server.create_database(pg.url, name) if pg
           else f"sqlite:///{tmp_path_factory.mktemp('authz') / 'ledger.db'}")
    try:
        world = build_world(url)
        fleet = FleetService.open(url)
        policy = tmp_path_factory.mktemp("policy") / "policy.yaml"
        policy.write_text("always_approve_lot_redirects: false\n")
        traces = tmp_path_factory.mktemp("traces")
        (traces / "small.csv").write_text("timestamp,duration,num_gpus,gpu_time,cluster\n" + "".join(
            f"2017-10-01 00:0{i}:00,600,{1 + i % 2},{600 * (1 + i % 2)},vc{1 + i % 2}\n" for i in range(5)))
        shutil.copy(QUOTAS, traces / "quotas.yaml")
        key_file = tmp_path_factory.mktemp("keys") / "log.key"
        key_file.write_text(LOG_KEY.text + "\n")
        key_file.chmod(0o600)
        settings = ServiceSettings(db=url, job_workers=1, policy=policy, traces_dir=traces,
                                   checkpoint_key_file=key_file)
        with TestClient(create_app(settings)) as client:
            yield Ctx(client, world, fleet, _finished_plan(client, world))
        fleet.engine.dispose()
    finally:
        if pg:
            postgres_server.drop_database(pg.url, name)


def _finished_plan(client: TestClient, world: World) -> str:
    """tesla-planner's plan job, once it has succeeded (its result is one row's)."""
    headers = world.headers("tesla-planner")
    job = client.post("/v1/plans", json={"horizon_weeks": 1, "time_limit_s": 30}, headers=headers).json()["job_id"]
    deadline = time.monotonic() + 300  # a guard against a hung job, not a measurement
    while (state := client.get(f"/v1/jobs/{job}", headers=headers).json()["state"]) in ("queued", "running"):
        assert time.monotonic() < deadline, "the plan job did not finish"
        time.sleep(0.1)
    assert state == "succeeded"
    return job


def test_every_route_has_rows():
    """A route added to the app without rows in this table fails here."""
    app = create_app(ServiceSettings(db="sqlite:///unused.db"))
    served = route_table(app)
    covered = {(case.method, case.route) for case in CASES}
    assert served - covered == set(), "routes without rows in the authorization matrix"
    assert covered - served == set(), "rows for routes the app does not serve"


@pytest.mark.parametrize("case_name, who", ROWS)
def test_matrix(ctx: Ctx, case_name: str, who: str):
    case = BY_NAME[case_name]
    req = case.request(ctx)
    before = ctx.head()
    answer = ctx.client.request(case.method, req.url, json=req.json, content=req.content,
                                headers={**req.headers, **ctx.headers(who)})
    status, word = case.expect(who)
    assert answer.status_code == status, f"{case.method} {req.url} as {who}: {answer.text[:300]}"
    if status >= 400:
        assert answer.headers["content-type"] == "application/problem+json"
        if word:
            assert word in answer.json()["detail"], answer.json()["detail"]
        if case.writes_ledger:
            assert ctx.head() == before, f"a refused write changed the ledger: {answer.text[:300]}"
        return
    if case.sees is not None:
        assert case.sees(answer.json()) == (who in case.allowed), f"{who} sees {case.name}: {answer.text[:300]}"
    if case.writes_ledger:
        actor = ACTS_AS.get(who, who)
        body = answer.json()
        if "first_seq" in body:  # a scenario: its events are in the ledger
            actors = [e.actor for e in ctx.fleet.events(body["first_seq"] - 1, body["last_seq"])]
        else:
            actors = [e["actor"] for e in body.get("events", [body])]
        assert actors and actors == [actor] * len(actors)
        assert ctx.head()[0] == before[0] + len(actors)


def _pages(ctx: Ctx, who: str) -> list[dict]:
    found, since = [], 0
    while since is not None:
        page = ctx.client.get(f"/v1/events?since_seq={since}&limit=1000", headers=ctx.headers(who))
        assert page.status_code == 200, page.text
        found += page.json()["events"]
        since = page.json()["next_since_seq"]
    return found


def _entities_named(state, payload: dict) -> set[str]:
    """The entities a payload names, directly or through a site, lot, loan, proposal, swap or vote-signing key
    (its ID: the entity that registered it) of the ledger (worked out here from the payload's values, not by the
    service's rule)."""
    owners = {**{k: {s.owner} for k, s in state.sites.items()}, **{k: {lot.owner} for k, lot in state.lots.items()},
              **{k: {loan.lender, loan.borrower} for k, loan in state.loans.items()},
              **{k.partition(":")[2]: {p.owner, p.user} for k, p in state.proposals.items()},
              **{k: {s.party_a, s.party_b} for k, s in state.swaps.items()},
              **{key.key_id: {key.entity} for key in state.person_keys.values()}}
    found: set[str] = set()
    values = [v for v in payload.values() if isinstance(v, str)] + [
        x for v in payload.values() if isinstance(v, list) for x in v if isinstance(x, str)]
    for value in values:
        name = value.partition(":")[2] if value.partition(":")[0] in ("loan", "proposal", "swap") else value
        found |= ({value} & set(state.entities)) | owners.get(name, set())
    return found


@pytest.mark.parametrize("who, entity", [("tesla-viewer", "tesla"), ("x-operator", "x"), ("xai-finance", "xai")])
def test_events_a_principal_lists_concern_its_entity(ctx: Ctx, who: str, entity: str):
    """The events listed are exactly those that name the principal's entity; the auditor's listing is the
    whole ledger."""
    state = ctx.fleet.state()
    everything = _pages(ctx, "x-auditor")
    assert [e["seq"] for e in everything] == list(range(1, ctx.head()[0] + 1))
    mine = _pages(ctx, who)
    for e in mine:
        assert entity in _entities_named(state, e["payload"]), e
    hidden = [e for e in everything if entity not in _entities_named(state, e["payload"])]
    assert hidden and not {e["seq"] for e in hidden} & {e["seq"] for e in mine}
    assert {e["seq"] for e in mine} == {e["seq"] for e in everything} - {e["seq"] for e in hidden}


@pytest.mark.parametrize("auditor", sorted(AUDITORS))
def test_an_auditor_reads_every_entity_and_writes_nothing(ctx: Ctx, auditor: str):
    for entity in ENTITIES:
        answer = ctx.client.get(f"/v1/status?entity={entity}", headers=ctx.headers(auditor))
        assert answer.status_code == 200 and answer.json()["entity"] == entity
        before = ctx.head()
        refused = ctx.client.post("/v1/events/gpus_failed", headers=ctx.headers(auditor), json={
            "owner": entity, "model": "h100", "gpus": 1, "site": {"tesla": "tesla-dc", "x": "x-cluster",
                                                                  "xai": "colossus"}[entity]})
        assert refused.status_code == 403 and ctx.head() == before
