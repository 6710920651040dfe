"""The service's own behaviour: settings, start-up checks, health, request ids and logs, body limits,
idempotent writes, the actor of an event, access roles as ledger events."""

from __future__ import annotations

import json
import logging
from datetime import date

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import text

from api_world import ON, build_world
from cli_runner import invoke
from gpufleet.api import ServiceSettings, create_app
from gpufleet.errors import NotInitialized
from gpufleet.ledger import db
from gpufleet.services.fleet import FleetService


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(str(tmp_path_factory.mktemp("service") / "fleet.db"))


@pytest.fixture(scope="module")
def client(world):
    with TestClient(create_app(ServiceSettings(db=world.db, max_body_bytes=4096))) as c:
        yield c


@pytest.mark.parametrize(("given", "field"), [
    ({"port": 0}, "port"),
    ({"workers": 0}, "workers"),
    ({"max_body_bytes": 10}, "max_body_bytes"),
    ({"oidc_issuer": "https://id.example"}, "oidc"),
    ({"no_such_setting": 1}, "no_such_setting"),
], ids=["port-0", "no-workers", "tiny-body-limit", "oidc-half-configured", "unknown-setting"])
def test_bad_settings_are_refused_naming_them(given, field):
    with pytest.raises(ValidationError, match=field):
        ServiceSettings(**given)


def test_settings_come_from_flags_then_environment_then_a_file(tmp_path, monkeypatch):
    config = tmp_path / "gpufleet.toml"
    config.write_text('port = 7000\nworkers = 3\nhost = "0.0.0.0"\n')
    monkeypatch.setenv("GPUFLEET_CONFIG", str(config))
    monkeypatch.setenv("GPUFLEET_WORKERS", "5")
    settings = ServiceSettings(host="127.0.0.2")
    assert (settings.port, settings.workers, settings.host) == (7000, 5, "127.0.0.2")


def test_creating_the_app_opens_nothing(tmp_path):
    app = create_app(ServiceSettings(db=str(tmp_path / "absent.db")))
    assert app.openapi()["info"]["title"] == "gpufleet"
    assert not (tmp_path / "absent.db").exists()


def test_the_server_refuses_a_database_whose_migrations_are_behind(tmp_path):
    path = tmp_path / "old.db"
    engine = db.make_engine(str(path))
    db.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0002'"))
    engine.dispose()
    with pytest.raises(NotInitialized, match="gpufleet db upgrade"):
        with TestClient(create_app(ServiceSettings(db=str(path)))):
            pass
    result = invoke("serve", "--port", "1", db=path)
    assert result.code == 4 and "gpufleet db upgrade" in result.stderr


def test_health_and_readiness(client, world):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    head = FleetService.open(world.db).head()
    assert (ready["status"], ready["schema"], ready["head_seq"]) == ("ready", db.HEAD_REVISION, head.seq)


def test_readiness_fails_when_the_schema_falls_behind(tmp_path):
    world = build_world(str(tmp_path / "fleet.db"))
    with TestClient(create_app(ServiceSettings(db=world.db))) as c:
        engine = db.make_engine(world.db)
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0002'"))
        engine.dispose()
        answer = c.get("/readyz")
    assert answer.status_code == 503 and answer.headers["content-type"] == "application/problem+json"
    assert "0002" in answer.json()["detail"]


def test_every_answer_carries_a_request_id_and_is_logged_with_it(client, world, caplog):
    with caplog.at_level(logging.INFO, logger="gpufleet.api"):
        mine = client.get("/v1/me", headers=world.headers("tesla-viewer") | {"X-Request-ID": "abc-123"})
        fresh = client.get("/v1/me", headers=world.headers("tesla-viewer"))
        odd = client.get("/healthz", headers={"X-Request-ID": "not ok; <script>"})
    assert mine.headers["x-request-id"] == "abc-123"
    assert len(fresh.headers["x-request-id"]) == 32 and odd.headers["x-request-id"] != "not ok; <script>"
    lines = [r.fields for r in caplog.records if getattr(r, "fields", None)]
    assert {"request_id": "abc-123", "path": "/v1/me", "status": 200, "principal": "tesla-viewer"}.items() \
        <= next(f for f in lines if f["request_id"] == "abc-123").items()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_is_413(client, world, chunked):
    body = json.dumps({"site": "x", "capacity": [], "pad": "x" * 8000}).encode()
    content = iter([body[:3000], body[3000:]]) if chunked else body
    answer = client.post("/v1/events/site_capacity_added", content=content,
                         headers=world.headers("tesla-operator") | {"Content-Type": "application/json"})
    assert answer.status_code == 413 and answer.json()["type"].endswith("/payload-too-large")


def _fail_one(client, world, key: str | None, gpus: int = 1, who: str = "tesla-operator"):
    headers = world.headers(who) | ({"Idempotency-Key": key} if key else {})
    return client.post(f"/v1/events/gpus_failed?on={ON}", headers=headers,
                       json={"owner": "tesla", "model": "h100", "gpus": gpus, "site": "giga-texas-cortex"})


