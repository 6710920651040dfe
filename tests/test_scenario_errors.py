"""``gpufleet load`` on bad scenario files: a clear error naming file, line and field; nothing written.

Each case is a whole small file. The line the error must name is marked with ``# <-`` in the
file itself (a YAML comment), so the expectation sits next to the mistake.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

GPUFLEET = Path(sys.executable).parent / "gpufleet"
MARK = "# <-"


def run(*args: object, db: Path | str | None = None) -> subprocess.CompletedProcess:
    """``gpufleet [--db DB] ARGS...`` as a subprocess; never lets a traceback through."""
    cmd = [str(GPUFLEET)]
    if db is not None:
        cmd += ["--db", str(db)]
    cmd += [str(a) for a in args]
    env = {k: v for k, v in os.environ.items() if k not in ("GPUFLEET_DB", "GPUFLEET_DEBUG")}
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                          cwd=Path(db).parent if db is not None else None, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout, proc.stdout
    return proc


def left_behind(db: Path) -> list[str]:
    """What a refused ``load`` into the new path ``db`` left in its folder: nothing, it must be."""
    return sorted(p.name for p in db.parent.iterdir() if p.name.startswith(db.name) or p.name.startswith("." + db.name))


# A valid fleet: entities a, b; model h100; site s1 (100 slots, 1 MW); PO p1 with lot l1 (100 GPUs).
HEAD = """\
gpufleet: 1
name: t
start: 2024-01-01
entities:
  - {entity: a, name: A}
  - {entity: b, name: B}
gpu_models:
  - {model: h100, name: H100, watts: 700, memory_gb: 80}
sites:
  - site: s1
    name: S1
    owner: a
    capacity:
      - {step: s1-a, online_date: 2024-01-01, slots: 100, mw: 1}
purchase_orders:
  - po: p1
    buyer: a
    vendor: nvidia
    model: h100
    unit_price_usd: 30000
    on: 2024-01-05
    lots:
      - {lot: l1, gpus: 100, planned_date: 2024-03-01}
