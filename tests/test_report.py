"""The board report: one self-contained HTML file, every section present, every chart with data,
and it renders in a real (headless, offline) Chromium with no console errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import date
from pathlib import Path

import pytest

from gpufleet.reports.board import SECTION_TITLES, write_report
from gpufleet.services.demo import example_path
from gpufleet.services.fleet import FleetService

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
# How Chromium runs on this project's machines (no display, closed network). Playwright adds
# --headless itself (headless=True) and takes the fresh profile as its own argument.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]
EXAMPLE_FIGURES = ["figure-1", "figure-2", "figure-3", "figure-5"]  # section 4, 6, 7 are tables


@pytest.fixture(scope="module")
def example_service(tmp_path_factory) -> FleetService:
    service = FleetService.open(str(tmp_path_factory.mktemp("ledger") / "r.db"), create=True)
    service.load(example_path())
    return service


@pytest.fixture(scope="module")
def report(example_service, tmp_path_factory) -> Path:
    return write_report(example_service, tmp_path_factory.mktemp("report") / "board.html")


def figures(page: str) -> dict[str, list[dict]]:
    """Each ``Plotly.newPlot("id", data, ...)`` call in the page: div id -> traces."""
    decoder, found = json.JSONDecoder(), {}
    for match in re.finditer(r'Plotly\.newPlot\(\s*(?=")', page):
        div_id, end = decoder.raw_decode(page, match.end())
        comma = re.compile(r"\s*,\s*").match(page, end)
        found[div_id], _ = decoder.raw_decode(page, comma.end())
    return found


def has_data(trace: dict) -> bool:
    """A trace with at least one point (a list, or plotly's base64 typed array)."""
    values = [trace.get(axis) for axis in ("x", "y", "base")]
    return any(len(v.get("bdata", "")) if isinstance(v, dict) else len(v or []) for v in values)


def outside_scripts(page: str) -> str:
    """The page with the bodies of inline scripts removed (plotly.js quotes URLs in strings)."""
    return re.sub(r"(<script\b[^>]*>).*?(</script>)", r"\1\2", page, flags=re.S | re.I)


# -- the file ---------------------------------------------------------------------------


def test_the_report_is_self_contained(report):
    page = report.read_text(encoding="utf-8")
    markup = outside_scripts(page)
    assert not re.search(r"<script\b[^>]*\bsrc\s*=", page, re.I), "a script is loaded from elsewhere"
    assert not re.search(r"<link\b", markup, re.I), "a stylesheet or font is linked"
    assert not re.search(r"""\b(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", markup, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?(?:https?:)?//", markup, re.I), "CSS loads something"
    assert page.count("plotly.js v") == 1, "plotly.js must be embedded exactly once"


def test_the_report_has_every_section_and_the_ledger_header(report, example_service):
    page = report.read_text(encoding="utf-8")
    for number, title in enumerate(SECTION_TITLES, start=1):
        assert f"<h2>{number}. {title}</h2>" in page
    head = example_service.head()
    assert head.hash in page and "verifies" in page
    last = max(e.effective_date for e in example_service.events())
    assert f"As of <b>{last.isoformat()}</b>" in page  # the last effective date, never today
    assert "How to read this" in page


def test_every_figure_has_a_trace_with_data(report):
    found = figures(report.read_text(encoding="utf-8"))
    assert sorted(found) == EXAMPLE_FIGURES
    for div_id, traces in found.items():
        assert any(has_data(t) for t in traces), f"{div_id} has no data"


def test_the_tables_carry_the_governance_findings_with_evidence(report):
    page = report.read_text(encoding="utf-8")
    assert "swap:dec-2023-h100" in page and "executed_unapproved" in page  # related-party table
    assert "tesla-85k-h100-2024" in page  # claims
    assert "depreciation_<wbr>usd" in page and "net_<wbr>cost_<wbr>usd" in page  # chargeback columns
    findings = page.split("7. Audit findings", 1)[1]
    assert findings.index("sev-high") < findings.index("sev-info"), "most severe first"
    assert "<th>evidence_<wbr>seqs</th>" in findings and "<td>19</td>" in findings  # the swap event


def test_the_same_ledger_gives_the_same_bytes(report, example_service, tmp_path):
    again = write_report(example_service, tmp_path / "again.html")
    assert again.read_bytes() == report.read_bytes()


def test_start_and_end_bound_the_charts_the_chargeback_and_the_as_of_date(example_service, tmp_path):
    page = write_report(example_service, tmp_path / "q1.html", start=date(2024, 1, 1),
                        end=date(2024, 3, 31)).read_text(encoding="utf-8")
    assert "As of <b>2024-03-31</b>" in page
    fleet = figures(page)["figure-1"]
    assert {t["x"][0] for t in fleet} == {"2024-01-01"} and {t["x"][-1] for t in fleet} == {"2024-03-31"}
    chargeback = page.split("6. Chargeback", 1)[1].split("<h2>", 1)[0]
    assert ">2024-01<" in chargeback and ">2024-03<" in chargeback
    assert ">2023-12<" not in chargeback and ">2024-04<" not in chargeback


def test_an_empty_ledger_says_so_instead_of_drawing_empty_charts(tmp_path):
    service = FleetService.open(str(tmp_path / "empty.db"), create=True)
    page = write_report(service, tmp_path / "empty.html").read_text(encoding="utf-8")
    assert figures(page) == {} and "plotly.js v" not in page
    assert "The ledger records no GPUs in this period." in page
    assert "The ledger records no loans and no swaps." in page
    assert all(title in page for title in SECTION_TITLES)


# -- a real browser ---------------------------------------------------------------------


def chromium() -> Path:
    """Debian's Chromium, installed with scripts/install-chromium.sh when missing."""
    if not CHROMIUM.exists():
        try:
            done = subprocess.run([str(ROOT / "scripts" / "install-chromium.sh")], stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=1200)
            why = (done.stderr or done.stdout).strip()[-400:]
        except (OSError, subprocess.TimeoutExpired) as exc:
            why = f"{type(exc).__name__}: {exc}"
        if not CHROMIUM.exists():
            pytest.skip(f"Debian chromium is not installed and could not be installed: {why}")
    return CHROMIUM


def test_the_report_renders_offline_in_headless_chromium(report, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright missing: pip install -e '.[test]'")
    executable = chromium()
    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(executable), headless=True, args=CHROMIUM_FLAGS,
            timeout=60_000, viewport={"width": 1280, "height": 900}, env={**os.environ, "HOME": str(tmp_path)})
        try:
            page = context.new_page()
            page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda req: req.url.startswith("file:") or requests.append(req.url))
            page.goto(report.as_uri(), wait_until="load", timeout=60_000)
            n = len(EXAMPLE_FIGURES)
            page.wait_for_function("n => document.querySelectorAll('.js-plotly-plot').length === n", arg=n,
                                   timeout=30_000)
            rendered = page.evaluate("""() => Array.from(document.querySelectorAll('.js-plotly-plot'))
                .map(d => ({id: d.id, traces: (d.data || []).length, svgs: d.querySelectorAll('.main-svg').length}))""")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True, timeout=60_000)
        finally:
            context.close()
    assert errors == [], f"console errors: {errors}"
    assert requests == [], f"the page asked the network for {requests}"
    assert sorted(r["id"] for r in rendered) == EXAMPLE_FIGURES
    assert all(r["traces"] > 0 and r["svgs"] > 0 for r in rendered), rendered
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000, f"screenshot {shot}: {len(data)} bytes"


