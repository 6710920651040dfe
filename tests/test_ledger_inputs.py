"""Bad input to the ledger (scenario files, event payloads, plan files and the ledger CLI's own
options) is refused with a documented exit code, never 70, by a message that names the input, and
leaves the ledger byte for byte as it was (or, for a new path, absent). Issue 12, item 5.

The first table runs the real command as a subprocess, one case per bad input of the issue (about a
second each). The bulk checks (the YAML composer's counting, plan files, the envelope on both
databases, new paths) run in this process; the payloads' bounds at their edges are in
test_payload_bounds.py.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from gpufleet.domain import events as ev
from gpufleet.domain.types import MAX_SEQ
from gpufleet.errors import ConflictError, GpufleetError, InputError
from gpufleet.services import scenario_io
from gpufleet.services.fleet import FleetService, load_scenario
from gpufleet.services.plan_file import read_plan
from test_cli import BASE_SCENARIO, ok, run

# Valid on its own and on top of BASE_SCENARIO (new ids, recorded after the base's last event), so
# that each bad file below differs from a file that loads by the one bad input.
SMALL = """\
gpufleet: 1
name: small
start: 2024-06-01
entities:
  - {entity: x, name: X}
gpu_models:
  - {model: b200, name: B200, watts: 1000, memory_gb: 192}
sites:
  - site: sx
    name: SX
    owner: x
    pue: 1.2
    capacity:
      - {step: sx-1, online_date: 2024-06-01, slots: 10, mw: 1}
