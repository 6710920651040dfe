"""The dashboard in a real browser: a live server on a temporary database, Debian's Chromium driven by
Playwright (as tests/test_report.py drives it), signing in as a principal of tests/api_world.py, and a
checker every page passes: no console errors, no failed requests, every chart drawn with data, axe-core
(from the npm registry, scripts/install-axe.sh) finding nothing serious or critical, and a screenshot
saved under ``$GPUFLEET_ARTIFACTS`` (default: the test session's temporary folder).

Use it from a test module::

    from dashboard_browser import dashboard  # noqa: F401  (the module-scoped fixture)

    def test_x(dashboard):
        tab = dashboard.sign_in("tesla-viewer")
        tab.visit("/ui/fleet")
        tab.check("fleet-viewer")
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from api_world import LiveServer, World, build_world
from test_report import CHROMIUM_FLAGS, chromium

ROOT = Path(__file__).resolve().parents[1]
VIEWPORT = {"width": 1280, "height": 800}
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
BLOCKING = {"serious", "critical"}


def axe_source() -> str:
    """axe-core's script, fetched by scripts/install-axe.sh; the test is skipped (saying why) without npm."""
    try:
        done = subprocess.run([str(ROOT / "scripts" / "install-axe.sh")], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=400)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"axe-core could not be fetched from the npm registry: {type(exc).__name__}: {exc}")
    path = Path(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 and done.stdout.strip() else None
    if path is None or not path.is_file():
        pytest.skip(f"axe-core could not be fetched from the npm registry: {(done.stderr or done.stdout)[-400:]}")
    return path.read_text(encoding="utf-8")


def artifacts_dir(tmp_path_factory) -> Path:
    """Where screenshots go: ``$GPUFLEET_ARTIFACTS`` or a folder of the test session."""
    given = os.environ.get("GPUFLEET_ARTIFACTS")
    folder = Path(given) if given else tmp_path_factory.mktemp("dashboard-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Tab:
    """One principal's browser context and page, with what went wrong since the last :meth:`visit`."""

    dashboard: Dashboard
    who: str
    page: object
    errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    allowed_status: set[int] = field(default_factory=set)

    def listen(self) -> Tab:
        page = self.page
        page.on("console", lambda msg: msg.type == "error" and self._error(msg.text))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("requestfailed", lambda req: self.failed.append(f"{req.url}: {req.failure}"))
        page.on("response", lambda r: r.status >= 400 and r.status not in self.allowed_status
                and self.failed.append(f"{r.url}: HTTP {r.status}"))
        return self

    def _error(self, text: str) -> None:
        # a refused page (403/404 the test asked for) logs "Failed to load resource": not an error of the page
        if not (self.allowed_status and "Failed to load resource" in text):
            self.errors.append(text)

    def visit(self, path: str, expect: int = 200):
        """Open ``path`` (a dashboard URL) and wait for its charts; returns the navigation's response."""
        self.errors.clear()
        self.failed.clear()
        self.allowed_status = {expect} if expect >= 400 else set()
        response = self.page.goto(self.dashboard.server.url + path, wait_until="load", timeout=60_000)
        assert response is not None and response.status == expect, \
            f"{path}: HTTP {response and response.status}, wanted {expect}"
        self.wait_for_charts()
        return response

    def wait_for_charts(self) -> None:
        self.page.wait_for_function(
            "() => Array.from(document.querySelectorAll('[data-figure]')).every(d => d.dataset.rendered === '1')",
            timeout=30_000)

    def charts(self) -> list[dict]:
        """Each chart div of the page: its id and how many of its traces have points."""
        return self.page.evaluate("""() => Array.from(document.querySelectorAll('[data-figure]')).map(d => ({
            id: d.id, traces: (d.data || []).length, svgs: d.querySelectorAll('.main-svg').length,
            with_data: (d.data || []).filter(t => ['x', 'y', 'base'].some(k => t[k] && t[k].length > 0)).length}))""")

    def axe(self) -> list[dict]:
        """axe-core's serious and critical violations on the page as it is now."""
        if not self.page.evaluate("() => typeof window.axe !== 'undefined'"):
            self.page.evaluate(self.dashboard.axe_js + "\n;undefined")  # DevTools evaluation: the page's CSP allows it
        found = self.page.evaluate("""async tags => {
            const r = await axe.run(document, {runOnly: {type: 'tag', values: tags}});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))}));
        }""", AXE_TAGS)
        return [v for v in found if v["impact"] in BLOCKING]

    def check(self, name: str, charts: int | None = None) -> Path:
        """The checks every page passes; saves and returns its screenshot ``<name>.png``."""
        self.wait_for_charts()
        drawn = self.charts()
        assert all(c["svgs"] > 0 and c["with_data"] > 0 for c in drawn), f"{name}: a chart without data: {drawn}"
        if charts is not None:
            assert len(drawn) >= charts, f"{name}: {len(drawn)} charts, wanted {charts}: {drawn}"
        violations = self.axe()
        shot = self.dashboard.artifacts / f"{name}.png"
        self.page.screenshot(path=str(shot), full_page=True, timeout=60_000)
        assert self.errors == [], f"{name}: console errors: {self.errors}"
        assert self.failed == [], f"{name}: failed requests: {self.failed}"
        assert violations == [], f"{name}: accessibility violations: {violations}"
        return shot

    def close(self) -> None:
        self.page.context.close()


@dataclass
class Dashboard:
    """The live server, the world's tokens, the browser, and where artifacts go."""

    server: LiveServer
    world: World
    browser: object
    artifacts: Path
    axe_js: str
    tabs: list[Tab] = field(default_factory=list)

    def new_tab(self, who: str = "anonymous") -> Tab:
        context = self.browser.new_context(viewport=VIEWPORT, java_script_enabled=True)
        tab = Tab(self, who, context.new_page()).listen()
        self.tabs.append(tab)
        return tab

    def sign_in(self, who: str) -> Tab:
        """A fresh browser context signed in as ``who`` through the sign-in form (a principal of the world)."""
        tab = self.new_tab(who)
        tab.visit("/ui/login")
        tab.page.get_by_label("API token").fill(self.world.tokens[who])
        with tab.page.expect_navigation(wait_until="load"):
            tab.page.get_by_role("button", name="Sign in").click()
        assert "/ui/login" not in tab.page.url, f"sign-in as {who} failed: {tab.page.inner_text('main')[:300]}"
        tab.wait_for_charts()
        return tab


def start_dashboard(tmp_path_factory, setup=None, env: dict[str, str] | None = None):
    """Build the world, start the server and the browser; a generator for a module-scoped fixture.
    ``setup(world, folder)``: more of the world before the server starts; ``env``: more of its environment."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright missing: pip install -e '.[test]'")
    executable = chromium()
    axe_js = axe_source()
    folder = tmp_path_factory.mktemp("dashboard")
    db = str(folder / "ui.db")
    world = build_world(db)
    if setup is not None:
        setup(world, folder)
    server = LiveServer(db, env={"GPUFLEET_UI_SECRET": os.urandom(32).hex(), **(env or {})}).start()
    home = folder / "home"
    home.mkdir()
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(executable), headless=True, args=CHROMIUM_FLAGS,
                                         timeout=60_000, env={**os.environ, "HOME": str(home)})
            dashboard = Dashboard(server, world, browser, artifacts_dir(tmp_path_factory), axe_js)
            try:
                yield dashboard
            finally:
                for tab in dashboard.tabs:
                    try:
                        tab.page.context.close()
                    except Exception:  # closed by its test already
                        pass
                browser.close()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    """One server, one browser per test module."""
    yield from start_dashboard(tmp_path_factory)
