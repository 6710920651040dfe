"""The CLI as a client of ``gpufleet serve``: which server (``--server``, ``$GPUFLEET_URL`` or the stored
login), the stored credentials, and calls that answer what the local services answer, or raise the
:class:`GpufleetError` (and so the exit code) that the local command would.

Every write carries an ``Idempotency-Key`` (the user's, or a random one per invocation), so a request
retried after a lost connection is applied once; requests are retried on connection errors only.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer

from gpufleet import errors
from gpufleet.errors import GpufleetError

CONNECT_TIMEOUT_S, READ_TIMEOUT_S = 5.0, 60.0
RETRIES = 2  # after the first try, on a connection error only
POLL_S = (0.1, 1.0)  # a job is polled every 0.1 s at first, then up to every second
LOCAL_ONLY = frozenset({"init", "demo", "void", "report", "serve", "db", "users", "tokens", "access"})
# The problem ``type`` (after TYPE_BASE) decides the exit code; the HTTP status where the type is unknown.
EXIT_BY_TYPE = {
    "unauthenticated": 3, "forbidden": 3, "not-found": 3, "invalid-input": 3, "unknown-reference": 3,
    "invariant-violation": 3, "payload-too-large": 3, "conflict": 5, "precondition-failed": 5,
    "precondition-required": 5, "plan-infeasible": 6, "plan-failed": 6, "not-initialized": 4, "not-ready": 4,
    "ledger-corrupt": 1,
}
EXIT_BY_STATUS = {409: 5, 412: 5, 428: 5, 503: 4}


UsageError = typer.BadParameter.__bases__[0]  # typer's (vendored) click UsageError: exit 2, "Error: ..."


class RemoteError(GpufleetError):
    """The server refused the request (its problem's detail is the message), or could not be reached."""

    def __init__(self, message: str, exit_code: int, *, field: str | None = None):
        self.exit_code = exit_code
        super().__init__(message, field=field)


# -- where the credentials live ------------------------------------------------------------------


def credentials_path() -> Path:
    """``$XDG_CONFIG_HOME/gpufleet/credentials.json`` (default ``~/.config/gpufleet/...``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gpufleet" / "credentials.json"


def read_credentials() -> dict | None:
    """The stored ``{"server", "token"}``, or None when there is none (or it is unreadable)."""
    path = credentials_path()
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise errors.InputError(f"cannot read the stored login ({exc}); `gpufleet logout` removes it",
                                location=str(path)) from None
    if not isinstance(stored, dict) or not isinstance(stored.get("server"), str) \
            or not isinstance(stored.get("token"), str):
        raise errors.InputError("not a stored login; `gpufleet logout` removes it", location=str(path))
    return stored


def store_credentials(server: str, token: str) -> Path:
    """Write the login readable by its owner only: the folder 0700, the file 0600 from its creation."""
    path = credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    building = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(building, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"server": server, "token": token}, out)
            out.write("\n")
        os.replace(building, path)
    except BaseException:
        building.unlink(missing_ok=True)
        raise
    return path


def normal_url(url: str, option: str = "--server") -> str:
    if not url.startswith(("http://", "https://")) or len(url) > 2000 or any(c.isspace() for c in url):
        raise typer.BadParameter(f"'{url[:100]}' is not an http:// or https:// URL", param_hint=option)
    return url.rstrip("/")


def resolve(server: str | None, token: str | None, db_source, server_source, *, quiet: bool = False
            ) -> Remote | None:
    """The server the everyday commands talk to, or None for the local database. ``--db`` on the command
    line always means the local database; otherwise ``--server`` > ``$GPUFLEET_URL`` > the stored login
    (which ``$GPUFLEET_DB`` also sets aside). A token: ``--token`` > ``$GPUFLEET_TOKEN`` > the stored one
    (for the same server). ``quiet``: an unreadable stored login counts as none (for login and logout)."""
    db_from = getattr(db_source, "name", "")  # typer's ParameterSource: COMMANDLINE, ENVIRONMENT, DEFAULT
    db_given, db_env = db_from == "COMMANDLINE", db_from == "ENVIRONMENT"
    server_given = getattr(server_source, "name", "") == "COMMANDLINE"
    if db_given and server_given:
        raise UsageError("--db (a local database) and --server (a gpufleet server) exclude each other")
    if db_given:
        return None
    stored = None
    if not server:
        if db_env:
            return None
        stored = _stored_quietly() if quiet else read_credentials()
        if stored is None:
            return None
        server, source = stored["server"], f"the stored login ({credentials_path()})"
    else:
        source = "--server" if server_given else "$GPUFLEET_URL"
    server = normal_url(server)
    if not token:
        stored = stored or _stored_quietly()
        token = stored["token"] if stored and normal_url(stored["server"]) == server else None
    return Remote(server, token, source)


def _stored_quietly() -> dict | None:
    try:
        return read_credentials()
    except errors.InputError:
        return None


# -- talking to the server -----------------------------------------------------------------------


class Remote:
    """One server, one token; every method answers what the local service answers."""

    def __init__(self, server: str, token: str | None, source: str = "--server"):
        self.server, self.token, self.source = server, token, source
        self._client = None

    def _http(self):
        import httpx

        if self.token is None:
            raise RemoteError(f"no token for {self.server}: run `gpufleet login --server {self.server}` or set "
                              "GPUFLEET_TOKEN", 3)
        if self._client is None:
            from gpufleet import __version__

            self._client = httpx.Client(
                base_url=self.server, timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
                headers={"Authorization": f"Bearer {self.token}", "User-Agent": f"gpufleet-cli/{__version__}"})
        return self._client

    def request(self, method: str, path: str, *, params: dict | None = None, body: Any = None,
                content: bytes | None = None, headers: dict | None = None, key: str | None = None) -> Any:
        """The answer's JSON; a write (any method but GET) carries ``key`` or a fresh Idempotency-Key,
        which makes retrying it after a connection error safe."""
        import httpx

        client = self._http()
        headers = dict(headers or {})
        if method != "GET":
            headers["Idempotency-Key"] = key or secrets.token_urlsafe(24)
        params = {k: v for k, v in (params or {}).items() if v is not None and v != []}
        for attempt in range(RETRIES + 1):
            try:
                response = client.request(method, path, params=params, json=body, content=content, headers=headers)
                break
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError,
                    httpx.WriteError) as exc:
                if attempt == RETRIES:
                    raise RemoteError(f"cannot reach the server at {self.server} ({self.source}): "
                                      f"{_reason(exc)}", 4) from None
                time.sleep(0.2 * (attempt + 1))
            except httpx.TimeoutException:
                raise RemoteError(f"the server at {self.server} did not answer within {READ_TIMEOUT_S:.0f} s", 4) \
                    from None
        if response.status_code >= 400:
            raise self.refusal(response)
        return response

    def refusal(self, response) -> RemoteError:
        """The problem+json answer as the error the local command would raise (its exit code)."""
        try:
            problem = response.json()
        except ValueError:
            problem = None
        if not isinstance(problem, dict):
            problem = {"detail": f"HTTP {response.status_code} from {self.server}"}
        kind = str(problem.get("type", "")).rsplit("/", 1)[-1]
        status = response.status_code
        code = EXIT_BY_TYPE.get(kind) or EXIT_BY_STATUS.get(status) or (70 if status >= 500 else 3)
        detail = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
        if status == 401:
            detail += f" (at {self.server}, token from {self._token_source()}; `gpufleet login` stores a new one)"
        elif status >= 500 and kind not in EXIT_BY_TYPE:
            detail = f"the server failed: {detail} (request id {response.headers.get('x-request-id', '?')})"
        return RemoteError(detail, code)

    def _token_source(self) -> str:
        if "--token" in sys.argv:
            return "--token"
        return "$GPUFLEET_TOKEN" if os.environ.get("GPUFLEET_TOKEN") else "the stored login"

    def get(self, path: str, **params) -> Any:
        return self.request("GET", path, params=params).json()

    # -- what the commands need ----------------------------------------------------------------

    def me(self) -> dict:
        return self.get("/v1/me")

    def status(self, as_of, known_at, entity) -> dict:
        return self.get("/v1/status", as_of=as_of and as_of.isoformat(), known_at=known_at, entity=entity)

    def events(self, since: int, until: int | None, types, limit: int | None) -> list[dict]:
        """Every page from ``since`` (exclusive) to ``until`` (inclusive), at most ``limit``, in the
        local command's key order."""
        from dataclasses import fields

        from gpufleet.domain.chain import Event

        order = [f.name for f in fields(Event)]
        rows: list[dict] = []
        cursor = since
        while limit is None or len(rows) < limit:
            page = self.get("/v1/events", since_seq=cursor, type=list(types),
                            limit=1000 if limit is None else min(1000, limit - len(rows)))
            for event in page["events"]:
                if until is not None and event["seq"] > until:
                    return rows
                rows.append({name: event[name] for name in order})
            if page["next_since_seq"] is None:  # a page may hold none yet say where to go on
                break
            cursor = page["next_since_seq"]
        return rows[:limit]

    def head(self) -> dict:
        return self.get("/v1/ledger/head")

    def record(self, event_type: str, data: dict, on, key: str | None) -> dict:
        return self.request("POST", f"/v1/events/{event_type}", params={"on": on and on.isoformat()}, body=data,
                            key=key).json()

    def load(self, path: Path, key: str | None = None) -> dict:
        return self.request("POST", "/v1/scenario", content=path.read_bytes(), key=key,
                            headers={"Content-Type": "application/yaml"}).json()

    def approvals(self) -> list[dict]:
        """As ``approvals list`` prints them: without the server's ``version`` and ``proposal``."""
        return [{k: v for k, v in row.items() if k not in ("version", "proposal")}
                for row in self.get("/v1/approvals")]

    def vote(self, subject: str, decision: str, reason: str, key: str | None = None, sign=None) -> dict:
        """Read the transaction, then vote at the version read (If-Match: its ETag); ``sign(terms,
        content_sha256)``, if given, signs the terms read here and answers the vote's signature fields."""
        path = f"/v1/approvals/{quote(subject, safe=':')}"
        read = self.request("GET", path)
        body = {"decision": decision, "reason": reason}
        if sign is not None:
            row = read.json()
            body |= sign(row.get("terms") or {}, row.get("content_sha256"))
        return self.request("POST", f"{path}/votes", body=body, headers={"If-Match": read.headers.get("etag", "*")},
                            key=key).json()

    def audit(self) -> list[dict]:
        return self.get("/v1/audit")

    def costs(self, month, entity, life_years: float, usd_per_kwh: float) -> list[dict]:
        return self.get("/v1/costs", month=month, entity=entity, life_years=life_years, usd_per_kwh=usd_per_kwh)

    def verify(self, expect: list[str], replay: bool) -> dict:
        return self.job("/v1/ledger/verify", {"expect": expect, "replay": replay}, "verifying the ledger")

    def plan(self, params: dict) -> Any:
        return self.job("/v1/plans", params, "planning")

    def job(self, path: str, body: dict, label: str) -> Any:
        """Submit a job, wait for it (progress on standard error in a terminal), and answer its result;
        a failed job raises the error it failed with."""
        from gpufleet.cli.render import errors as stderr

        accepted = self.request("POST", path, body=body).json()
        url, delay = accepted["url"], POLL_S[0]
        if stderr.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[message]}"),
                          TimeElapsedColumn(), console=stderr, transient=True) as bar:
                task = bar.add_task(label, total=1.0, message="queued")
                while (job := self.get(url))["state"] not in ("succeeded", "failed", "interrupted"):
                    bar.update(task, completed=job["progress"], message=job["message"])
                    time.sleep(delay)
                    delay = min(POLL_S[1], delay * 1.5)
        else:
            while (job := self.get(url))["state"] not in ("succeeded", "failed", "interrupted"):
                time.sleep(delay)
                delay = min(POLL_S[1], delay * 1.5)
        if job["state"] == "succeeded":
            return job["result"] if job.get("result") is not None or not job.get("result_url") \
                else self.get(job["result_url"])
        if job["state"] == "interrupted":
            raise RemoteError(f"job {job['job_id']} was interrupted: {job['message']}", 4)
        problem = job.get("problem") or {}
        title = str(problem.get("title"))
        code = 70 if title == "InternalError" else next(
            (cls.exit_code for cls in _subclasses(GpufleetError) if cls.__name__ == title), 3)
        detail = problem.get("detail") or job["message"]
        if code == 70:
            detail = f"the server's job {job['job_id']} failed: {detail}"
        raise RemoteError(detail, code)


