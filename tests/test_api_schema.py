"""Schemathesis over the served OpenAPI of the real app, as principals of every kind of role.

Every operation gets generated requests (valid and invalid: the fuzzing phase in both modes, and the
coverage phase's boundary values: huge numbers, empty and overlong strings, NUL bytes, wrong types,
missing bodies), sent in-process to ``create_app`` on a world of ``tests/api_world.py``. The checks:
no 5xx, and each answer is documented (status code, content type, headers and body schema).
Deterministic (a fixed seed), so a failure reproduces; the count of requests is asserted at the end.
"""

from __future__ import annotations

import collections

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi import checks as openapi_checks

from api_world import build_world
from gpufleet.api.app import create_app
from gpufleet.api.settings import ServiceSettings

ANONYMOUS = "anonymous"  # the credential schemathesis generates (none, empty, garbage): always a 401
# A viewer, an operator, a planner, finance, an auditor, an admin, an approver with no access role,
# and a read-only token: together they reach every branch of the access rules.
PRINCIPALS = ("tesla-viewer", "tesla-operator", "tesla-planner", "tesla-finance", "x-auditor", "xai-admin",
              "tesla-indep", "read_only", ANONYMOUS)
EXAMPLES = 5  # fuzzed requests per operation and principal (valid and invalid ones)
SEED = 20240601
MIN_REQUESTS = 1000
CHECKS = [not_a_server_error, openapi_checks.status_code_conformance, openapi_checks.content_type_conformance,
          openapi_checks.response_headers_conformance, openapi_checks.response_schema_conformance]
SENT: collections.Counter[str] = collections.Counter()  # principal -> requests sent
STATUSES: collections.Counter[int] = collections.Counter()
ANSWERED: collections.Counter[str] = collections.Counter()  # principal -> 2xx answers of /v1 routes
ITEMS: set[tuple[str, str, str]] = set()  # (phase, operation, principal) of the generated tests run here


@pytest.fixture(scope="module")
def world_app(tmp_path_factory):
    """A fresh world (schemathesis's writes change its ledger) and the app on it: one job worker, and a
    traces folder (empty: a generated name is a 404, as on a server whose folder lacks it)."""
    folder = tmp_path_factory.mktemp("api-schema")
    world = build_world(str(folder / "ledger.db"))
    (folder / "traces").mkdir()
    app = create_app(ServiceSettings(db=str(folder / "ledger.db"), job_workers=1, traces_dir=folder / "traces"))
    yield world, app
    asgi.shutdown_lifespans()  # the app's lifespan: the job pool is shut and the engine disposed


def _schema(phase: str) -> schemathesis.BaseSchema:
    """The document the app serves at /openapi.json (built without a database; test_openapi.py checks
    that it is the one served), with one generation phase."""
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "generation": {"mode": "all", "max-examples": EXAMPLES, "deterministic": True},
        "phases": {name: {"enabled": name == phase} for name in ("examples", "coverage", "fuzzing", "stateful")},
    })
    return schemathesis.openapi.from_dict(create_app(ServiceSettings()).openapi(), config=config)


fuzzed, bounded = _schema("fuzzing"), _schema("coverage")


def _send(case, who: str, world_app, phase: str) -> None:
    world, app = world_app
    ITEMS.add((phase, case.operation.label, who))
    if who != ANONYMOUS:
        case.headers = {**(case.headers or {}), **world.headers(who)}
    response = case.call(app=app)
    SENT[who] += 1
    STATUSES[response.status_code] += 1
    ANSWERED[who] += case.path.startswith("/v1/") and 200 <= response.status_code < 300
    case.validate_response(response, checks=CHECKS)


@pytest.mark.parametrize("who", PRINCIPALS)
@fuzzed.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_fuzzed_requests(case, who, world_app):
    _send(case, who, world_app, "fuzzing")


@bounded.parametrize()
@settings(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
def test_boundary_requests(case, world_app):
    """The coverage phase: each parameter and body field at and past its bounds, of the wrong type,
    missing, and other methods. Its cases are many and mostly refused before the access rules, so one
    principal each: an operator for writes (it may write), an auditor for reads (it reads everything)."""
    _send(case, "x-auditor" if case.method in ("GET", "HEAD") else "tesla-operator", world_app, "coverage")


def test_enough_requests(request):
    """Runs after the generated tests, when the whole module ran in this process (not a -k or node-id
    selection; under xdist, pyproject.toml's ``--dist loadfile`` gives the module to one worker, in
    file order, though xdist runs once each of the few generated tests whose ids coincide):
    at least MIN_REQUESTS were sent; every principal's credential worked (some 2xx of a /v1 route),
    and no route answered a 2xx without one."""
    options = request.config.option
    if options.keyword or options.markexpr or any("::" in arg for arg in request.config.args):
        pytest.skip("a selection of the generated tests ran; the totals need the whole module")
    fuzzed_by = {who for phase, _label, who in ITEMS if phase == "fuzzing"}
    assert fuzzed_by == set(PRINCIPALS), f"fuzzed as {sorted(fuzzed_by)}, not every principal"
    total = sum(SENT.values())
    print(f"schemathesis: {total} requests; by principal {dict(SENT)}; by status {dict(sorted(STATUSES.items()))}")
    assert total >= MIN_REQUESTS, f"only {total} generated requests (want {MIN_REQUESTS})"
    assert ANSWERED[ANONYMOUS] == 0, "a /v1 route answered 2xx without a valid credential"
    assert all(ANSWERED[who] for who in PRINCIPALS if who != ANONYMOUS), f"2xx answers by principal: {ANSWERED}"