"""


def alias_bomb(levels: int = 7) -> str:
    """About 300 bytes that expand to 10^levels nodes (the issue's took 39 s and 4.7 GB at 10^7)."""
    lines = ["x0: &x0 [a, a, a, a, a, a, a, a, a, a]"]
    lines += [f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def po_with_lot_gpus(gpus: str) -> str:
    return (SMALL + "purchase_orders:\n  - {po: px, buyer: x, vendor: nvidia, model: b200, unit_price_usd: 30000,"
            f" lots: [{{lot: lx, gpus: {gpus}, planned_date: 2024-07-01}}]}}\n")


def plan_json(**loan_changes) -> str:
    loan = {"lender": "a", "borrower": "b", "model": "h100", "site": "s1", "gpus": 10.0, "start": "2024-05-06",
            "end": "2024-06-03", "last_day": "2024-06-02", "gpu_weeks": 40.0, "fee_usd_per_gpu_hour": 2.0,
            "reason": "b needs them"} | loan_changes
    return json.dumps({"status": "optimal", "policy": "owner-first", "start": "2024-05-06", "loans":
                       [{k: v for k, v in loan.items() if v is not None}], "installs": []})


@dataclass(frozen=True)
class Case:
    args: tuple  # after ``gpufleet --db DB``; "{file}" stands for the case's file
    code: int
    names: tuple[str, ...]  # what the message must name ("{file}" as above)
    file: str | bytes | None = None
    db: str = "ledger"  # a copy of the loaded ledger; "new": a path that does not exist; "file": --db FILE


LOAD = ("load", "{file}")
INSTALL = ("install", "--owner", "a", "--model", "h100", "--site", "s2", "--on", "2024-05-05", "--gpus")
LOAN = ("loan", "open", "ln2", "--lender", "a", "--borrower", "b", "--model", "h100", "--site", "s1",
        "--gpus", 10, "--end", "2024-09-01", "--on", "2024-05-01")

CASES = [
    # -- the file is read within bounds --------------------------------------------------------------
    pytest.param(Case(LOAD, 3, ("{file}:", "1,000,000 YAML nodes"), SMALL + alias_bomb()), id="yaml-alias-bomb"),
    pytest.param(Case(LOAD, 3, ("{file}:15:", "nested more than 32"), SMALL + "description: " + "[" * 500
                      + "]" * 500 + "\n"), id="yaml-nested-500"),
    pytest.param(Case(LOAD, 3, ("{file}:5:", "#x0000"), SMALL.replace("name: X", "name: X\0").encode()),
                 id="nul-byte-in-scenario"),
    pytest.param(Case(("record", "entity_registered", "--data", "[" * 50_000 + "]" * 50_000), 2,
                      ("--data", "nested too deeply")), id="data-json-nested-50000"),
    pytest.param(Case(("record", "event_voided", "--data", '{"seq": ' + "9" * 5000 + "}"), 2,
                      ("--data", "4300 digits")), id="data-json-5000-digit-number"),
    pytest.param(Case(("plan", "apply", "{file}"), 3, ("{file}", "4300 digits"), '{"start": ' + "9" * 5000 + "}"),
                 id="plan-file-5000-digit-number"),
    # -- numbers past any sane bound ------------------------------------------------------------------
    pytest.param(Case((*INSTALL, 10**12), 3, ("field 'gpus'", "10000000")), id="install-gpus-1e12"),
    pytest.param(Case(("record", "gpus_installed", "--on", "2024-05-05", "--data",
                       json.dumps({"owner": "a", "model": "h100", "site": "s2", "gpus": 10**30})), 3,
                      ("field 'gpus'", "10000000")), id="record-gpus-1e30"),
    pytest.param(Case(LOAD, 3, ("{file}:16:", "purchase_orders.0.lots.0.gpus", "10000000"),
                      po_with_lot_gpus(str(2**63))), id="scenario-gpus-2-pow-63"),
    pytest.param(Case(LOAD, 3, ("{file}:16:", "purchase_orders.0.lots.0.gpus"), po_with_lot_gpus("9" * 5000)),
                 id="scenario-gpus-5000-digits"),
    pytest.param(Case(("void", 2**64, "--reason", "typo"), 3, ("field 'seq'", str(MAX_SEQ))), id="void-2-pow-64"),
    pytest.param(Case(("events", "--since", 2**70), 2, ("--since",)), id="events-since-2-pow-70"),
    pytest.param(Case(("costs", "--month", "9999-12"), 3, ("field 'month'", "2199-12-31")), id="costs-month-9999"),
    pytest.param(Case(("loan", "reclaim", "ln1", "--gpus", 1, "--notice-given-on", "9999-12-31", "--on",
                       "2024-05-01"), 3, ("field 'notice_given_on'", "2199-12-31")), id="notice-on-9999-12-31"),
    # -- the database and the plan file ----------------------------------------------------------------
    pytest.param(Case(("status",), 3, ("field 'db'", "not a database"), "just some notes\n", db="file"),
                 id="db-is-a-text-file"),
    pytest.param(Case(LOAD, 3, ("{file}:16:", "cannot install 5"), SMALL + "events:\n  - {type: gpus_installed,"
                      " owner: x, model: b200, site: sx, gpus: 5, on: 2024-06-02}\n", db="new"),
                 id="load-into-new-path-refused-leaves-nothing"),
    pytest.param(Case(("plan", "apply", "{file}"), 3, ("{file}", "field 'loans.0.start'", "Field required"),
                      plan_json(start=None)), id="plan-file-missing-start"),
    # -- Infinity and NaN never reach the output -------------------------------------------------------
    pytest.param(Case(LOAD, 3, ("{file}:16:", "fee_usd_per_gpu_hour", "10000"), SMALL + "events:\n  - {type: "
                      "loan_opened, loan: lx, lender: x, borrower: a, model: b200, site: sx, gpus: 1, end_date: "
                      "2024-09-01, fee_usd_per_gpu_hour: 1.0e+308, on: 2024-06-02}\n"), id="scenario-fee-1e308"),
    pytest.param(Case((*LOAN, "--fee", "1e308"), 3, ("field 'fee_usd_per_gpu_hour'", "10000")),
                 id="loan-open-fee-1e308"),
    # -- loose validation tightened --------------------------------------------------------------------
    pytest.param(Case(LOAD, 3, ("{file}:1:", "field 'gpufleet'", "integer 1"),
                      SMALL.replace("gpufleet: 1", "gpufleet: true")), id="version-true"),
    pytest.param(Case(LOAD, 3, ("{file}:1:", "field 'gpufleet'", "integer 1"),
                      SMALL.replace("gpufleet: 1", "gpufleet: 1.0")), id="version-1.0"),
    pytest.param(Case(LOAD, 3, ("{file}:12:", "field 'sites.0.pue'", "valid number"),
                      SMALL.replace("pue: 1.2", "pue: true")), id="pue-true"),
    pytest.param(Case(LOAD, 3, ("{file}:7:", "field 'gpu_models.0.watts'", "finite number"),
                      SMALL.replace("watts: 1000", "watts: .nan")), id="watts-nan"),
    pytest.param(Case(("claim", "c1", "--claimant", "a", "--metric", "gpu_spend_usd", "--target", 5, "--deadline",
                       "2024-12-31", "--period-start", "2025-01-01", "--on", "2024-05-01"), 3,
                      ("period_start 2025-01-01 is after the deadline 2024-12-31",)), id="claim-period-after-deadline"),
    pytest.param(Case(LOAD, 3, ("{file}:20:", "field 'role'", "'p' already holds the role director in 'x'"),
                      SMALL + "persons:\n  - person: p\n    name: P\n    roles:\n"
                      "      - {person: p, entity: x, role: director}\n"
                      "      - {person: p, entity: x, role: director}\n"), id="same-role-twice"),
    pytest.param(Case(("retire", "--owner", "a", "--model", "h100", "--gpus", 1, "--site", "s1", "--from-failed",
                       "--on", "2024-05-01"), 3, ("site", "from_failed", "not both")), id="retire-site-and-from-failed"),
]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> Path:
    """The CLI tests' base ledger (read-only here: each case works on a copy)."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "base.yaml").write_text(BASE_SCENARIO, encoding="utf-8")
    ok("load", root / "base.yaml", db=root / "base.db")
    return root / "base.db"


def files_named(db: Path) -> list[str]:
    return sorted(p.name for p in db.parent.iterdir() if db.name in p.name)


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_naming_it_and_the_ledger_is_unchanged(case: Case, loaded, tmp_path):
    file = tmp_path / "input.yaml"
    if case.file is not None:
        file.write_bytes(case.file if isinstance(case.file, bytes) else case.file.encode())
    db = {"ledger": tmp_path / "ledger.db", "new": tmp_path / "new.db", "file": file}[case.db]
    if case.db == "ledger":
        db.write_bytes(loaded.read_bytes())  # the base ledger is checkpointed: one file holds it all
    before = db.read_bytes() if db.exists() else None
    started = time.monotonic()
    proc = run(*(str(a).replace("{file}", str(file)) for a in case.args), db=db)
    elapsed = time.monotonic() - started
    detail = f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
    assert proc.returncode == case.code, detail
    assert "internal error" not in proc.stderr, detail
    for name in case.names:
        assert name.replace("{file}", str(file)) in proc.stderr, detail
    if before is None:
        assert files_named(db) == [], "a refused load into a new path leaves nothing behind"
    else:
        assert db.read_bytes() == before, "a refused command leaves the ledger byte for byte as it was"
    assert elapsed < 20, f"{elapsed:.1f} s: the input is refused before it costs time"


def test_the_file_the_bad_ones_are_made_from_loads(loaded, tmp_path):
    """The control of the table above: SMALL loads on top of the base ledger, so each refusal is
    caused by the one bad input its case adds."""
    (tmp_path / "small.yaml").write_text(SMALL + "persons:\n  - {person: p, name: P, roles: "
                                         "[{person: p, entity: x, role: director}]}\n")
    db = tmp_path / "ledger.db"
    db.write_bytes(loaded.read_bytes())
    assert "loaded 5 events" in ok("load", tmp_path / "small.yaml", db=db).stdout


# -- PostgreSQL answered differently: the same input, the same answer on both -----------------------

ACTOR_201 = ("record", "entity_registered", "--on", "2024-05-01", "--data", '{"entity": "z", "name": "Z"}',
             "--actor", "a" * 201)
KEY_201 = ("record", "entity_registered", "--on", "2024-05-01", "--data", '{"entity": "z", "name": "Z"}',
           "--idempotency-key", "k" * 201)


def ledger_rows(url: str) -> list:
    """Every row of the ledger's tables, to compare a PostgreSQL ledger before and after."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [conn.execute(text(f"SELECT * FROM {t} ORDER BY 1")).all()
                    for t in ("events", "ledger_head", "snapshots")]
    finally:
        engine.dispose()


@pytest.mark.parametrize(("args", "code", "names"), [
    pytest.param(ACTOR_201, 3, ("field 'actor'", "201 characters", "at most 200"), id="actor-201-chars"),
    pytest.param(KEY_201, 3, ("field 'idempotency_key'", "201 characters", "at most 200"), id="key-201-chars"),
    pytest.param(("events", "--limit", -1), 2, ("--limit",), id="events-limit-minus-1"),
])
def test_the_same_input_gets_the_same_answer_on_both_databases(db_url, tmp_path, args, code, names):
    target = db_url.removeprefix("sqlite:///")
    ok("init", db=target, cwd=tmp_path)
    before = Path(target).read_bytes() if db_url.startswith("sqlite") else ledger_rows(db_url)
    proc = run(*args, db=target, cwd=tmp_path)
    detail = f"exit {proc.returncode}\nstderr: {proc.stderr[-2000:]}"
    assert proc.returncode == code, detail
    assert all(name in proc.stderr for name in names), detail
    after = Path(target).read_bytes() if db_url.startswith("sqlite") else ledger_rows(db_url)
    assert after == before


# -- the envelope, in bulk, on both databases ----------------------------------------------------------


@pytest.mark.parametrize(("actor", "key", "field", "says"), [
    pytest.param("a" * 201, None, "actor", "at most 200", id="actor-201"),
    pytest.param("é" * 201, None, "actor", "at most 200", id="actor-201-non-ascii"),
    pytest.param("a\x00b", None, "actor", "control characters", id="actor-nul"),
    pytest.param("a\nb", None, "actor", "control characters", id="actor-newline"),
    pytest.param(None, "k" * 201, "idempotency_key", "at most 200", id="key-201"),
    pytest.param(None, "k\x7f", "idempotency_key", "control characters", id="key-del"),
    pytest.param(None, "", "idempotency_key", "empty", id="key-empty"),
])
def test_the_envelope_is_checked_before_the_database(engine, actor, key, field, says):
    service = FleetService(engine)
    payload = ev.EntityRegistered(entity="z", name="Z")
    with pytest.raises(InputError) as err:
        service.record(payload, date(2024, 5, 1), actor, key)
    assert err.value.field == field and says in err.value.message
    assert service.events() == []


def test_an_envelope_at_its_bounds_is_stored_alike_on_both(engine):
    service = FleetService(engine)
    event = service.record(ev.EntityRegistered(entity="z", name="Z"), date(2024, 5, 1), "é" * 200, "k" * 200)
    assert (event.actor, event.idempotency_key) == ("é" * 200, "k" * 200)
    assert service.events()[0].actor == "é" * 200


# -- the YAML composer counts what a walk would visit --------------------------------------------------


@st.composite
def alias_documents(draw) -> str:
    """Top-level anchors x0..xn, each a flow sequence of scalars, nested sequences and aliases to
    earlier anchors; then a key that refers to some of them."""
    names: list[str] = []
    lines = []

    def value(depth: int) -> str:
        kind = draw(st.sampled_from(["scalar", "alias", "seq"] if names else ["scalar", "seq"]))
        if kind == "scalar" or (kind == "seq" and depth > 3):
            return draw(st.sampled_from(["1", "x", "true", "2.5"]))
        if kind == "alias":
            return "*" + draw(st.sampled_from(names))
        return "[" + ", ".join(value(depth + 1) for _ in range(draw(st.integers(0, 4)))) + "]"

    for i in range(draw(st.integers(1, 6))):
        lines.append(f"x{i}: &x{i} [" + ", ".join(value(1) for _ in range(draw(st.integers(1, 4)))) + "]")
        names.append(f"x{i}")
    lines.append("top: " + value(1))
    return "\n".join(lines) + "\n"


def _size_and_depth(node, depth: int = 1) -> tuple[int, int]:
    """Nodes and depth of constructed YAML data, every shared part counted where it appears."""
    if isinstance(node, dict):
        parts = [_size_and_depth(v, depth + 1) for v in node.values()]
        deepest = max([depth, *([depth + 1] if node else []), *(d for _, d in parts)])
        return 1 + len(node) + sum(n for n, _ in parts), deepest
    if isinstance(node, list):
        parts = [_size_and_depth(v, depth + 1) for v in node]
        return 1 + sum(n for n, _ in parts), max([depth, *(d for _, d in parts)])
    return 1, depth


@given(document=alias_documents())
def test_the_composer_counts_every_node_a_walk_would_visit(document):
    loader = scenario_io._Yaml12Loader(document, Path("doc.yaml"))
    try:
        data = loader.construct_document(loader.get_single_node())
    finally:
        loader.dispose()
    nodes, depth = _size_and_depth(data)
    assert loader.nodes == nodes
    assert loader.deepest == depth


def _read(tmp_path: Path, text_: str):
    path = tmp_path / "doc.yaml"
    path.write_text(text_)
    return scenario_io._read_yaml(path)


@pytest.mark.parametrize(("bound", "limit", "at", "past"), [
    pytest.param("MAX_NODES", 7, "a: [1, 2, 3, 4]\n", "a: [1, 2, 3, 4, 5]\n", id="nodes"),
    pytest.param("MAX_NODES", 7, "a: &a [1]\nb: *a\n", "a: &a [1]\nb: [*a]\n", id="nodes-through-an-alias"),
    pytest.param("MAX_DEPTH", 3, "a: [1]\n", "a: [[1]]\n", id="depth"),
    pytest.param("MAX_DEPTH", 3, "a: &a [1]\nb: *a\n", "a: &a [1]\nb: [*a]\n", id="depth-through-an-alias"),
])
def test_a_document_at_a_bound_is_read_and_one_past_it_refused(monkeypatch, tmp_path, bound, limit, at, past):
    monkeypatch.setattr(scenario_io, bound, limit)
    _read(tmp_path, at)
    with pytest.raises(InputError, match="nested more than|YAML nodes"):
        _read(tmp_path, past)


@pytest.mark.parametrize("document", [
    pytest.param(alias_bomb(9), id="sequences-1e9"),
    pytest.param("".join(f"k{i}: &k{i} {{" + ", ".join(f"m{j}: *k{i - 1}" for j in range(10)) + "}\n"
                         for i in range(1, 9)).replace("*k0", "v"), id="mappings-1e8"),
    pytest.param("b0: &b0 {x: 1, y: 2}\n" + "".join(f"b{i}: &b{i} {{<<: *b{i - 1}, " + ", ".join(
        f"k{j}: *b{i - 1}" for j in range(10)) + "}\n" for i in range(1, 9)), id="merge-keys-1e8"),
    pytest.param("a: &a [x, x]\n" + "".join(f"a{i}: &a{i} {{*a{i - 1 if i > 1 else ''}: *a}}\n".replace("*a0", "*a")
                                            for i in range(1, 3)), id="aliases-as-keys"),
    pytest.param("a: &a [*a]\n", id="self-reference"),
    pytest.param("a: " + "[" * 100_000 + "]" * 100_000 + "\n", id="nested-100000"),
    pytest.param("a: " + "{b: " * 2000 + "1" + "}" * 2000 + "\n", id="mappings-nested-2000"),
])
def test_a_document_past_the_bounds_is_refused_at_once(tmp_path, document):
    started = time.monotonic()
    with pytest.raises(InputError, match="YAML nodes|nested more than|contains it|malformed|invalid"):
        _read(tmp_path, document)
    assert time.monotonic() - started < 2


def test_a_file_past_the_size_bound_is_not_read(monkeypatch, tmp_path):
    monkeypatch.setattr(scenario_io, "MAX_FILE_BYTES", 100)
    with pytest.raises(InputError, match="larger than 100 bytes"):
        _read(tmp_path, "a: " + "x" * 100 + "\n")


@pytest.mark.parametrize(("raw", "line", "says"), [
    pytest.param(b"a: 1\nb: \x00\n", 2, "#x0000", id="nul"),
    pytest.param(b"a: 1\n\nb: \x07\n", 3, "#x0007", id="bell"),
    pytest.param(b"a: 1\nb: \xff\n", 2, "not UTF-8", id="not-utf8"),
    pytest.param(b"a: 1\nb: " + b"9" * 5000 + b"\n", None, None, id="5000-digit-int-stays-text"),
])
def test_characters_and_numbers_yaml_cannot_hold(tmp_path, raw, line, says):
    path = tmp_path / "doc.yaml"
    path.write_bytes(raw)
    if says is None:
        data, _ = scenario_io._read_yaml(path)
        assert data == {"a": 1, "b": "9" * 5000}
        return
    with pytest.raises(InputError) as err:
        scenario_io._read_yaml(path)
    assert f"{path}:{line}:" in str(err.value) and says in str(err.value)


# -- plan files ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "says"), [
    pytest.param(plan_json(start=None), "field 'loans.0.start': Field required", id="loan-without-start"),
    pytest.param(plan_json().replace('"start": "2024-05-06", "loans"', '"loans"'), "field 'start': Field required",
                 id="plan-without-start"),
    pytest.param(plan_json().replace('"policy": "owner-first", ', ""), "field 'policy'", id="without-policy"),
    pytest.param(plan_json(gpus="10"), "field 'loans.0.gpus'", id="gpus-as-text"),
    pytest.param(plan_json(gpus=float("nan")), "field 'loans.0.gpus'", id="gpus-nan"),
    pytest.param(plan_json(gpus=1e30), "field 'loans.0.gpus'", id="gpus-1e30"),
    pytest.param(plan_json(gpus=-3), "field 'loans.0.gpus'", id="gpus-negative"),
    pytest.param(plan_json(end="2024-02-30"), "field 'loans.0.end': '2024-02-30' is not a date", id="impossible-date"),
    pytest.param(plan_json(end="9999-12-31"), "field 'loans.0.end'", id="date-past-the-bounds"),
    pytest.param(plan_json(end=20240603), "field 'loans.0.end'", id="date-as-number"),
    pytest.param(plan_json(reason=["x"]), "field 'loans.0.reason'", id="reason-not-text"),
    pytest.param(plan_json(fee_usd_per_gpu_hour=1e308), "field 'loans.0.fee_usd_per_gpu_hour'", id="fee-1e308"),
    pytest.param("[" + plan_json() + "]", "a list of plans", id="compare-output"),
    pytest.param('{"policy": ', "not JSON", id="truncated"),
    pytest.param("[" * 100_000 + "]" * 100_000, "nested too deeply", id="nested-100000"),
    pytest.param("7", "Input should be a valid dictionary", id="a-number"),
])
def test_a_hand_edited_plan_is_refused_naming_the_file_and_field(tmp_path, body, says):
    path = tmp_path / "plan.json"
    path.write_text(body)
    with pytest.raises(InputError) as err:
        read_plan(path)
    assert str(path) in str(err.value) and says in str(err.value)