"""
DELIVER = "  - {type: lot_delivered, lot: l1, on: 2024-03-02}\n"
INSTALL_100 = "  - {type: gpus_installed, owner: a, model: h100, site: s1, gpus: 100, on: 2024-03-05}\n"


def events(*lines: str) -> str:
    return HEAD + "events:\n" + "".join(lines)


@dataclass(frozen=True)
class Bad:
    text: str
    field: str | None = None  # the last part of the field the error must name
    says: tuple[str, ...] = ()  # words the message must contain
    also_line: int | None = None  # another acceptable line (where the parser noticed the problem)
    code: int = 3


CASES = [
    pytest.param(Bad("gpufleet: 1\nname: [t  # <-\nstart: 2024-01-01\n", says=("malformed YAML",), also_line=3),
                 id="malformed-yaml-unclosed-bracket"),
    pytest.param(Bad("", says=("empty",)), id="empty-file"),
    pytest.param(Bad("- gpufleet: 1  # <-\n- name: t\n", says=("dictionary",)), id="list-at-top-level"),
    pytest.param(Bad("name: t  # <-\nstart: 2024-01-01\n", field="gpufleet", says=("required",)),
                 id="missing-version"),
    pytest.param(Bad(HEAD + "colour: red  # <-\n", field="colour", says=("Extra inputs",)),
                 id="unknown-top-level-key"),
    pytest.param(Bad(events("  - {type: lot_delivered, lot: l1, on: 2024-03-02, colour: red}  # <-\n"),
                     field="colour", says=("Extra inputs",)), id="unknown-field-in-item"),
    pytest.param(Bad(events(DELIVER, "  - {type: gpus_installed, owner: a, model: h100, site: nowhere, gpus: 10,"
                                     " on: 2024-03-05}  # <-\n"), field="site", says=("'nowhere'",)),
                 id="unknown-reference-site"),
    pytest.param(Bad(events("  - {type: lot_delivered, lot: l9, on: 2024-03-02}  # <-\n"), field="lot",
                     says=("'l9'",)), id="unknown-reference-lot"),
    pytest.param(Bad(events(DELIVER, "  - {type: gpus_installed, owner: a, model: h100, site: s1, gpus: -5,"
                                     " on: 2024-03-05}  # <-\n"), field="gpus", says=("greater than 0",)),
                 id="negative-gpus"),
    pytest.param(Bad(HEAD + "      - {lot: l2, gpus: 0, planned_date: 2024-03-01}  # <-\n", field="gpus",
                     says=("greater than 0",)), id="zero-gpus-in-lot"),
    pytest.param(Bad(events(DELIVER, "  - {type: gpus_installed, owner: a, model: h100, site: s1, gpus: \"many\","
                                     " on: 2024-03-05}  # <-\n"), field="gpus", says=("integer",)),
                 id="wrong-type-gpus"),
    pytest.param(Bad(events("  - {type: lot_delivered, lot: l1, on: tomorrow}  # <-\n"), field="on",
                     says=("date",)), id="bad-date-text"),
    pytest.param(Bad(events("  - {type: lot_delivered, lot: l1, on: 2024-02-30}  # <-\n"), field="on",
                     says=("date",)), id="bad-date-impossible-day"),
    pytest.param(Bad(HEAD + "      - {lot: l2, gpus: 5, planned_date: 2024-13-01}  # <-\n", field="planned_date",
                     says=("date",)), id="bad-date-impossible-month-names-field"),
    pytest.param(Bad(events("  - {type: lot_delivered, lot: l1, on: 2024-01-02}  # <-\n"), field="lot",
                     says=("'l1'", "2024-01-02")), id="lot-delivered-before-po-placed"),
    pytest.param(Bad(events(DELIVER, INSTALL_100,
                            "  - {type: loan_opened, loan: ln1, lender: a, borrower: b, model: h100, site: s1,"
                            " gpus: 40, end_date: 2024-03-01, on: 2024-04-01}  # <-\n"),
                     field="end_date", says=("ends on 2024-03-01", "not after its start 2024-04-01")),
                 id="loan-end-before-start"),
    pytest.param(Bad(HEAD.replace("  - {entity: b, name: B}\n", "  - {entity: a, name: A again}  # <-\n"),
                     field="entity", says=("'a' is already recorded",)), id="duplicate-entity-id"),
    pytest.param(Bad(HEAD.replace("  - po: p1\n", "  - po: p1  # <-\n")
                     + "      - {lot: l1, gpus: 5, planned_date: 2024-04-01}\n", field="purchase_orders.0",
                     says=("duplicate id 'l1'",), also_line=HEAD.count("\n") + 1), id="duplicate-lot-id-in-one-po"),
    pytest.param(Bad("gpufleet: 1\nname: t\nstart: 2024-01-01\nname: u  # <-\n", says=("duplicate key 'name'",)),
                 id="duplicate-yaml-key"),
    pytest.param(Bad(events(DELIVER, "  - {type: gpus_installed, owner: a, model: h100, site: s1, gpus: 30,"
                                     " on: 2024-03-05}\n",
                            "  - {type: loan_opened, loan: ln1, lender: a, borrower: b, model: h100, site: s1,"
                            " gpus: 40, end_date: 2024-06-01, on: 2024-04-01}  # <-\n"),
                     says=("holds 30", "cannot lend 40")), id="loan-larger-than-holding"),
    pytest.param(Bad(HEAD.replace("slots: 100", "slots: 60") + "events:\n" + DELIVER
                     + INSTALL_100.rstrip("\n") + "  # <-\n",
                     says=("would hold 100 GPUs", "60 slots")), id="install-more-than-slots"),
    pytest.param(Bad(HEAD.replace("mw: 1}", "mw: 0.05}") + "events:\n" + DELIVER
                     + INSTALL_100.rstrip("\n") + "  # <-\n",
                     says=("MW",)), id="install-more-than-power"),
    pytest.param(Bad(HEAD.replace("name: t\n", "name: t\nsources: {1: \"https://example.org\"}\n")
                     .replace("{entity: b, name: B}", "{entity: b, name: B, source: [1, 7]}  # <-"),
                     field="source", says=("source '7'",)), id="unknown-source-id"),
    pytest.param(Bad(events("  - {type: lot_teleported, lot: l1, on: 2024-03-02}  # <-\n"), field="events.0",
                     says=("lot_teleported",)), id="unknown-event-type"),
    pytest.param(Bad("gpufleet: 1\nname: &n [t, *n]  # <-\nstart: 2024-01-01\n", says=("alias",)),
                 id="recursive-yaml-alias"),
]


def marked_line(text: str) -> int | None:
    lines = [i for i, line in enumerate(text.splitlines(), 1) if MARK in line]
    assert len(lines) <= 1, "at most one marked line per case"
    return lines[0] if lines else 1  # unmarked: the empty file


@pytest.mark.parametrize("case", CASES)
def test_bad_file_is_refused_with_file_line_and_field(tmp_path, case: Bad):
    path = tmp_path / "bad.yaml"
    path.write_text(case.text, encoding="utf-8")
    db = tmp_path / "ledger.db"
    proc = run("load", path, db=db)
    err = proc.stderr
    assert proc.returncode == case.code, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {err}"
    reported = [int(n) for n in re.findall(re.escape(str(path)) + r":(\d+)", err)]
    assert reported, f"no {path.name}:LINE in: {err}"
    expected = {marked_line(case.text)} | ({case.also_line} if case.also_line else set())
    assert reported[0] in expected, f"line {reported[0]} reported, expected {sorted(expected)}: {err}"
    if case.field is not None:
        fields = re.findall(r"field '([^']*)'", err)
        assert any(f == case.field or f.endswith("." + case.field) for f in fields), f"no field {case.field}: {err}"
    for words in case.says:
        assert words in err, err
    assert left_behind(db) == []


def test_nonexistent_file(tmp_path):
    missing = tmp_path / "missing.yaml"
    db = tmp_path / "ledger.db"
    proc = run("load", missing, db=db)
    assert proc.returncode == 3
    assert f"{missing}: no such file" in proc.stderr
    assert left_behind(db) == []


VALID = """\
gpufleet: 1
name: once
start: 2024-01-01
entities:
  - {entity: a, name: A}
  - {entity: b, name: B}
gpu_models:
  - {model: h100, name: H100, watts: 700, memory_gb: 80}
"""


def test_valid_file_loaded_twice_fails_and_keeps_the_first_load(tmp_path):
    path = tmp_path / "once.yaml"
    path.write_text(VALID, encoding="utf-8")
    db = tmp_path / "ledger.db"
    first = run("load", path, db=db)
    assert first.returncode == 0, first.stderr
    head = re.search(r"head ([0-9a-f]{16})", first.stdout).group(1)
    second = run("load", path, db=db)
    assert second.returncode == 3, second.stderr
    assert f"{path}:5" in second.stderr  # the first item that already exists
    assert "field 'entity'" in second.stderr and "'a' is already recorded" in second.stderr
    rows = json.loads(run("events", "--format", "json", db=db).stdout)
    assert [r["event_type"] for r in rows] == ["entity_registered", "entity_registered", "gpu_model_registered"]
    assert rows[-1]["hash"].startswith(head)
