"""Dashboard benchmark: every page's server time (p50 / p99 over N loads, same run) and its time to first
render in Chromium, on the synthetic ledger of ``bench/ledger.py`` served by ``gpufleet serve``.

Run from the repository root, in the project's virtual environment::

    python bench/dashboard.py            # 1,000,000 events (several minutes to build)
    python bench/dashboard.py --quick    # 50,000 events: the smoke run
    python bench/dashboard.py --ledger /tmp/b1m/pristine.db --tokens /tmp/b1m/meta.json   # one built before

Server time is the wall time of a request on loopback (one keep-alive connection, the page's whole HTML
answer), signed in as a planner of one entity. Render: Debian's Chromium (Playwright, headless, 1280 x 800)
from navigation start to the first contentful paint, and to the last chart drawn (pages with charts).
Goals: under 300 ms server time and under 1 s to render.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from api import Server, build, percentile  # bench/api.py: the ledger builder and the server

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["fleet", "sites", "loans", "approvals", "claims", "plans", "cluster", "audit", "events"]
WHO = "bench-planner"
SERVER_GOAL_MS, RENDER_GOAL_MS = 300.0, 1000.0


def sign_in(url: str, token: str) -> httpx.Client:
    """A client holding a dashboard session (through the sign-in form, as a browser does)."""
    client = httpx.Client(base_url=url, timeout=120, follow_redirects=False)
    form = client.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    done = client.post("/ui/login", data={"csrf": csrf, "token": token, "next": "/ui/fleet"})
    if done.status_code != 303:
        raise SystemExit(f"sign-in refused: HTTP {done.status_code}")
    return client


def server_times(client: httpx.Client, path: str, loads: int) -> dict:
    """The first load (it computes what the server keeps per ledger head: what a reader pays after each
    write), then ``loads`` timed ones: first, p50, p99 (ms) and the status seen."""
    started = time.perf_counter()
    try:
        first = client.get(path)
    except httpx.TimeoutException:  # reported as such; the other pages are still measured
        return {"status": None, "first": float("inf"), "p50": float("inf"), "p99": float("inf")}
    cold = 1000 * (time.perf_counter() - started)
    times = []
    for _ in range(loads):
        started = time.perf_counter()
        answer = client.get(path)
        times.append(1000 * (time.perf_counter() - started))
        if answer.status_code != 200:
            raise SystemExit(f"{path}: HTTP {answer.status_code}: {answer.text[:300]}")
    times.sort()
    return {"status": first.status_code, "first": cold, "p50": statistics.median(times),
            "p99": percentile(times, 0.99)}


def render_times(url: str, cookie: str, paths: list[str]) -> dict[str, dict]:
    """Per path: first contentful paint and the last chart drawn, ms from navigation start (Chromium)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from playwright.sync_api import sync_playwright
    from test_report import CHROMIUM_FLAGS, chromium

    out = {}
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as home:
        browser = pw.chromium.launch(executable_path=str(chromium()), headless=True, args=CHROMIUM_FLAGS,
                                     env={"HOME": home})
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.add_cookies([{"name": "gpufleet_session", "value": cookie, "url": url + "/ui"}])
        page = context.new_page()
        for path in paths:
            page.goto(url + path, wait_until="load")  # warm: plotly.js cached, as a returning reader has it
            page.goto(url + path, wait_until="load")
            page.wait_for_function("() => Array.from(document.querySelectorAll('[data-figure]'))"
                                   ".every(d => d.dataset.rendered === '1')", timeout=60_000)
            out[path] = page.evaluate("""() => {
                const paint = performance.getEntriesByName('first-contentful-paint')[0];
                const charts = document.querySelectorAll('[data-figure]').length;
                return {fcp: paint ? paint.startTime : null, charts: charts,
                        drawn: charts ? performance.now() : null};
            }""")
        browser.close()
    return out


def copy_ledger(ledger: Path, tokens: Path, target: Path) -> tuple[dict[str, str], int]:
    """Copy ``ledger`` (and its write-ahead log, if any) to ``target``: the tokens and the events it holds."""
    if not ledger.is_file():
        raise SystemExit(f"--ledger: no file '{ledger}'")
    shutil.copyfile(ledger, target)
    if Path(f"{ledger}-wal").is_file():
        shutil.copyfile(f"{ledger}-wal", f"{target}-wal")
    found = json.loads(tokens.read_text())
    with contextlib.closing(sqlite3.connect(target)) as con:
        events = con.execute("SELECT seq FROM ledger_head").fetchone()[0]
    return found.get("tokens", found), events


