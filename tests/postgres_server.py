"""A throwaway PostgreSQL server for the test suite (stdlib + psycopg only).

``PostgresServer().start()`` runs ``initdb`` + ``pg_ctl`` in a fresh temporary
directory on a free port; ``stop()`` shuts it down and removes the directory.
If ``GPUFLEET_TEST_PG_URL`` is set, that server is used instead and never stopped.
Binaries come from ``/usr/lib/postgresql/<newest>/bin``; when missing and running
as root they are installed with apt-get.  ``initdb`` refuses to run as root, so
as root everything runs as the system user ``pgtest`` (created on demand).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ENV_URL = "GPUFLEET_TEST_PG_URL"
PG_ROOT = Path("/usr/lib/postgresql")
PG_USER = "pgtest"
APT_COMMANDS = (
    (["apt-get", "update"], 300),
    (["apt-get", "install", "-y", "--no-install-recommends", "postgresql"], 900),
)


def _run(cmd: list[str], timeout: float = 120, env: dict[str, str] | None = None):
    """Run ``cmd`` without stdin (cwd ``/``), capturing output; never raises on failure."""
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, env=env, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(cmd, -1, "", f"{type(exc).__name__}: {exc}")


def _is_root() -> bool:
    return os.geteuid() == 0


def find_bindir() -> Path | None:
    """Return the newest ``/usr/lib/postgresql/<ver>/bin`` that has initdb and pg_ctl."""
    dirs = [d / "bin" for d in PG_ROOT.glob("*") if d.name.isdigit()] if PG_ROOT.is_dir() else []
    for bindir in sorted(dirs, key=lambda p: int(p.parent.name), reverse=True):
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def _install() -> str | None:
    """Install PostgreSQL from Debian packages; return an error line or None."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd, timeout in APT_COMMANDS:
        res = _run(cmd, timeout=timeout, env=env)
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
            return f"`{' '.join(cmd)}` failed (rc={res.returncode}): {tail[0]}"
    return None


@functools.cache
def unavailable_reason() -> str | None:
    """One-line reason why no PostgreSQL server can be had, or None if one can."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed"
    if os.environ.get(ENV_URL):
        return None
    if find_bindir() is None:
        if not _is_root():
            return f"PostgreSQL binaries not found under {PG_ROOT} and not root to install them"
        err = _install()
        if err or find_bindir() is None:
            return f"could not install PostgreSQL: {err or 'no binaries after apt-get install'}"
    if _is_root():
        if _run(["id", "-u", PG_USER]).returncode != 0:
            res = _run(["useradd", "-m", PG_USER])
            if res.returncode != 0:
                return f"cannot create user {PG_USER}: {res.stderr.strip()}"
        if shutil.which("runuser") is None:
            return "running as root but `runuser` is not available"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A PostgreSQL server for tests; ``url`` is a SQLAlchemy (psycopg) URL."""

    def __init__(self) -> None:
        self.url: str | None = None
        self.port: int | None = None
        self.tmpdir: Path | None = None
        self.external = bool(os.environ.get(ENV_URL))

    def _cmd(self, *args: str) -> list[str]:
        return (["runuser", "-u", PG_USER, "--"] if _is_root() else []) + list(args)

    def start(self) -> "PostgresServer":
        """Start the server (or adopt ``GPUFLEET_TEST_PG_URL``); raise RuntimeError on failure."""
        if self.external:
            self.url = _sqlalchemy_url(os.environ[ENV_URL])
            return self
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        bindir = find_bindir()
        self.tmpdir = Path(tempfile.mkdtemp(prefix="gpufleet-pg-"))
        atexit.register(self.stop)
        if _is_root():
            shutil.chown(self.tmpdir, PG_USER, PG_USER)
        data, log = self.tmpdir / "data", self.tmpdir / "log"
        res = _run(self._cmd(str(bindir / "initdb"), "-D", str(data), "-U", "gpufleet",
                             "--auth=trust", "-E", "UTF8"))
        if res.returncode != 0:
            self.stop()
            raise RuntimeError(f"initdb failed (rc={res.returncode}):\n{res.stdout}{res.stderr}")
        for _attempt in range(3):  # a fresh port each time, in case another process took it
            self.port = _free_port()
            opts = f"-p {self.port} -k {self.tmpdir} -c listen_addresses=127.0.0.1 -c fsync=off"
            res = _run(self._cmd(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts,
                                 "-l", str(log), "-w", "-t", "60", "start"), timeout=90)
            if res.returncode == 0:
                break
        else:
            tail = log.read_text(errors="replace").splitlines()[-20:] if log.exists() else []
            self.stop()
            raise RuntimeError(f"pg_ctl start failed (rc={res.returncode}): "
                               f"{res.stdout}{res.stderr}\nserver log tail:\n" + "\n".join(tail))
        self.url = f"postgresql+psycopg://gpufleet@127.0.0.1:{self.port}/postgres"
        return self

    def stop(self) -> None:
        """Stop the server and remove its directory (no-op if external or already stopped)."""
        if self.tmpdir is None:
            return
        tmpdir, self.tmpdir, self.url = self.tmpdir, None, None
        atexit.unregister(self.stop)
        data = tmpdir / "data"
        bindir = find_bindir()
        if bindir and (data / "postmaster.pid").exists():
            _run(self._cmd(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"))
        shutil.rmtree(tmpdir, ignore_errors=True)

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _sqlalchemy_url(url: str) -> str:
    """Normalise a postgres URL to the ``postgresql+psycopg://`` SQLAlchemy form."""
    parts = urlsplit(url)
    if parts.scheme in ("postgres", "postgresql"):
        parts = parts._replace(scheme="postgresql+psycopg")
    return urlunsplit(parts)


def _libpq_url(url: str) -> str:
    """Turn a SQLAlchemy URL into a libpq one that psycopg accepts."""
    return urlunsplit(urlsplit(url)._replace(scheme="postgresql"))


def _admin_execute(url: str, statement) -> None:
    import psycopg
    with psycopg.connect(_libpq_url(url), autocommit=True) as conn:
        conn.execute(statement)


def create_database(url: str, name: str) -> str:
    """Create an empty database ``name`` on the server at ``url``; return its SQLAlchemy URL."""
    from psycopg import sql
    _admin_execute(url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _sqlalchemy_url(urlunsplit(urlsplit(url)._replace(path="/" + name)))


def drop_database(url: str, name: str) -> None:
    """Drop database ``name`` (if it exists), forcibly disconnecting its sessions."""
    from psycopg import sql
    _admin_execute(url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
