"""Service benchmark: status (latest and as-of), POST an event, and bare /healthz, over loopback HTTP.

Run from the repository root, in the project's virtual environment::

    python bench/api.py                     # 1,000,000 events, SQLite and PostgreSQL (many minutes)
    python bench/api.py --quick             # 50,000 events, shorter runs: the smoke run
    python bench/api.py --events 200000 --backends postgres --duration 10

A ledger built by ``bench/ledger.py``'s generator is served by ``gpufleet serve --workers W``; the load
comes from a separate process (an asyncio + httpx client, ``python bench/api.py loadgen ...``) holding
one keep-alive connection per simulated client. PostgreSQL: ``GPUFLEET_BENCH_PG_URL`` (an empty
database), or else a throwaway server is started from ``/usr/lib/postgresql/<version>/bin`` with its
durable defaults (fsync and synchronous_commit on).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ledger import START, SyntheticFleet, append  # bench/ledger.py: the 1M-event generator

from gpufleet.ledger import db
from gpufleet.services import identity
from gpufleet.services.fleet import FleetService, make_payload

ENTITY = "cloud"  # the readers' and the writer's entity (one of the generator's)
PRINCIPALS = {"bench-viewer": "viewer", "bench-planner": "planner"}
CLIENTS = (1, 8, 32)


# -- the load generator (its own process) ------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def _load(url: str, path: str, token: str, clients: int, duration: float, post: str | None,
                revalidate: bool = False) -> dict:
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=120) as http:
        for _ in range(clients):  # open every connection before the clock starts
            await http.get("/healthz")
        if revalidate:  # a client polling for changes: it holds the answer and sends its ETag
            http.headers["If-None-Match"] = (await http.get(path)).headers["etag"]
        deadline = time.perf_counter() + duration

        async def client(n: int) -> None:
            i = 0
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                try:
                    if post is None:
                        r = await http.get(path)
                    else:
                        key = f"{post}-{n}-{i}"
                        r = await http.post(path, headers={"Idempotency-Key": key}, json={
                            "demand": key, "entity": ENTITY, "start": "2030-01-01", "end": "2030-02-01",
                            "gpus": 1 + i % 64, "value_usd_per_gpu_hour": 2.5})
                    status = r.status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                latencies.append(time.perf_counter() - t)
                if status not in (200, 201, 304):
                    errors[str(status)] = errors.get(str(status), 0) + 1
                i += 1

        started = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(clients)))
        elapsed = time.perf_counter() - started
    return {"count": len(latencies), "elapsed": elapsed, "errors": errors, "latencies": latencies}


def loadgen_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="bench/api.py loadgen")
    ap.add_argument("url")
    ap.add_argument("path")
    ap.add_argument("--token", default="")
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--post", default=None, help="POST a new demand per request, keys prefixed by this")
    ap.add_argument("--revalidate", action="store_true", help="send the answer's ETag (If-None-Match)")
    args = ap.parse_args(argv)
    result = asyncio.run(_load(args.url, args.path, args.token, args.clients, args.duration, args.post,
                               args.revalidate))
    json.dump(result, sys.stdout)


def run_load(url: str, path: str, token: str, clients: int, duration: float, post: str | None = None,
             revalidate: bool = False) -> dict:
    """Run the load generator in a separate process; its latencies, sorted, and the rate."""
    cmd = [sys.executable, __file__, "loadgen", url, path, "--token", token, "--clients", str(clients),
           "--duration", str(duration)] + (["--post", post] if post else []) + (["--revalidate"] * revalidate)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration * 20 + 300, check=True).stdout
    result = json.loads(out)
    lat = sorted(result["latencies"])
    return {"rate": result["count"] / result["elapsed"], "p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99),
            "count": result["count"], "errors": result["errors"]}


# -- PostgreSQL ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A throwaway PostgreSQL server with its durable defaults (as root, run as the user ``pgtest``)."""

    def __init__(self, workdir: Path):
        roots = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parents[1].name))
        if not roots:
            raise SystemExit("no PostgreSQL under /usr/lib/postgresql: install it, or set GPUFLEET_BENCH_PG_URL")
        self.bindir, self.dir = roots[-1].parent, Path(tempfile.mkdtemp(prefix="gpufleet-bench-pg-"))
        self.prefix = ["runuser", "-u", "pgtest", "--"] if os.geteuid() == 0 else []
        if self.prefix and subprocess.run(["id", "-u", "pgtest"], capture_output=True).returncode:
            subprocess.run(["useradd", "-m", "pgtest"], check=True)

    def start(self) -> str:
        if self.prefix:
            shutil.chown(self.dir, "pgtest", "pgtest")
        run = {"check": True, "capture_output": True, "cwd": "/"}
        subprocess.run([*self.prefix, str(self.bindir / "initdb"), "-D", str(self.dir / "data"), "-U", "gpufleet",
                        "--auth=trust", "-E", "UTF8"], **run)
        port = free_port()
        opts = f"-p {port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        subprocess.run([*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-o", opts,
                        "-l", str(self.dir / "log"), "-w", "start"], **run)
        import psycopg

        with psycopg.connect(f"postgresql://gpufleet@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        return f"postgresql+psycopg://gpufleet@127.0.0.1:{port}/bench"

    def stop(self) -> None:
        subprocess.run([*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast",
                        "-w", "stop"], capture_output=True, cwd="/")
        shutil.rmtree(self.dir, ignore_errors=True)


# -- the ledger and the server -------------------------------------------------------------------------------


def build(url: str, events: int, seed: int, progress: Progress) -> tuple[dict[str, str], str, str]:
    """The synthetic ledger, then the principals and their tokens; the tokens, the middle and the last
    date (writes are effective on the last: an earlier date would refold the history after it)."""
    engine = db.make_engine(url)
    db.upgrade(engine)
    gen = SyntheticFleet(seed)
    append(engine, gen.drafts(events), events, 10_000, progress, f"building {events:,} events")
    engine.dispose()
    fleet = FleetService.open(url)
    items = []
    for person, role in PRINCIPALS.items():
        items.append(("person_registered", {"person": person, "name": person}))
        items.append(("access_granted", {"principal": person, "entity": ENTITY, "role": role}))
    fleet.record_many([(make_payload(t, d), gen.day, None) for t, d in items], actor="bench-setup",
                      after_the_fact=True)  # dated with the synthetic history, after today
    tokens = {}
    for person in PRINCIPALS:
        identity.add_user(fleet, person)
        tokens[person] = identity.create_token(fleet, person, scope="write", name="bench").token
    fleet.engine.dispose()
    return tokens, (START + (gen.day - START) / 2).isoformat(), gen.day.isoformat()


class Server:
    """``gpufleet serve`` in a subprocess on a free port."""

    def __init__(self, url: str, workers: int, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "gpufleet", "--db", url, "serve", "--port",
                                      str(self.port), "--workers", str(workers)], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log, start_new_session=True)

    def wait_ready(self, timeout: float = 300) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited; see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit("the server did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
        self.log.close()


def warm(server: Server, path: str, token: str, clients: int = 32) -> float:
    """Until every worker has read the head state: one request (a cold read takes T seconds), then
    ``clients`` connections (spread over the workers) for 2T + 3 seconds."""
    t = time.perf_counter()
    cold = run_load(server.url, path, token, 1, 0.001)["p99"]
    run_load(server.url, path, token, clients, 2 * cold + 3)
    return time.perf_counter() - t


# -- the run --------------------------------------------------------------------------------------------------


def bench_backend(name: str, url: str, args, workdir: Path, console: Console) -> list[dict]:
    with Progress(console=console, transient=True) as progress:
        t = time.perf_counter()
        tokens, middle, last = build(url, args.events, args.seed, progress)
    console.print(f"{name}: built {args.events:,} events and the principals in {time.perf_counter() - t:,.0f} s")
    server = Server(url, args.workers, workdir / f"server-{name}.log")
    rows = []
    try:
        server.wait_ready()
        viewer, planner = tokens["bench-viewer"], tokens["bench-planner"]
        latest, past = "/v1/status", f"/v1/status?as_of={middle}"
        console.print(f"{name}: every worker reads the head state: {warm(server, latest, viewer):,.1f} s")
        # an as-of answer is folded once per worker and date (seconds at 1M events), then kept
        console.print(f"{name}: every worker folds the as-of state: {warm(server, past, viewer):,.1f} s")
        for label, path, token, again in [("GET /healthz", "/healthz", "", False),
                                          ("GET /v1/status (latest)", latest, viewer, False),
                                          ("GET /v1/status (latest, 304)", latest, viewer, True),
                                          (f"GET /v1/status?as_of={middle}", past, viewer, False)]:
            for clients in CLIENTS:
                r = run_load(server.url, path, token, clients, args.duration, revalidate=again)
                rows.append({"backend": name, "route": label, "clients": clients, **r})
                console.print(f"  {label}, {clients} clients: {r['rate']:,.0f} req/s, p50 {1000 * r['p50']:.1f} ms, "
                              f"p99 {1000 * r['p99']:.1f} ms, errors {r['errors'] or 0}")
        # a worker's first append folds its own head state (the read one is shared with readers, never
        # mutated): that cold start is paid once per worker, not per request, so it is not measured; it
        # comes after the reads, which every append makes refold their head state
        t = time.perf_counter()
        cold = run_load(server.url, f"/v1/events/demand_recorded?on={last}", planner, 1, 0.001, post="warm1")["p99"]
        run_load(server.url, f"/v1/events/demand_recorded?on={last}", planner, 8, 2 * cold + 3, post="warm8")
        console.print(f"{name}: every worker's first append (cold {cold:,.1f} s): {time.perf_counter() - t:,.1f} s")
        r = run_load(server.url, f"/v1/events/demand_recorded?on={last}", planner, 8, args.duration,
                     post=f"b{os.getpid()}")
        rows.append({"backend": name, "route": "POST /v1/events/demand_recorded", "clients": 8, **r})
        console.print(f"  POST, 8 clients: {r['rate']:,.0f} events/s, p50 {1000 * r['p50']:.1f} ms, "
                      f"p99 {1000 * r['p99']:.1f} ms, errors {r['errors'] or 0}")
        fleet = FleetService.open(url)
        report = fleet.verify()
        fleet.engine.dispose()
        if not report.ok:
            raise SystemExit(f"{name}: the ledger does not verify after the run: {report.reason}")
    finally:
        server.stop()
    return rows


def print_table(rows: list[dict], console: Console) -> None:
    table = Table(title="gpufleet service benchmark (loopback HTTP; ratios: to GET /healthz at the same clients)")
    for col in ("backend", "route", "clients", "req/s", "p50 ms", "p99 ms", "errors", "p50 / healthz",
                "req/s / healthz", "goal", "met"):
        table.add_column(col, justify="left" if col in ("backend", "route", "goal") else "right")
    base = {(r["backend"], r["clients"]): r for r in rows if r["route"] == "GET /healthz"}
    for r in rows:
        h = base.get((r["backend"], r["clients"]))
        goal, met = "", None
        if r["backend"] == "postgres" and r["route"].endswith("(latest)") and r["clients"] == 32:
            goal, met = "p99 < 50 ms", r["p99"] < 0.050
        if r["backend"] == "postgres" and r["route"].startswith("POST"):
            goal, met = "≥ 1,000 events/s", r["rate"] >= 1000
        table.add_row(r["backend"], r["route"], str(r["clients"]), f"{r['rate']:,.0f}", f"{1000 * r['p50']:.1f}",
                      f"{1000 * r['p99']:.1f}", str(sum(r["errors"].values())),
                      f"{r['p50'] / h['p50']:.1f}×" if h else "", f"{r['rate'] / h['rate']:.2f}" if h else "",
                      goal, "" if met is None else ("[green]yes" if met else "[red]NO"))
    console.print(table)


def main() -> None:
    if sys.argv[1:2] == ["loadgen"]:
        loadgen_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="50,000 events, 3 s per measure")
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--workers", type=int, default=4, help="server worker processes")
    ap.add_argument("--duration", type=float, default=10, help="seconds per measure")
    ap.add_argument("--seed", type=int, default=20240423)
    ap.add_argument("--db-dir", type=Path, default=None, help="where the SQLite file goes (default: a temp dir)")
    args = ap.parse_args()
    if args.quick:
        args.events, args.duration = min(args.events, 50_000), min(args.duration, 3)
    console, wall = Console(width=max(150, Console().width)), time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="gpufleet-bench-api-"))
    console.print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}; "
                  f"{args.events:,} events, {args.workers} server workers, {args.duration:g} s per measure")
    rows: list[dict] = []
    try:
        for name in args.backends.split(","):
            if name == "sqlite":
                folder = args.db_dir or workdir
                folder.mkdir(parents=True, exist_ok=True)
                rows += bench_backend(name, f"sqlite:///{folder / 'bench-api.db'}", args, workdir, console)
            elif name == "postgres":
                pg = None
                url = os.environ.get("GPUFLEET_BENCH_PG_URL")
                if not url:
                    pg = Postgres(workdir)
                    url = pg.start()
                try:
                    rows += bench_backend(name, url, args, workdir, console)
                finally:
                    if pg is not None:
                        pg.stop()
            else:
                raise SystemExit(f"unknown backend '{name}' (sqlite, postgres)")
    finally:
        print_table(rows, console)
        shutil.rmtree(workdir, ignore_errors=True)
    console.print(f"total wall time {time.perf_counter() - wall:,.1f} s")


if __name__ == "__main__":
    main()
