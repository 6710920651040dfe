"""``simulate``'s progress: bars in a terminal; otherwise (a log, a pipe, CI) a line per replay as it is
done, with its time, on standard error only, so that ``--format json`` stays pure JSON."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from cli_runner import invoke
from gpufleet.cli import render
from test_cli import ok

TRACE = """\
timestamp,duration,num_gpus,gpu_time,cluster
2024-03-01 00:00:00,3600.0,4,14400.0,y
2024-03-01 00:00:00,3600.0,4,14400.0,y
2024-03-01 00:30:00,600.0,4,2400.0,x
"""
LINE = re.compile(r"^simulate: (.+) done in \d+\.\d s \(3 jobs\)$")


@pytest.fixture
def trace(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(TRACE)
    return path


@pytest.mark.parametrize(("args", "replays"), [
    pytest.param(["--policy", "fair"], ["alone (each tenant on its quota)", "fair"], id="one-policy"),
    pytest.param(["--compare"], ["alone (each tenant on its quota)", "static", "borrow", "fair"], id="compare"),
])
def test_without_a_terminal_each_replay_prints_a_line_when_done(trace, args, replays):
    result = invoke("simulate", trace, *args, "--format", "json")
    assert result.code == 0, result.stderr
    json.loads(result.stdout)  # nothing else on standard output
    lines = result.stderr.splitlines()
    assert [LINE.match(line)[1] for line in lines] == replays, result.stderr


def test_in_a_terminal_the_bars_show_and_no_lines(trace, monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(render, "errors", Console(file=screen, force_terminal=True, width=100))
    result = invoke("simulate", trace, "--format", "json")
    assert result.code == 0 and result.stderr == "", result.stderr
    assert "done in" not in screen.getvalue() and "borrow" in screen.getvalue()


def test_a_refused_run_prints_no_done_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(TRACE + "2024-03-01 01:00:00,ten,1,10.0,x\n")
    result = invoke("simulate", path)
    assert result.code == 3 and "done in" not in result.stderr


def test_the_lines_go_to_standard_error_of_the_real_command(trace):
    proc = ok("simulate", trace, "--compare", "--format", "json")
    json.loads(proc.stdout)
    assert [LINE.match(line)[1] for line in proc.stderr.splitlines()] == [
        "alone (each tenant on its quota)", "static", "borrow", "fair"], proc.stderr
