"""The service under concurrent writers, retries and a crash (issue 13: writes are safe under concurrency).

A live server with 4 worker processes; 8 client processes append over HTTP, each request with its own
``Idempotency-Key``. Every acknowledged event is in the ledger exactly once, as acknowledged; the chain
verifies; retries (sequential, and the same key from two clients at once) add nothing and get the first
answer; after a ``kill -9`` every acknowledged event survives, and a job that was running reads
``interrupted``. ``GPUFLEET_CONCURRENCY_APPENDS`` sets the appends per client (the issue's figure is
2,000; the default keeps the suite short).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

import postgres_server
from api_world import ON, LiveServer, build_world
from gpufleet.services.fleet import FleetService, make_payload

CLIENTS, WORKERS = 8, 4
APPENDS = int(os.environ.get("GPUFLEET_CONCURRENCY_APPENDS", "250"))
# clients 2k and 2k+1 act as the same principal, so that they can send each other's requests
PLANNERS = ("tesla-planner", "x-planner", "xai-planner", "tesla-planner")
ROUTE = "/v1/events/demand_recorded"


def principal_of(client: int) -> str:
    return PLANNERS[client // 2]


def request_of(mode: str, client: int, i: int) -> tuple[str, dict]:
    """The idempotency key and body of client ``client``'s ``i``-th request in a run (a cheap demand)."""
    entity, key = principal_of(client).split("-")[0], f"{mode}-c{client}-{i}"
    return key, {"demand": key, "entity": entity, "start": "2025-01-01",
                              "end": "2025-02-01", "gpus": 1 + i % 50, "value_usd_per_gpu_hour": 2.0}


def _client(url: str, token: str, client: int, count: int, mode: str, out: str, barrier) -> None:
    """One client process: send the requests of ``mode`` and write every answer to ``out`` (JSON lines).

    ``plain``: each request once. ``retry``: also every 4th again at once, every 5th of the partner
    client (the same key and body, sent by two clients at about the same time), and every 3rd again
    at the end. ``crash``: until the server goes away (an answer that never came is ``status`` 0)."""
    partner = client ^ 1
    plan: list[tuple[int, int]] = []
    for i in range(count):
        plan.append((client, i))
        if mode == "retry" and i % 4 == 0:
            plan.append((client, i))
        if mode == "retry" and i % 5 == 0:
            plan.append((partner, i))
    if mode == "retry":
        plan += [(client, i) for i in range(0, count, 3)]
    answers = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as http:
        barrier.wait()
        for owner, i in plan:
            key, body = request_of(mode, owner, i)
            try:
                r = http.post(ROUTE, json=body, headers={"Idempotency-Key": key})
            except httpx.TransportError:
                answers.append({"key": key, "mode": mode, "owner": owner, "i": i, "status": 0})
                if mode == "crash":
                    break
                raise
            answers.append({"key": key, "mode": mode, "owner": owner, "i": i, "status": r.status_code,
                            "body": r.text, "replayed": r.headers.get("Idempotent-Replayed") == "true"})
    Path(out).write_text("\n".join(json.dumps(a) for a in answers))


def start_clients(server: LiveServer, tokens: dict[str, str], count: int, mode: str, tmp: Path,
                  clients: int = CLIENTS) -> tuple[list[mp.Process], object]:
    """The client processes, started, and their barrier (held until they are joined)."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(clients)
    procs = [ctx.Process(target=_client, args=(server.url, tokens[principal_of(c)], c, count, mode,
                                                str(tmp / f"{mode}-{c}.jsonl"), barrier)) for c in range(clients)]
    for p in procs:
        p.start()
    return procs, barrier


def answers_of(clients: tuple[list[mp.Process], object], mode: str, tmp: Path, timeout: float = 1800) -> list[dict]:
    procs = clients[0]
    for p in procs:
        p.join(timeout)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    return [json.loads(line) for c in range(len(procs))
            for line in (tmp / f"{mode}-{c}.jsonl").read_text().splitlines()]


def keyed_events(server: LiveServer, auditor: str, since: int = 0) -> list[dict]:
    """Every demand recorded after ``since``, read page by page as an auditor."""
    found, cursor = [], since
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {auditor}"}, timeout=60) as http:
        while cursor is not None:
            r = http.get("/v1/events", params={"since_seq": cursor, "limit": 1000, "type": "demand_recorded"})
            assert r.status_code == 200, r.text
            page = r.json()
            found += page["events"]
            cursor = page["next_since_seq"]
    return found


def ledger_key(owner: int, key: str) -> str:
    return f"api:{principal_of(owner)}:{key}"


def check_ledger(db: str, events: list[dict], acked: list[dict]) -> dict[str, dict]:
    """The chain verifies; each key is on at most one event, whose body is the one sent; each
    acknowledged answer is its key's event as stored. Returns the events by key."""
    fleet = FleetService.open(db)
    try:
        report = fleet.verify()
    finally:
        fleet.engine.dispose()
    assert report.ok, report.reason
    counts = Counter(e["idempotency_key"] for e in events)
    assert [k for k, n in counts.items() if n > 1] == []
    by_key = {e["idempotency_key"]: e for e in events}
    for a in acked:
        stored = by_key.get(ledger_key(a["owner"], a["key"]))
        assert stored is not None, f"acknowledged {a['key']} is not in the ledger"
        assert json.loads(a["body"]) == stored
        assert stored["payload"] == request_of(a["mode"], a["owner"], a["i"])[1] | {"workload": "training", "tier": 1}
    return by_key


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def live(request, tmp_path_factory):
    """A world on each backend, served by 4 worker processes for the module's tests."""
    if request.param == "sqlite":
        db, name = f"sqlite:///{tmp_path_factory.mktemp('live') / 'ledger.db'}", None
    else:
        pg = request.getfixturevalue("pg_server")
        name = f"live{os.getpid()}"
        db = postgres_server.create_database(pg.url, name)
    world = build_world(db)
    server = LiveServer(db, WORKERS).start()
    yield world, server
    server.stop()
    if name is not None:
        postgres_server.drop_database(request.getfixturevalue("pg_server").url, name)