def test_a_plan_is_returned_as_written(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(plan_json())
    assert read_plan(path) == json.loads(plan_json())


# -- load into a new path: whole or absent ----------------------------------------------------------------


def _scenario(tmp_path: Path, text_: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text_)
    return path


def test_a_load_into_a_new_path_appears_whole(tmp_path):
    target = tmp_path / "new.db"
    result = load_scenario(str(target), _scenario(tmp_path, SMALL))
    assert result.events == 3 and files_named(target) == ["new.db"]
    service = FleetService.open(str(target))
    assert service.verify().ok and len(service.events()) == 3
    service.engine.dispose()


def test_a_refused_load_into_a_new_path_leaves_nothing(tmp_path):
    bad = SMALL + "events:\n  - {type: lot_delivered, lot: nowhere, on: 2024-06-02}\n"
    with pytest.raises(GpufleetError, match="nowhere"):
        load_scenario(str(tmp_path / "new.db"), _scenario(tmp_path, bad))
    assert list(tmp_path.iterdir()) == [tmp_path / "s.yaml"]


def test_a_file_created_during_the_load_is_not_overwritten(tmp_path, monkeypatch):
    target = tmp_path / "new.db"
    real_load = FleetService.load

    def load_while_another_creates_it(self, *args, **kwargs):
        result = real_load(self, *args, **kwargs)
        target.write_text("someone else's")
        return result

    monkeypatch.setattr(FleetService, "load", load_while_another_creates_it)
    with pytest.raises(ConflictError, match="created by someone else"):
        load_scenario(str(target), _scenario(tmp_path, SMALL))
    assert target.read_text() == "someone else's"
    assert files_named(target) == ["new.db"]


def test_a_refused_load_into_a_database_without_schema_leaves_no_schema(db_url, tmp_path):
    """The schema is created in the load's own transaction (on PostgreSQL: an empty database)."""
    bad = SMALL + "events:\n  - {type: lot_delivered, lot: nowhere, on: 2024-06-02}\n"
    if db_url.startswith("sqlite"):
        Path(db_url.removeprefix("sqlite:///")).touch()  # exists, empty: not a new path
    with pytest.raises(GpufleetError, match="nowhere"):
        load_scenario(db_url, _scenario(tmp_path, bad))
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(text("SELECT name FROM sqlite_master" if db_url.startswith("sqlite") else
                                       "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).all()
    finally:
        engine.dispose()
    assert tables == []


@pytest.mark.parametrize("content", [b"just some notes\n", b"SQLite format 3\x00" + b"\x00" * 200],
                         ids=["text", "damaged-header"])
def test_a_db_that_is_not_a_database_is_bad_input(tmp_path, content):
    path = tmp_path / "notes.db"
    path.write_bytes(content)
    for attempt in (lambda: FleetService.open(str(path)), lambda: FleetService.open(str(path), create=True),
                    lambda: load_scenario(str(path), _scenario(tmp_path, SMALL))):
        with pytest.raises(InputError) as err:
            attempt()
        assert err.value.field == "db"
    assert path.read_bytes() == content

