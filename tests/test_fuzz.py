"""A fuzz campaign, in the suite: mutated scenario files and random command lines, run in-process.

Each case runs the real CLI entry point (:func:`gpufleet.cli.main`) with its own argv, standard
output and standard error, on a private copy of a loaded SQLite ledger, and asserts:

* the exit code is one of the documented ones (``docs/cli.md``), never 70 (internal error);
* no traceback reaches the user, and a refusal names the input (the file, or the option);
* a refused command leaves the ledger unchanged: every row of every table, as SQLite dumps it.

The examples are seeded (the suite's hypothesis profile derandomizes them). The counts below
are the CI's; ``GPUFLEET_FUZZ_EXAMPLES=N`` runs N cases of each campaign for a long run.
Trace files have their own fuzz in ``test_traces_fuzz.py``; the in-process runner is ``cli_runner.py``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_runner import DOCUMENTED_EXITS, Result, invoke
from test_cli import BASE_SCENARIO

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "h100-2024.yaml"
LONG_RUN = int(os.environ.get("GPUFLEET_FUZZ_EXAMPLES", "0"))


def campaign(examples: int):
    """Hypothesis settings for one campaign: ``examples`` in CI, or the long run's count."""
    return settings(max_examples=LONG_RUN or examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


def dump(db: Path) -> list[str]:
    """Every row of every table (SQLite's own dump), to compare a ledger before and after."""
    con = sqlite3.connect(db)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def check(result: Result, *, names: list[str], before: list[str] | None = None, db: Path | None = None) -> None:
    """The invariants of every case (module docstring); ``names``: what a refusal must mention."""
    detail = f"exit {result.code}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}"
    assert result.code in DOCUMENTED_EXITS, detail
    assert "Traceback" not in result.stderr + result.stdout, detail
    assert "internal error" not in result.stderr, detail
    if result.code == 2:  # a usage error: the parser names the option or argument
        assert "Usage:" in result.stderr, detail
    elif result.code != 0 and result.code != 1:
        assert result.stderr.startswith("error: "), detail
        assert any(name in result.stderr for name in names), f"the message names none of {names}\n{detail}"
    if result.code not in (0, 1):
        if before is not None:
            assert dump(db) == before, f"a refused command changed the ledger\n{detail}"


# -- the ledgers the cases start from --------------------------------------------------------


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("fuzz-empty") / "empty.db"
    assert invoke("init", db=db).code == 0
    return db


@pytest.fixture(scope="module")
def loaded_db(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-loaded")
    (root / "base.yaml").write_text(BASE_SCENARIO, encoding="utf-8")
    db = root / "loaded.db"
    assert invoke("init", db=db).code == 0
    loaded = invoke("load", root / "base.yaml", db=db)
    assert loaded.code == 0, loaded.stderr
    return db


def private_copy(src: Path, folder: Path, name: str = "case.db") -> Path:
    dst = folder / name
    for suffix in ("-wal", "-shm"):
        Path(str(dst) + suffix).unlink(missing_ok=True)
    with sqlite3.connect(src) as s, sqlite3.connect(dst) as d:
        s.backup(d)
    s.close()
    d.close()
    return dst


# -- scenario files ------------------------------------------------------------------------------

NASTY_SCALARS = [
    None, True, False, 0, -1, 1.5, 10**12, 10**30, 2**63, -(2**63), float("inf"), float("nan"), 1e308,
    "", " ", "x" * 5000, "\x00", "é", "2024-02-30", "2024-13-01", "0000-01-01", "9999-12-31", "1e9999",
    "../../etc/passwd", [], {}, [1, [2, [3]]], {"a": {"b": {"c": None}}}, "${HOME}", "*alias",
]
BASES = {"base": BASE_SCENARIO, "example": EXAMPLE.read_text(encoding="utf-8")}


def _paths(node, prefix=()):
    """Every path to a node of a parsed document (dict keys and list indexes)."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _replace(doc, path, value):
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return doc


@st.composite
def scenario_texts(draw) -> str:
    """A scenario file mutated at the text level or at the structure level."""
    text = BASES[draw(st.sampled_from(sorted(BASES)))]
    kind = draw(st.sampled_from(["leaf", "leaf", "leaf", "delete-key", "lines", "bytes"]))
    if kind in ("leaf", "delete-key"):
        doc = yaml.safe_load(text)
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths[1:]))
        if kind == "leaf":
            doc = _replace(doc, path, draw(st.sampled_from(NASTY_SCALARS)))
        else:
            parent = doc
            for key in path[:-1]:
                parent = parent[key]
            del parent[path[-1]]
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    lines = text.splitlines(keepends=True)
    if kind == "lines":
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(lines) - 1))
            op = draw(st.sampled_from(["drop", "duplicate", "swap", "indent", "dedent"]))
            if op == "drop":
                del lines[i]
            elif op == "duplicate":
                lines.insert(i, lines[i])
            elif op == "swap":
                j = draw(st.integers(0, len(lines) - 1))
                lines[i], lines[j] = lines[j], lines[i]
            elif op == "indent":
                lines[i] = "  " + lines[i]
            else:
                lines[i] = lines[i].lstrip()
            if not lines:
                break
        return "".join(lines)
    raw = text
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from(["\x00", "'", '"', "{", "[", ":", "&a", "*a", "\t", "\ufeff", "-",
                                                "!!python/object:os.system", "#", "\n  - ", "%YAML 1.1\n"])) + raw[at:]
    return raw if draw(st.booleans()) else raw[:draw(st.integers(0, len(raw)))]


@campaign(400)
@given(text=scenario_texts())
def test_a_mutated_scenario_loads_or_is_refused_cleanly(text, empty_db, tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenario")
    scenario = folder / "mutated.yaml"
    scenario.write_text(text, encoding="utf-8", errors="surrogatepass")
    db = private_copy(empty_db, folder)
    before = dump(db)
    result = invoke("load", scenario, db=db)
    check(result, names=["mutated.yaml"], before=before, db=db)
    shutil.rmtree(folder, ignore_errors=True)


# -- command lines ---------------------------------------------------------------------------------

ODD_VALUES = ["", "-1", "0", "1", "8", "2.5", "nan", "inf", "-inf", "1e308", str(2**63), str(2**70), "9" * 5000,
              "2024-02-30", "2024-01-01", "1999-01-01", "9999-12-31", "not-a-date", "x" * 300, "\u00e9", "a,b",
              "{}", "[]", '{"gpus": 1}', "/nonexistent/dir/file", "a1", "s1", "h100", "l2", "ln1", "tesla"]

# command -> (arguments it takes first, options it may take); every option takes one value
COMMANDS: dict[tuple[str, ...], tuple[int, list[str]]] = {
    ("status",): (0, ["--as-of", "--known-at", "--entity", "--format"]),
    ("events",): (0, ["--since", "--until", "--limit", "--type", "--format"]),
    ("ship",): (1, ["--on", "--actor", "--idempotency-key"]),
    ("deliver",): (1, ["--on", "--actor", "--idempotency-key"]),
    ("install",): (0, ["--owner", "--model", "--site", "--gpus", "--on", "--actor"]),
    ("fail",): (0, ["--owner", "--model", "--site", "--gpus", "--on"]),
    ("retire",): (0, ["--owner", "--model", "--site", "--gpus", "--on", "--from-failed"]),
    ("loan", "open"): (1, ["--lender", "--borrower", "--model", "--site", "--gpus", "--end", "--fee",
                           "--notice-days", "--on"]),
    ("loan", "reclaim"): (1, ["--gpus", "--notice-given-on", "--on"]),
    ("loan", "close"): (1, ["--on"]),
    ("void",): (1, ["--reason", "--actor"]),
    ("record",): (1, ["--data", "--on", "--actor", "--idempotency-key"]),
    ("approvals", "list"): (0, ["--format"]),
    ("audit",): (0, ["--format"]),
    ("costs",): (0, ["--month", "--entity", "--life-years", "--usd-per-kwh", "--format"]),
    ("ledger", "verify"): (0, ["--expect-head", "--workers", "--format"]),
    ("plan",): (0, ["--as-of", "--horizon", "--policy", "--lead-weeks", "--move-cost", "--fee", "--failure-rate",
                    "--method", "--time-limit"]),
}


@st.composite
def command_lines(draw) -> list[str]:
    command = draw(st.sampled_from(sorted(COMMANDS)))
    positional, options = COMMANDS[command]
    values = st.sampled_from(ODD_VALUES) | st.text(max_size=20)
    args = list(command) + [draw(values) for _ in range(positional)]
    for option in draw(st.lists(st.sampled_from(options), max_size=4, unique=True)):
        args += [option] if option == "--from-failed" else [option, draw(values)]
    return args


@campaign(400)
@given(args=command_lines())
def test_a_random_command_line_runs_or_is_refused_cleanly(args, loaded_db, tmp_path_factory):
    folder = tmp_path_factory.mktemp("args")
    db = private_copy(loaded_db, folder)
    before = dump(db)
    if "--horizon" in args:  # keep a plan's size sane: the bound is checked by the option itself
        i = args.index("--horizon") + 1
        if args[i].isascii() and args[i].isdigit() and len(args[i]) <= 3:  # 1000 and more: refused (bound 520)
            args[i] = str(min(int(args[i]), 8))
    result = invoke(*args, db=db)
    options = [a for a in args if a.startswith("--")]
    check(result, names=["field '", "FILE", *options, *args[:3]], before=before, db=db)
    shutil.rmtree(folder, ignore_errors=True)