def table(rows: list[dict], events: int, loads: int, who: str, write_on: str) -> Table:
    t = Table(title=f"Dashboard pages at {events:,} events as {who}: server time over {loads} loads, and the first "
                    f"load after one write dated {write_on}; render in Chromium")
    for name in ("page", "first load ms", "after a write ms", "server p50 ms", "server p99 ms", "goal", "met",
                 "first paint ms", "charts drawn ms", "goal", "met"):
        t.add_column(name, justify="left" if name == "page" else "right")
    for r in rows:
        render = max(v for v in (r["fcp"], r["drawn"]) if v is not None) if r["fcp"] is not None else None
        if r["status"] is None:
            t.add_row(r["path"], "timeout (120 s)", "", "", "", f"< {SERVER_GOAL_MS:,.0f}", "no", "", "", "", "")
            continue
        after = "–" if r.get("after_write") is None else f"{r['after_write']:,.1f}"
        t.add_row(r["path"], f"{r['first']:,.1f}", after, f"{r['p50']:,.1f}", f"{r['p99']:,.1f}",
                  f"< {SERVER_GOAL_MS:,.0f}",
                  "yes" if r["p99"] < SERVER_GOAL_MS else "no",
                  "–" if r["fcp"] is None else f"{r['fcp']:,.0f}",
                  "–" if r["drawn"] is None else f"{r['drawn']:,.0f}",
                  f"< {RENDER_GOAL_MS:,.0f}", "–" if render is None else ("yes" if render < RENDER_GOAL_MS else "no"))
    return t


def write_one(db: Path, on: str) -> None:
    """Record one GPU failure, as an operator's everyday write, dated ``on``: "frontier" (the ledger's last
    effective date: where a live ledger's writes land), "today", or a date (before the frontier: back-dated)."""
    from datetime import date

    from gpufleet.domain.events import GpusFailed
    from gpufleet.services.fleet import FleetService

    fleet = FleetService.open(str(db))
    with fleet.reading_head() as head:
        site, owner, model, _user = next(k for k, n in sorted(head.state.installed.items()) if n > 0)
        day = {"frontier": head.state.as_of, "today": date.today()}.get(on) or date.fromisoformat(on)
    fleet.record(GpusFailed(owner=owner, model=model, gpus=1, site=site), on=day, actor="bench", after_the_fact=True)
    fleet.engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="50,000 events")
    ap.add_argument("--loads", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ledger", type=Path, help="a ledger built before (an SQLite file, as bench/api.py builds it): "
                                                "measured on a copy, the file itself is left as it is")
    ap.add_argument("--tokens", type=Path, help="with --ledger: a JSON file of API tokens by principal (or an "
                                                "object whose 'tokens' is one, as bench/api.py's meta.json)")
    ap.add_argument("--who", default=WHO, help=f"the principal signed in (default {WHO})")
    ap.add_argument("--pages", default=",".join(PAGES), help="the pages measured, comma-separated (default: all)")
    ap.add_argument("--write-on", default="frontier", help="the date of the one write measured after: frontier "
                    "(the ledger's last effective date, default), today, or YYYY-MM-DD")
    args = ap.parse_args()
    pages = [p.strip() for p in args.pages.split(",") if p.strip()]
    if not pages or set(pages) - set(PAGES):
        ap.error(f"--pages: choose among {', '.join(PAGES)}")
    if (args.ledger is None) != (args.tokens is None):
        ap.error("--ledger and --tokens go together")
    events = 50_000 if args.quick else args.events
    console = Console(width=150)
    with tempfile.TemporaryDirectory(prefix="gpufleet-bench-ui-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        if args.ledger is not None:
            tokens, events = copy_ledger(args.ledger, args.tokens, Path(tmp) / "bench.db")
        else:
            with Progress(console=console) as progress:
                tokens, _middle, _last = build(url, events, args.seed, progress)
        if args.who not in tokens:
            raise SystemExit(f"no token for '{args.who}' (known: {', '.join(sorted(tokens))})")
        server = Server(url, 1, Path(tmp) / "server.log")
        try:
            server.wait_ready()
            client = sign_in(server.url, tokens[args.who])
            rows = []
            for name in pages:
                path = f"/ui/{name}"
                rows.append({"path": path} | server_times(client, path, args.loads))
                console.log(f"{path}: first {rows[-1]['first']:,.1f} ms, p50 {rows[-1]['p50']:,.1f} ms, "
                            f"p99 {rows[-1]['p99']:,.1f} ms")
            rendered = render_times(server.url, client.cookies["gpufleet_session"],
                                    [r["path"] for r in rows if r["status"] == 200])
            for r in rows:
                r |= rendered.get(r["path"], {"fcp": None, "drawn": None})
            write_one(Path(tmp) / "bench.db", args.write_on)
            for r in rows:  # what the first reader after a write pays (what the server kept is reused)
                started = time.perf_counter()
                ok = r["status"] == 200 and client.get(r["path"]).status_code == 200
                r["after_write"] = 1000 * (time.perf_counter() - started) if ok else None
                console.log(f"{r['path']} after a write: {r['after_write'] or float('inf'):,.1f} ms")
        finally:
            server.stop()
    console.print(table(rows, events, args.loads, args.who, args.write_on))


if __name__ == "__main__":
    main()