def test_an_idempotent_write_is_applied_once_and_answered_alike(client, world):
    first = _fail_one(client, world, "retry-1")
    again = _fail_one(client, world, "retry-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = _fail_one(client, world, "retry-1", gpus=2)
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["detail"]
    types = [e.event_type for e in FleetService.open(world.db).events(first.json()["seq"] - 1)]
    assert types == ["gpus_failed"]


def test_keys_are_per_principal(client, world):
    mine = _fail_one(client, world, "shared-key", who="tesla-operator")
    theirs = _fail_one(client, world, "shared-key", who="tesla-bot")
    assert mine.status_code == theirs.status_code == 201 and mine.json()["seq"] != theirs.json()["seq"]


def test_the_actor_is_the_authenticated_principal_not_a_field(client, world):
    answer = client.post(f"/v1/events/gpus_failed?on={ON}&actor=tesla-admin", headers=world.headers("tesla-bot"),
                         json={"owner": "tesla", "model": "h100", "gpus": 1, "site": "giga-texas-cortex",
                               "actor": "musk"})
    assert answer.status_code == 422  # a payload has no actor field: an unknown field is refused
    answer = _fail_one(client, world, None, who="tesla-bot")
    assert answer.status_code == 201 and answer.json()["actor"] == "tesla-bot"


def test_access_roles_are_ledger_events_and_as_of_queryable(client, world):
    admin = world.headers("tesla-admin")
    granted = client.post(f"/v1/events/access_granted?on={ON}", headers=admin,
                          json={"principal": "tesla-indep", "entity": "tesla", "role": "viewer"})
    assert granted.status_code == 201 and granted.json()["actor"] == "tesla-admin"
    assert client.get("/v1/status", headers=world.headers("tesla-indep")).status_code == 200
    revoked = client.post(f"/v1/events/access_revoked?on={ON}", headers=admin,
                          json={"principal": "tesla-indep", "entity": "tesla", "role": "viewer", "reason": "test"})
    assert revoked.status_code == 201
    assert client.get("/v1/status", headers=world.headers("tesla-indep")).status_code == 403
    before = client.get(f"/v1/access?known_at={granted.json()['recorded_at']}&entity=tesla", headers=admin).json()
    after = client.get("/v1/access?entity=tesla", headers=admin).json()
    row = {"principal": "tesla-indep", "entity": "tesla", "role": "viewer"}
    assert row in before and row not in after
    other = client.post(f"/v1/events/access_granted?on={ON}", headers=admin,
                        json={"principal": "tesla-indep", "entity": "xai", "role": "viewer"})
    assert other.status_code == 403


@pytest.mark.parametrize(("who", "status", "kind"), [
    ("tesla-operator", 422, "unknown-reference"),  # an operator may ship lots: the ledger refuses the unknown one
    ("tesla-viewer", 403, "forbidden"),  # a viewer may ship nothing, whatever the lot
], ids=["operator-unknown-lot", "viewer-unknown-lot"])
def test_a_reference_to_nothing_is_refused_by_the_role_first_then_by_the_ledger(client, world, who, status, kind):
    answer = client.post(f"/v1/events/lot_shipped?on={ON}", headers=world.headers(who), json={"lot": "no-such-lot"})
    assert answer.status_code == status and answer.json()["type"].endswith(kind)


def test_an_event_for_no_entity_is_allowed_to_no_one():
    from gpufleet.domain.access import Capability, Forbidden, Principal, require
    from gpufleet.domain.state import FleetState

    state = FleetState(access={("p", "tesla", "operator")})
    with pytest.raises(Forbidden, match="no role allows"):
        require(state, Principal("p"), Capability.RECORD, set())
    require(state, Principal("p"), Capability.RECORD, None)  # any entity: p's operator role in tesla allows it


def test_an_access_grant_cannot_be_dated_after_today(client, world):
    from datetime import timedelta

    later = ON + timedelta(days=30)
    answer = client.post(f"/v1/events/access_granted?on={later}", headers=world.headers("tesla-admin"),
                         json={"principal": "tesla-indep", "entity": "tesla", "role": "operator"})
    assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == "on"
    assert client.get("/v1/status", headers=world.headers("tesla-indep")).status_code == 403


@pytest.mark.parametrize("query", ["", "?as_of=2024-06-30"], ids=["latest", "as-of"])
def test_a_status_answer_carries_an_etag_is_304_when_held_and_gzip_when_accepted(client, world, query):
    auth = world.headers("tesla-viewer")
    first = client.get(f"/v1/status{query}", headers=auth)
    assert first.status_code == 200 and first.headers["etag"].startswith('"')
    held = client.get(f"/v1/status{query}", headers=auth | {"If-None-Match": first.headers["etag"]})
    assert held.status_code == 304 and held.content == b"" and held.headers["etag"] == first.headers["etag"]
    packed = client.get(f"/v1/status{query}", headers=auth | {"Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip" and packed.json() == first.json()  # httpx unpacks it
    plain = client.get(f"/v1/status{query}", headers=auth | {"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.json() == first.json()
    _fail_one(client, world, key=None)  # the ledger moves on: the held answer is stale
    moved = client.get(f"/v1/status{query}", headers=auth | {"If-None-Match": first.headers["etag"]})
    assert moved.status_code == 200 and moved.headers["etag"] != first.headers["etag"]
    assert moved.json()["ledger_seq"] == first.json()["ledger_seq"] + 1


def test_the_claims_answer_is_kept_per_head_and_a_new_claim_shows_at_once(client, world):
    auth = world.headers("tesla-auditor")
    first = client.get("/v1/claims", headers=auth).json()
    assert client.get("/v1/claims", headers=auth).json() == first and len(first) >= 2
    claim = {"claim": "tesla-new-claim", "claimant": "tesla", "metric": "active_gpus", "target": 1.0,
             "deadline": "2030-01-01"}
    made = client.post(f"/v1/events/claim_recorded?on={date.today().isoformat()}",
                       headers=world.headers("tesla-operator"), json=claim)
    assert made.status_code == 201, made.text
    after = {r["claim"] for r in client.get("/v1/claims", headers=auth).json()}
    assert after == {r["claim"] for r in first} | {"tesla-new-claim"}
