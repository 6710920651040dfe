"""The bundled 2024 H100 example and ``gpufleet demo``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gpufleet.domain.scenario import json_schema
from gpufleet.services.demo import example_path, run_demo
from gpufleet.services.scenario_io import read_scenario

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return run_demo(str(tmp_path_factory.mktemp("demo") / "demo.db"))


def by_entity(rows):
    return {r["entity"]: r for r in rows}


def test_the_repository_example_is_the_bundled_one():
    assert (ROOT / "examples" / "h100-2024.yaml").resolve() == example_path().resolve()


def test_every_item_of_the_example_carries_a_source_or_an_assumption():
    scenario, _ = read_scenario(example_path())
    sections = ["entities", "persons", "gpu_models", "sites", "purchase_orders", "demand", "claims", "events"]
    for section in sections:
        for i, item in enumerate(getattr(scenario, section)):
            assert item.source or item.assumption, f"{section}[{i}] has neither source nor assumption"
    assert scenario.sources, "the example lists its sources"


def test_demo_shows_the_swap_the_idle_gpus_and_the_claims(demo):
    assert demo["verified"]
    dec, apr, jun, end = demo["dates"]
    assert by_entity(dec["holdings"])["x"]["in_warehouse"] == 12_000  # the redirected GPUs reached X
    assert by_entity(dec["holdings"])["tesla"]["on_order"] == 12_000  # Tesla holds X's later slots instead
    swap = next(t for t in dec["transfers"] if t["kind"] == "slot_swap")
    assert (swap["from_entity"], swap["to_entity"], swap["gpus"]) == ("tesla", "x", 12_000)
    assert swap["hardware_value_usd"] == pytest.approx(0.5e9, rel=0.05)
    assert by_entity(apr["holdings"])["tesla"]["active"] == 35_000
    claim = {c["claim"]: c for c in end["claims"]}["tesla-85k-h100-2024"]
    assert claim["status"] in {"met", "missed"} and claim["target"] == 85_000


def test_the_april_record_could_not_support_the_85k_claim(demo):
    tesla = demo["forecast_2024_04_23_for_2024_12_31"]["holdings"][0]
    supported = tesla["active"] + tesla["in_warehouse"] + tesla["due_by_as_of"]
    assert supported < 85_000


def test_the_published_json_schema_is_generated_from_the_models():
    published = json.loads((ROOT / "docs" / "scenario.schema.json").read_text())
    assert published == json_schema(), "regenerate with: gpufleet schema scenario > docs/scenario.schema.json"


def test_the_event_reference_is_generated_from_the_models():
    import runpy

    render = runpy.run_path(str(ROOT / "scripts" / "gen_event_docs.py"))["render"]
    assert (ROOT / "docs" / "events.md").read_text() == render(), \
        "regenerate with: python scripts/gen_event_docs.py > docs/events.md"


def test_policies_from_december_2023_compare_hold_the_swap_and_a_dated_loan(demo):
    rows = {r["policy"]: r for r in demo["policies_2023_12_01"]["policies"]}
    hold, swap, loan = rows["hold"], rows["what happened"], rows["owner-first"]
    assert hold["loans"] == [] and hold["related_party_hardware_usd"] == 0
    assert swap["related_party_hardware_usd"] == pytest.approx(500.4e6)
    assert swap["tesla_delay_weeks"] > 0, "the swap delays Tesla"
    assert loan["tesla_delay_weeks"] <= 1e-6, "owner-first never delays the owner"
    (tesla_to_x,) = [x for x in loan["loans"] if (x["lender"], x["borrower"]) == ("tesla", "x")]
    assert tesla_to_x["start"] < "2024-06-30" and tesla_to_x["end"] <= "2024-12-31"
    assert any(r["date"] == tesla_to_x["end"] for r in loan["reclaims"]), "the loan ends with a dated reclaim"
    assert loan["idle_gpu_weeks"] < hold["idle_gpu_weeks"], "lending the surplus leaves fewer GPUs idle"
    assert loan["value_usd"]["tesla"] >= hold["value_usd"]["tesla"]


def test_the_demo_command_end_to_end(tmp_path):
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "gpufleet"
    done = subprocess.run([str(exe), "demo", "--demo-db", str(tmp_path / "d.db"), "--format", "json"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["verified"] and [d["as_of"] for d in body["dates"]] == [
        "2023-12-31", "2024-04-23", "2024-06-04", "2024-12-31"]
    assert {"policies_2023_12_01", "governance", "forecast_2024_04_23_for_2024_12_31"} <= set(body)
    report = Path(body["report"])
    assert report.exists() and "board report" in report.read_text()


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("│").split("│")]


def test_the_readme_shows_what_the_demo_prints(tmp_path):
    """The README's sample of `gpufleet demo`: its event count, head, table rows (a row may leave out
    trailing columns) and the forecast sentence are what the command prints; and the demo leaves no
    temporary folder behind."""
    import re
    import subprocess
    import sys

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    sample = readme.split("$ gpufleet demo\n", 1)[1].split("```", 1)[0]
    exe = Path(sys.executable).parent / "gpufleet"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([str(exe), "demo"], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    printed = done.stdout
    assert list(tmp_path.iterdir()) == [], "the demo left its temporary folder behind"
    count = re.search(r"redirection: (\d+) events", sample).group(1)
    assert f"redirection: {count} events" in printed
    head = re.search(r"head ([0-9a-f]{64})", sample).group(1)
    assert f"head {head}" in printed
    rows = [_cells(line) for line in printed.splitlines() if line.startswith("│")]
    for line in sample.splitlines():
        if line.startswith("│"):
            wanted = _cells(line)
            assert any(row[:len(wanted)] == wanted for row in rows), line
    sentence = " ".join(sample.split("On 2024-04-23 ", 1)[1].split("\n")[:2])
    assert "On 2024-04-23 " + sentence in " ".join(printed.split())