def stored_sweep(service: FleetService, folder: Path, samples: int = 16) -> Path:
    """A small supply sweep of ``service``'s ledger stored in ``folder`` (as ``gpufleet sweep supply --out``)."""
    from gpufleet.services.sweeps import runner, supply

    state = service.state()
    head = service.head()
    sweep = supply.supply_sweep(state, state.as_of, samples=samples, seed=3,
                                ledger={"seq": head.seq, "hash": head.hash})
    runner.run(sweep, store=runner.Store(folder, sweep))
    return folder


def test_a_stored_sweep_adds_the_risk_section_with_data(example_service, tmp_path):
    from gpufleet.reports.board import RISK_TITLE

    folder = stored_sweep(example_service, tmp_path / "risk.parquet")
    page = write_report(example_service, tmp_path / "board.html", sweeps=[folder]).read_text(encoding="utf-8")
    assert RISK_TITLE in page and "read from this ledger at its head" in page
    risk = {k: v for k, v in figures(page).items() if int(k.split("-")[1]) >= 100}
    assert len(risk) == 4  # a fan for each of the 3 entities and the claim probabilities
    assert all(any(has_data(t) for t in traces) for traces in risk.values())
    assert any("tesla-85k-h100-2024" in (t.get("name") or "") for traces in risk.values() for t in traces)


def test_a_sweep_of_another_ledger_is_refused_naming_its_inputs(example_service, tmp_path):
    from gpufleet.errors import InputError

    other = FleetService.open(str(tmp_path / "other.db"), create=True)
    other.load(ROOT / "tests" / "data" / "one-site.yaml")
    folder = stored_sweep(other, tmp_path / "other.parquet", samples=4)
    with pytest.raises(InputError, match="another ledger .inputs [0-9a-f]{64}"):
        write_report(example_service, tmp_path / "board.html", sweeps=[folder])