def _subclasses(cls: type) -> list[type]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _subclasses(direct))]


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return "connection refused (is `gpufleet serve` running there?)" if "refused" in text.lower() else text


def refuse_option(option: str, why: str) -> Exception:
    """A local-only option given in client mode: a usage error (exit 2) saying why."""
    return UsageError(f"{option} is not taken in client mode: {why}")


def local_only(command: str, remote: Remote) -> Exception:
    return UsageError(f"`gpufleet {command}` works on a local database only, and a server is configured "
                      f"({remote.server}, from {remote.source}); give --db PATH to use a local database")


# -- login and logout ----------------------------------------------------------------------------


def login(server: Annotated[str | None, typer.Option("--server", help="the server's URL (default: the root "
                                                     "--server, $GPUFLEET_URL or the stored login)")] = None) -> None:
    """Read an API token (standard input, or a hidden prompt), check it, and store it for this user (0600)."""
    from gpufleet.cli.app import Settings
    from gpufleet.cli.render import console

    url = server or (Settings.remote.server if Settings.remote is not None else None)
    if not url:
        raise UsageError("which server? give `gpufleet login --server URL` (or set GPUFLEET_URL)")
    url = normal_url(url)
    if sys.stdin.isatty():
        import getpass

        token = getpass.getpass(f"API token for {url}: ")
    else:
        token = sys.stdin.readline()
    token = token.strip()
    if not token:
        raise errors.InputError("no token given (paste it at the prompt, or pipe it on standard input)",
                                field="token")
    who = Remote(url, token, "login").me()
    path = store_credentials(url, token)
    console.print(f"logged in to {url} as {who['principal']} ({who['scope']}); credentials in {path}",
                  markup=False, highlight=False)


def logout() -> None:
    """Remove the stored login."""
    from gpufleet.cli.render import console

    path = credentials_path()
    try:
        path.unlink()
    except FileNotFoundError:
        console.print(f"not logged in (no {path})", markup=False, highlight=False)
        return
    console.print(f"logged out: removed {path}", markup=False, highlight=False)
