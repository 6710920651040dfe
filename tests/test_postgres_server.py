"""Tests for the throwaway PostgreSQL helper in ``postgres_server``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import postgres_server
from postgres_server import PostgresServer, create_database, drop_database, unavailable_reason

pytestmark = pytest.mark.postgres


def test_start_create_query_drop_stop():
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = PostgresServer().start()
    try:
        assert server.url and server.url.startswith("postgresql+psycopg://")
        db_url = create_database(server.url, "gpufleet_selftest")
        assert db_url.endswith("/gpufleet_selftest")
        assert db_url.startswith("postgresql+psycopg://")

        import psycopg

        with psycopg.connect(postgres_server._libpq_url(db_url)) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
            assert conn.execute("select current_database()").fetchone() == ("gpufleet_selftest",)
        drop_database(server.url, "gpufleet_selftest")
        with psycopg.connect(postgres_server._libpq_url(server.url)) as conn:
            rows = conn.execute(
                "select 1 from pg_database where datname = 'gpufleet_selftest'"
            ).fetchall()
        assert rows == []
    finally:
        tmpdir = server.tmpdir
        server.stop()
    if not server.external:
        assert tmpdir is not None and not Path(tmpdir).exists()
        assert server.url is None


def test_external_url_is_adopted_and_not_stopped(monkeypatch):
    monkeypatch.setenv(postgres_server.ENV_URL, "postgresql://u@db.example:5433/x")
    server = PostgresServer().start()
    assert server.url == "postgresql+psycopg://u@db.example:5433/x"
    server.stop()
    assert server.url == "postgresql+psycopg://u@db.example:5433/x"


def test_install_commands_are_noninteractive():
    cmds = [cmd for cmd, _ in postgres_server.APT_COMMANDS]
    assert cmds[0] == ["apt-get", "update"]
    assert cmds[1][:3] == ["apt-get", "install", "-y"] and "postgresql" in cmds[1]
    assert all(timeout > 0 for _, timeout in postgres_server.APT_COMMANDS)


def test_install_path_uses_apt_when_binaries_missing(monkeypatch):
    calls = []

    def fake_run(cmd, timeout=120, env=None):
        calls.append((cmd, env))
        return postgres_server.subprocess.CompletedProcess(cmd, 100, "", "E: no network\n")

    monkeypatch.delenv(postgres_server.ENV_URL, raising=False)
    monkeypatch.setattr(postgres_server, "find_bindir", lambda: None)
    monkeypatch.setattr(postgres_server, "_is_root", lambda: True)
    monkeypatch.setattr(postgres_server, "_run", fake_run)
    postgres_server.unavailable_reason.cache_clear()
    try:
        reason = postgres_server.unavailable_reason()
    finally:
        postgres_server.unavailable_reason.cache_clear()
    assert reason == "could not install PostgreSQL: `apt-get update` failed (rc=100): E: no network"
    assert calls[0][0] == ["apt-get", "update"]
    assert calls[0][1]["DEBIAN_FRONTEND"] == "noninteractive"


def test_binaries_found():
    if os.environ.get(postgres_server.ENV_URL) or unavailable_reason():
        pytest.skip("external server or PostgreSQL unavailable")
    bindir = postgres_server.find_bindir()
    assert bindir is not None and (bindir / "initdb").is_file()