def test_concurrent_appends_each_acknowledged_event_once(live, tmp_path):
    world, server = live
    before = FleetService.open(world.db).head().seq
    answers = answers_of(start_clients(server, world.tokens, APPENDS, "plain", tmp_path), "plain", tmp_path)
    assert len(answers) == CLIENTS * APPENDS
    assert Counter(a["status"] for a in answers) == {201: CLIENTS * APPENDS}
    events = keyed_events(server, world.tokens["tesla-auditor"], before)
    check_ledger(world.db, events, answers)
    assert len(events) == CLIENTS * APPENDS
    assert FleetService.open(world.db).head().seq == before + CLIENTS * APPENDS
    seqs = sorted(json.loads(a["body"])["seq"] for a in answers)
    assert seqs == list(range(before + 1, before + 1 + CLIENTS * APPENDS))


def test_retries_on_the_same_keys_add_nothing_and_get_the_first_answer(live, tmp_path):
    world, server = live
    before = FleetService.open(world.db).head().seq
    answers = answers_of(start_clients(server, world.tokens, APPENDS, "retry", tmp_path), "retry", tmp_path)
    assert {a["status"] for a in answers} == {201}
    first: dict[str, str] = {}
    for a in answers:  # every answer for a key is the first one
        assert json.loads(first.setdefault(a["key"], a["body"])) == json.loads(a["body"]), a["key"]
    assert any(a["replayed"] for a in answers)
    events = keyed_events(server, world.tokens["tesla-auditor"], before)
    check_ledger(world.db, events, answers)
    assert len(events) == CLIENTS * APPENDS == len(first)
    assert FleetService.open(world.db).head().seq == before + CLIENTS * APPENDS
    # the same key with another body is refused, and writes nothing
    key, body = request_of("retry", 0, 0)
    r = httpx.post(server.url + ROUTE, json=body | {"gpus": 999}, headers=world.headers(principal_of(0))
                   | {"Idempotency-Key": key})
    assert r.status_code == 409, r.text
    assert FleetService.open(world.db).head().seq == before + CLIENTS * APPENDS


def _long_plan_world(db: str) -> None:
    """Enough demand that planning ten years of weeks, every policy, integral, takes seconds."""
    rng = random.Random(13)
    items = []
    for n in range(800):
        start = ON + timedelta(days=rng.randint(0, 3000))
        items.append((make_payload("demand_recorded", {
            "demand": f"big{n}", "entity": rng.choice(["tesla", "x", "xai"]), "start": start.isoformat(),
            "end": (start + timedelta(days=rng.randint(30, 700))).isoformat(), "gpus": rng.randint(10, 5000),
            "value_usd_per_gpu_hour": round(rng.uniform(0.5, 6), 2)}), ON, None))
    fleet = FleetService.open(db)
    fleet.record_many(items, actor="test-setup")
    fleet.engine.dispose()


def test_kill_9_while_clients_append_loses_no_acknowledged_event(db_url, tmp_path):
    world = build_world(db_url)
    _long_plan_world(db_url)
    server = LiveServer(db_url, WORKERS).start()
    try:
        planner = httpx.Client(base_url=server.url, headers=world.headers("tesla-planner"), timeout=60)
        auditor = httpx.Client(base_url=server.url, headers=world.headers("tesla-auditor"), timeout=60)
        before = auditor.get("/v1/ledger/head").json()["seq"]
        procs = start_clients(server, world.tokens, 10**6, "crash", tmp_path, clients=6)
        job = planner.post("/v1/plans", json={"horizon_weeks": 520, "compare": True, "integral": True})
        assert job.status_code == 202, job.text
        job_url = job.json()["url"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            running = planner.get(job_url).json()["state"] == "running"
            if running and auditor.get("/v1/ledger/head").json()["seq"] >= before + 150:
                break
            time.sleep(0.1)
        assert planner.get(job_url).json()["state"] == "running"
        server.kill()
        answers = answers_of(procs, "crash", tmp_path, timeout=120)
    finally:
        server.stop()
    acked = [a for a in answers if 200 <= a["status"] < 300]
    assert len(acked) >= 100 and all(a["status"] in (0, 201) for a in answers)
    server = LiveServer(db_url, WORKERS).start()
    try:
        planner = httpx.Client(base_url=server.url, headers=world.headers("tesla-planner"), timeout=60)
        assert planner.get(job_url).json()["state"] == "interrupted"
        by_key = check_ledger(db_url, keyed_events(server, world.tokens["tesla-auditor"], before), acked)
        sent = {ledger_key(a["owner"], a["key"]): a for a in answers}
        assert set(by_key) <= set(sent)  # nothing that was not sent; each with the body sent (check_ledger)
        for a in sent.values():  # the clients retry what got no answer: it is there once, or written now
            key, body = request_of("crash", a["owner"], a["i"])
            r = httpx.post(server.url + ROUTE, json=body, headers=world.headers(principal_of(a["owner"]))
                           | {"Idempotency-Key": key})
            assert r.status_code == 201, r.text
            stored = by_key.get(ledger_key(a["owner"], key))
            assert stored is None or r.json() == stored
        events = keyed_events(server, world.tokens["tesla-auditor"], before)
        check_ledger(db_url, events, acked)
        assert len(events) == len(sent)
    finally:
        server.stop()
