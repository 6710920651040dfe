"""Shared fixtures: a fresh ledger on SQLite and, where it can be started, on PostgreSQL."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import postgres_server
from gpufleet.ledger import db

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=30, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
_names = itertools.count()


@pytest.fixture(scope="session")
def pg_server():
    """One throwaway PostgreSQL server per test session (skipped only if it cannot exist)."""
    reason = postgres_server.unavailable_reason()
    if reason:
        pytest.skip(f"PostgreSQL unavailable: {reason}")
    server = postgres_server.PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server):
    """A fresh, empty PostgreSQL database for one test."""
    name = f"t{os.getpid()}_{next(_names)}"
    url = postgres_server.create_database(pg_server.url, name)
    yield url
    postgres_server.drop_database(pg_server.url, name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A fresh database URL on each backend: the same tests run on SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def engine(db_url):
    """An engine on a migrated, empty ledger."""
    eng = db.make_engine(db_url)
    db.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sqlite_engine(tmp_path):
    eng = db.make_engine(str(tmp_path / "ledger.db"))
    db.upgrade(eng)
    yield eng
    eng.dispose()
