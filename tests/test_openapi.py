"""The OpenAPI document: the one served is the one committed (docs/openapi.json), and it documents
every route's errors (problem+json) and every write's Idempotency-Key."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gpufleet.api.app import create_app
from gpufleet.api.problems import PROBLEM
from gpufleet.api.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "openapi.json"
REGENERATE = ".venv/bin/python scripts/gen_openapi.py > docs/openapi.json"
# POSTs that write nothing (a body too rich for a query string): no Idempotency-Key to document.
READ_ONLY_POSTS = {("post", "/v1/exports")}
_spec = importlib.util.spec_from_file_location("gen_openapi", ROOT / "scripts" / "gen_openapi.py")
gen_openapi = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen_openapi)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict:
    """GET /openapi.json from an app whose database does not exist: the document needs none (the
    database is opened by the lifespan, which this client does not start)."""
    missing = tmp_path_factory.mktemp("openapi") / "no-such-ledger.db"
    client = TestClient(create_app(ServiceSettings(db=str(missing))))
    answer = client.get("/openapi.json")
    assert answer.status_code == 200, answer.text
    assert not missing.exists()
    return answer.json()


def _operations(spec: dict):
    for path, operations in sorted(spec["paths"].items()):
        for method, op in sorted(operations.items()):
            yield method, path, op


def _changes(committed: dict, served: dict) -> list[str]:
    """What differs, operation by operation (then the rest), to say what the regeneration changes."""
    old = {(m, p): op for m, p, op in _operations(committed)}
    new = {(m, p): op for m, p, op in _operations(served)}
    changes = [f"{'added' if key in new else 'removed'}: {key[0].upper()} {key[1]}" for key in sorted(old.keys() ^ new)]
    changes += [f"changed: {m.upper()} {p}" for m, p in sorted(old.keys() & new) if old[(m, p)] != new[(m, p)]]
    rest = sorted(k for k in committed.keys() | served.keys() if k != "paths" and committed.get(k) != served.get(k))
    return changes + [f"changed: top-level '{k}'" for k in rest]


def test_committed_document_is_the_served_one(served):
    committed = json.loads(COMMITTED.read_text(encoding="utf-8"))
    changes = _changes(committed, served)
    assert not changes, (f"docs/openapi.json differs from the served /openapi.json ({'; '.join(changes[:20])}); "
                         f"regenerate it: {REGENERATE}")
    assert COMMITTED.read_text(encoding="utf-8") == gen_openapi.render(served), \
        f"docs/openapi.json is not in its canonical form (sorted keys, indent 2); regenerate it: {REGENERATE}"


def test_every_route_documents_its_problems(served):
    """Every /v1 route needs a credential and documents 401, 403 and 422 as problem+json with the
    Problem schema; so does every other error answer of every route."""
    missing = []
    for method, path, op in _operations(served):
        label = f"{method.upper()} {path}"
        if path.startswith("/v1/"):
            if not op.get("security"):
                missing.append(f"{label}: no security requirement")
            missing += [f"{label}: no {code}" for code in ("401", "403", "422") if code not in op["responses"]]
        for code, response in op["responses"].items():
            schema = response.get("content", {}).get(PROBLEM, {}).get("schema")
            if code[0] in "45" and (set(response.get("content", {})) != {PROBLEM}
                                    or schema != {"$ref": "#/components/schemas/Problem"}):
                missing.append(f"{label}: {code} is not documented as problem+json with the Problem schema")
    assert "Problem" in served["components"]["schemas"]
    assert not missing, "\n".join(missing)


def test_every_write_documents_idempotency_key(served):
    writes = [(m, p, op) for m, p, op in _operations(served) if m != "get" and (m, p) not in READ_ONLY_POSTS]
    assert len(writes) > 30  # every event type, the scenario, votes, jobs, users, tokens
    missing = [f"{m.upper()} {p}" for m, p, op in writes
               if not any(x["in"] == "header" and x["name"] == "Idempotency-Key" for x in op.get("parameters", []))]
    assert not missing, f"writes without an Idempotency-Key header: {', '.join(missing)}"
