"""Jobs through the service: each kind end to end, who may run which, what a result may show, the
synchronous plan apply and quota export, a dead pool process, and a server killed mid-job."""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import signal
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient

from api_world import EXAMPLE, ON, LiveServer, _a_site, build_world
from gpufleet.api.app import create_app
from gpufleet.api.settings import ServiceSettings
from gpufleet.domain.access import Forbidden
from gpufleet.domain.governance import GovernancePolicy
from gpufleet.services import jobs
from gpufleet.services.fleet import FleetService, make_payload

QUOTAS = EXAMPLE.parent / "quotas.yaml"
CLUSTER = "16x8:A100,2x8:H100"  # the cluster of examples/quotas.yaml
PLAN_KEYS = {"status", "policy", "objective", "start", "weeks", "week_days", "kpis", "loans", "reclaims", "installs",
             "moves", "supply", "failures", "shadow_prices", "solve"}
SIM_JOBS = 300
DEADLINE_S = 300  # a guard against a hung job, not a measurement


def philly_trace(path: Path, jobs_count: int, seed: int = 7) -> Path:
    """A Philly-format trace of ``jobs_count`` jobs, one every 30 s, of four tenants (seeded)."""
    rng = random.Random(seed)
    lines = ["timestamp,duration,num_gpus,gpu_time,cluster"]
    for i in range(jobs_count):
        at, run, gpus = i * 30, rng.randint(60, 20_000), rng.choice([1, 1, 2, 4, 8])
        lines.append(f"2017-10-{1 + at // 86400:02d} {at // 3600 % 24:02d}:{at // 60 % 60:02d}:{at % 60:02d},"
                     f"{run},{gpus},{run * gpus},vc{rng.randint(1, 4)}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("traces")
    philly_trace(folder / "small.csv", SIM_JOBS)
    shutil.copy(QUOTAS, folder / "quotas.yaml")
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(f"sqlite:///{tmp_path_factory.mktemp('jobs') / 'ledger.db'}")


@pytest.fixture(scope="module")
def client(world, traces):
    with TestClient(create_app(ServiceSettings(db=world.db, traces_dir=traces, job_workers=2))) as c:
        yield c


def finished(client, world, who: str, url: str) -> dict:
    """Poll a job until it is final."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        job = client.get(url, headers=world.headers(who)).json()
        assert job["state"] in jobs.STATES, job
        if job["state"] in jobs.FINAL:
            return job
        time.sleep(0.2)
    pytest.fail(f"job {url} not final after {DEADLINE_S} s: {job}")


def submit(client, world, who: str, path: str, body: dict) -> dict:
    r = client.post(path, json=body, headers=world.headers(who))
    assert r.status_code == 202, r.text
    assert r.headers["Location"] == r.json()["url"]
    return finished(client, world, who, r.json()["url"])


def check_verify(result, world):
    assert result["ok"] is True and result["events_checked"] == result["head_seq"] > 0


def check_plan(result, world):
    assert PLAN_KEYS <= set(result) and result["policy"] == "max-value" and result["weeks"] == 8
    assert result["visible_entities"] == ["tesla"]  # a planner of tesla reads tesla's rows only
    assert set(result["kpis"]["value_usd"]) <= {"tesla"}


def check_compare(result, world):
    assert [p["policy"] for p in result] == ["hold", "max-value", "owner-first", "fair"]
    assert all(PLAN_KEYS <= set(p) for p in result)


def check_report(result, world):
    assert result.startswith("<!DOCTYPE html>") and "<title>GPU fleet board report</title>" in result


def check_simulate(result, world):
    assert result["trace"]["jobs"] == SIM_JOBS
    assert [p["policy"] for p in result["policies"]] == ["static", "borrow", "fair"]


KINDS = [  # (id, route, body, who, media type, check of the result)
    ("verify", "/v1/ledger/verify", {"replay": True}, "x-auditor", "application/json", check_verify),
    ("plan", "/v1/plans", {"horizon_weeks": 8, "policy": "max-value"}, "tesla-planner", "application/json",
     check_plan),
    ("plan-compare", "/v1/plans", {"horizon_weeks": 4, "compare": True}, "xai-planner", "application/json",
     check_compare),
    ("report", "/v1/reports", {}, "tesla-auditor", "text/html; charset=utf-8", check_report),
    ("simulate", "/v1/simulations", {"trace": "small.csv", "compare": True}, "x-operator", "application/json",
     check_simulate),
]


@pytest.mark.parametrize(("route", "body", "who", "media", "check"), [k[1:] for k in KINDS], ids=[k[0] for k in KINDS])
def test_each_kind_runs_to_its_result(client, world, route, body, who, media, check):
    job = submit(client, world, who, route, body)
    assert (job["state"], job["progress"], job["problem"], job["media_type"]) == ("succeeded", 1.0, None, media)
    assert job["result_url"] == f"/v1/jobs/{job['job_id']}/result"
    r = client.get(job["result_url"], headers=world.headers(who))
    assert (r.status_code, r.headers["content-type"]) == (200, media)
    result = r.json() if media == "application/json" else r.text
    check(result, world)
    assert job["result"] == (result if media == "application/json" else None)  # HTML only at its URL
    assert job["job_id"] in [j["job_id"] for j in client.get("/v1/jobs", headers=world.headers(who)).json()]


REFUSED = [  # (route, body, who): each role that may not run the kind
    ("/v1/plans", {}, "tesla-operator"), ("/v1/plans", {}, "tesla-viewer"), ("/v1/plans", {}, "tesla-auditor"),
    ("/v1/plans", {}, "tesla-admin"),
    ("/v1/ledger/verify", {}, "tesla-planner"), ("/v1/ledger/verify", {}, "tesla-finance"),
    ("/v1/ledger/verify", {}, "tesla-admin"),
    ("/v1/reports", {}, "tesla-operator"), ("/v1/reports", {}, "tesla-viewer"),
    ("/v1/reports", {}, "tesla-finance"),  # finance of one entity: the report shows them all
    ("/v1/simulations", {"trace": "small.csv"}, "tesla-viewer"),
    ("/v1/simulations", {"trace": "small.csv"}, "tesla-finance"),
    ("/v1/simulations", {"trace": "small.csv"}, "tesla-auditor"),
    ("/v1/exports", {"engine": "kueue", "cluster": CLUSTER, "quotas": "quotas.yaml"}, "tesla-viewer"),
    ("/v1/plans/apply", {}, "tesla-operator"), ("/v1/plans/apply", {}, "tesla-admin"),
]


@pytest.mark.parametrize(("route", "body", "who"), REFUSED, ids=[f"{r[0].split('/')[-1]}-{r[2]}" for r in REFUSED])
def test_a_role_that_may_not_run_a_kind_is_refused(client, world, route, body, who):
    before = client.get("/v1/jobs", headers=world.headers(who)).json()
    r = client.post(route, json=body, headers=world.headers(who))
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/problem+json" and r.json()["detail"]
    assert client.get("/v1/jobs", headers=world.headers(who)).json() == before  # no job was made


def test_finance_reading_every_entity_gets_the_report(client, world):
    fleet = FleetService.open(world.db)
    fleet.record_many([(make_payload("access_granted", {"principal": "x-finance", "entity": e, "role": "finance"}),
                        ON, None) for e in ("tesla", "xai")], actor="test-setup")
    fleet.engine.dispose()
    job = submit(client, world, "x-finance", "/v1/reports", {"start": "2024-01-01", "end": "2024-06-30"})
    assert job["state"] == "succeeded"
    assert "As of <b>2024-06-30</b>" in client.get(job["result_url"], headers=world.headers("x-finance")).text


def test_a_job_is_seen_by_its_submitter_only(client, world):
    job = submit(client, world, "tesla-auditor", "/v1/ledger/verify", {})
    for url in (f"/v1/jobs/{job['job_id']}", job["result_url"]):
        r = client.get(url, headers=world.headers("x-auditor"))  # an auditor too: a job is its submitter's
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert job["job_id"] not in [j["job_id"] for j in client.get("/v1/jobs", headers=world.headers("x-auditor")).json()]


def test_a_job_of_a_role_since_revoked_shows_nothing(client, world):
    fleet = FleetService.open(world.db)
    grant = {"principal": "x-viewer", "entity": "x", "role": "planner"}
    fleet.record(make_payload("access_granted", grant), ON, actor="test-setup")
    job = submit(client, world, "x-viewer", "/v1/plans", {"horizon_weeks": 4})
    assert job["state"] == "succeeded" and job["result"]["visible_entities"] == ["x"]
    fleet.record(make_payload("access_revoked", grant), ON, actor="test-setup")
    fleet.engine.dispose()
    for url in (f"/v1/jobs/{job['job_id']}", job["result_url"]):
        r = client.get(url, headers=world.headers("x-viewer"))
        assert r.status_code == 403 and "planner" in r.json()["detail"]


def test_a_failed_job_has_its_problem_and_no_result(client, world, traces):
    (traces / "empty.csv").write_text("timestamp,duration,num_gpus,gpu_time,cluster\n")
    job = submit(client, world, "x-planner", "/v1/simulations", {"trace": "empty.csv"})
    assert job["state"] == "failed" and job["problem"]["title"] == "InputError" and job["result_url"] is None
    assert "empty.csv" in job["problem"]["detail"] and job["message"]
    r = client.get(f"/v1/jobs/{job['job_id']}/result", headers=world.headers("x-planner"))
    assert r.status_code == 409 and "failed" in r.json()["detail"]


NAMES = [  # (body, status, field): a file is named, never given as a path
    ({"trace": "../small.csv"}, 422, "trace"), ({"trace": "sub/small.csv"}, 422, "trace"),
    ({"trace": "..\\small.csv"}, 422, "trace"), ({"trace": ".."}, 422, "trace"),
    ({"trace": "absent.csv"}, 404, "trace"),
    ({"trace": "small.csv", "quotas": "/etc/passwd"}, 422, "quotas"),
    ({"trace": "small.csv", "cluster_file": "absent.csv"}, 404, "cluster_file"),
    ({"trace": "small.csv", "cluster": "4x8:A100", "cluster_file": "small.csv"}, 422, "cluster_file"),
    ({"trace": "small.csv", "cluster": "ledger.db"}, 422, "cluster"),
]


@pytest.mark.parametrize(("body", "status", "field"), NAMES, ids=[f"{b.get('trace')}-{f}-{s}" for b, s, f in NAMES])
def test_a_simulation_reads_only_files_of_the_traces_folder(client, world, body, status, field):
    r = client.post("/v1/simulations", json=body, headers=world.headers("tesla-planner"))
    assert r.status_code == status, r.text
    assert [e["field"] for e in r.json()["errors"]] == [field]


def test_without_a_traces_folder_a_simulation_is_refused_with_the_reason(world):
    with TestClient(create_app(ServiceSettings(db=world.db))) as c:
        r = c.post("/v1/simulations", json={"trace": "small.csv"}, headers=world.headers("tesla-planner"))
    assert r.status_code == 503 and "traces_dir" in r.json()["detail"]


@pytest.mark.parametrize(("engine", "media", "needle"), [("kueue", "application/yaml", "kind: ClusterQueue"),
                                                        ("slurm", "text/plain; charset=utf-8", "sacctmgr")],
                         ids=["kueue", "slurm"])
def test_the_quota_export_answers_at_once(client, world, engine, media, needle):
    body = {"engine": engine, "cluster": CLUSTER, "quotas": "quotas.yaml", "at_s": 86400}
    r = client.post("/v1/exports", json=body, headers=world.headers("xai-operator"))
    assert (r.status_code, r.headers["content-type"]) == (200, media), r.text
    assert needle in r.text and "research" in r.text and "product" in r.text


def a_plan(world, lender: str, borrower: str) -> dict:
    fleet = FleetService.open(world.db)
    site = _a_site(fleet, lender)
    fleet.engine.dispose()
    start = ON + timedelta(days=14)
    return {"policy": "max-value", "start": ON.isoformat(), "installs": [], "note": "fields apply ignores stay",
            "loans": [{"lender": lender, "borrower": borrower, "model": "h100", "site": site, "gpus": 16.0,
                       "start": start.isoformat(), "end": (start + timedelta(days=28)).isoformat(),
                       "fee_usd_per_gpu_hour": GovernancePolicy().market_price(ON).usd_per_gpu_hour,
                       "reason": "a test plan"}]}


def test_a_planner_applies_a_plan_as_itself_and_only_for_its_entity(client, world):
    plan = a_plan(world, "x", "xai")
    headers = world.headers("x-planner") | {"Idempotency-Key": "apply-1"}
    r = client.post("/v1/plans/apply", json=plan, headers=headers)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["recorded"] == 1 and [e["event_type"] for e in body["events"]] == ["loan_proposed"]
    assert body["events"][0]["actor"] == "x-planner" and body["events"][0]["payload"]["lender"] == "x"
    again = client.post("/v1/plans/apply", json=plan, headers=headers)
    assert (again.status_code, again.json(), again.headers["Idempotent-Replayed"]) == (201, body, "true")
    refused = client.post("/v1/plans/apply", json=a_plan(world, "tesla", "xai"), headers=world.headers("x-planner"))
    assert refused.status_code == 403 and "tesla" in refused.json()["detail"]
    seqs = [e["seq"] for e in client.get("/v1/events", headers=world.headers("x-auditor"),
                                         params={"type": "loan_proposed"}).json()["events"]]
    assert seqs.count(body["events"][0]["seq"]) == 1 and len(seqs) == 2  # p1 of the world, and this one


@pytest.mark.parametrize(("change", "field"), [({"policy": None}, "policy"), ({"start": "2024-02-30"}, "start"),
                                               ({"loans": [{"lender": "x"}]}, "loans.0.borrower")],
                         ids=["no-policy", "bad-date", "loan-incomplete"])
def test_a_bad_plan_is_refused_naming_its_field(client, world, change, field):
    plan = a_plan(world, "x", "xai") | change
    r = client.post("/v1/plans/apply", json=plan, headers=world.headers("x-planner"))
    assert r.status_code == 422 and f"field '{field}'" in r.json()["detail"]


PLAN = {  # a plan of three entities, by hand: what a planner of one of them may see of it
    "status": "optimal", "policy": "fair", "objective": 9.0, "start": "2024-01-01",
    "kpis": {"idle_gpu_weeks": {"a": 1.0, "b": 2.0, "c": 3.0, "total": 6.0}, "value_usd": {"a": 1.0, "c": 2.0}},
    "loans": [{"lender": "a", "borrower": "b"}, {"lender": "b", "borrower": "c"}, {"lender": "c", "borrower": "a"}],
    "reclaims": [{"lender": "b", "borrower": "c"}], "installs": [{"owner": "a"}, {"owner": "b"}],
    "moves": [{"owner": "c"}], "supply": [{"owner": "a"}, {"owner": "c"}], "failures": [],
    "shadow_prices": {"site_slots": [{"site": "sa"}, {"site": "sb"}], "owner_gpus": [{"owner": "b"}]},
}
VISIBLE = [  # (readable, loans kept, kpi entities, installs kept, site slots kept)
    (None, 3, {"a", "b", "c", "total"}, 2, 2),
    ({"a"}, 2, {"a"}, 1, 1),
    ({"b"}, 2, {"b"}, 1, 1),
    ({"a", "c"}, 3, {"a", "c"}, 1, 1),
    (set(), 0, set(), 0, 0),
]


@pytest.mark.parametrize(("readable", "loans", "kpis", "installs", "slots"), VISIBLE,
                         ids=["auditor", "a", "b", "a+c", "none"])
def test_a_plan_shows_only_what_its_reader_may_read(readable, loans, kpis, installs, slots):
    seen = jobs.visible_plan(PLAN, readable, {"sa": "a", "sb": "b"})
    assert len(seen["loans"]) == loans and len(seen["installs"]) == installs
    assert set(seen["kpis"]["idle_gpu_weeks"]) == kpis and len(seen["shadow_prices"]["site_slots"]) == slots
    parties = {e for row in seen["loans"] + seen["reclaims"] for e in (row["lender"], row["borrower"])}
    assert readable is None or all(any(e in readable for e in (r["lender"], r["borrower"])) for r in seen["loans"])
    assert readable is None or (seen["objective"] is None and not {"total"} & set(seen["kpis"]["idle_gpu_weeks"]))
    assert parties <= {"a", "b", "c"}


LOAN_READERS = [("x-operator", False), ("xai-planner", False), ("tesla-auditor", True), ("x-auditor", True)]


@pytest.mark.parametrize(("who", "allowed"), LOAN_READERS, ids=[w for w, _ in LOAN_READERS])
def test_the_ledgers_loans_feed_a_simulation_only_for_who_reads_every_party(world, who, allowed):
    fleet = FleetService.open(world.db)
    state = dataclasses.replace(fleet.state(), loans={"l1": SimpleNamespace(lender="tesla", borrower="xai")})
    fleet.engine.dispose()
    if allowed:
        jobs.require_loans_readable(state, who)
    else:
        with pytest.raises(Forbidden, match="may not read the loans of"):
            jobs.require_loans_readable(state, who)


def test_a_simulations_progress_runs_from_reading_to_its_last_replay():
    calls: list[tuple[float, str]] = []
    replay = jobs.replay_progress(lambda fraction, message: calls.append((fraction, message)), jobs=100, replays=2)
    for policy in ("alone", "fair"):
        step = replay(policy)
        for steps in (50, 200, 400):  # about two steps a job; past that it stays at the replay's end
            step(steps)
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[0] == pytest.approx(0.05) and fractions[-1] == 1.0
    assert calls[0][1] == "replay 1 of 2: each tenant alone on its quota"
    assert calls[-1][1] == "replay 2 of 2: policy fair, 400 events"


def crash(ctx, params):
    """A job whose process dies, as a kill or the out-of-memory killer would end it."""
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_job_whose_process_dies_fails_and_the_next_gets_a_new_pool(tmp_path, monkeypatch):
    world = build_world(f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.setitem(jobs.KINDS, "crash", jobs.Kind(crash))
    fleet = FleetService.open(world.db)
    runner = jobs.JobRunner(fleet, workers=1)
    try:
        died = runner.submit("crash", "tesla-auditor", {})
        assert wait_store(runner.store, died)["state"] == "failed"
        job = runner.store.get(died)
        assert job["problem"]["title"] == "WorkerDied" and "stopped unexpectedly" in job["message"]
        after = runner.submit("verify", "tesla-auditor", {})
        assert wait_store(runner.store, after)["state"] == "succeeded"
    finally:
        runner.shutdown()
        fleet.engine.dispose()


def wait_store(store: jobs.JobStore, job_id: str) -> dict:
    deadline = time.monotonic() + DEADLINE_S
    while (job := store.get(job_id))["state"] not in jobs.FINAL and time.monotonic() < deadline:
        time.sleep(0.1)
    return job


def test_jobs_left_unfinished_read_interrupted_on_each_backend(db_url):
    """``recover`` (the server's start): queued and running jobs become interrupted, final ones stay."""
    world = build_world(db_url)
    fleet = FleetService.open(world.db)
    store = jobs.JobStore(fleet)
    made = {state: store.create("verify", "tesla-auditor", {}) for state in ("queued", "running", "succeeded")}
    store.update(made["running"], state="running")
    store.update(made["succeeded"], state="succeeded", result="{}")
    assert store.recover() == 2
    assert {s: store.get(j)["state"] for s, j in made.items()} == {
        "queued": "interrupted", "running": "interrupted", "succeeded": "succeeded"}
    assert "submit it again" in store.get(made["running"])["message"]
    assert not store.update(made["running"], state="succeeded")  # a final state is never left
    fleet.engine.dispose()


STOPS = [("kill -9", "running"), ("SIGTERM", "interrupted")]  # (how the server stops, the job's state on disk then)


@pytest.mark.parametrize(("how", "left"), STOPS, ids=[h for h, _ in STOPS])
def test_a_job_running_when_the_server_stops_reads_interrupted_after_the_restart(tmp_path, how, left):
    """Killed, the server leaves the job running on disk and the next start marks it; stopped (a
    terminal's Ctrl-C or systemd signal the pool's processes too), it marks the job itself."""
    world = build_world(f"sqlite:///{tmp_path / 'ledger.db'}")
    philly_trace(tmp_path / "big.csv", 20_000)  # all three policies: several seconds of replays
    env = {"GPUFLEET_TRACES_DIR": str(tmp_path)}
    server = LiveServer(world.db, env=env).start()
    try:
        r = httpx.post(f"{server.url}/v1/simulations", json={"trace": "big.csv", "compare": True},
                       headers=world.headers("tesla-planner"), timeout=30)
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + DEADLINE_S
        while (job := httpx.get(f"{server.url}{r.json()['url']}", headers=world.headers("tesla-planner"),
                                timeout=30).json())["state"] == "queued":
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
        assert job["state"] == "running", job
        server.kill() if how == "kill -9" else server.stop()
        assert _state(world.db, job["job_id"]) == left
        server = LiveServer(world.db, env=env).start()
        after = httpx.get(f"{server.url}{r.json()['url']}", headers=world.headers("tesla-planner"), timeout=30).json()
        assert after["state"] == "interrupted" and "server stopped" in after["message"], after
        assert after["result"] is None and after["result_url"] is None
    finally:
        server.stop()


def _state(db: str, job_id: str) -> str:
    fleet = FleetService.open(db)
    try:
        return jobs.JobStore(fleet).get(job_id)["state"]
    finally:
        fleet.engine.dispose()
