"""``--out`` (plan, report, export, generate) and ``--jobs-out`` (simulate): a file that could not be
written is refused before any work, naming the option and the reason (exit 3), and nothing is written;
a write that fails anyway is the same input error, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_runner import invoke, refused
from test_cli import run

QUOTAS = "date,a\n2020-04-01,8\n"
TRACE = "timestamp,duration,num_gpus,gpu_time,cluster\n2024-03-01 00:00:00,60.0,1,60.0,a\n"


def place(tmp_path: Path, where: str) -> tuple[Path, str]:
    """An output path that cannot be written, and the reason the refusal gives."""
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    return {"missing-folder": (tmp_path / "missing" / "out.x", "no such folder"),
            "folder-is-a-file": (tmp_path / "a-file" / "out.x", "is not a folder"),
            "path-is-a-folder": (tmp_path / "a-folder", "is a folder")}[where]


COMMANDS = {  # command -> its arguments, given the folder it runs in and the output path
    "plan": lambda d, out: ["plan", "--scenario", d / "never-read.yaml", "--out", out],
    "report": lambda d, out: ["report", "--out", out],
    "export": lambda d, out: ["export", "kueue", "--cluster", "1x8", "--quotas", d / "q.csv", "--out", out],
    "generate": lambda d, out: ["generate", "small", "--out", out],
    "simulate": lambda d, out: ["simulate", d / "t.csv", "--jobs-out", out.with_suffix(".csv")],
}


@pytest.mark.parametrize("where", ["missing-folder", "folder-is-a-file", "path-is-a-folder"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_output_that_cannot_be_written_is_refused_before_any_work(tmp_path, command, where):
    (tmp_path / "q.csv").write_text(QUOTAS)
    (tmp_path / "t.csv").write_text(TRACE)
    out, reason = place(tmp_path, where)
    if command == "simulate" and where == "path-is-a-folder":
        out = tmp_path / "a-folder.csv"
        out.mkdir()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = invoke(*COMMANDS[command](tmp_path, out), db=tmp_path / "never-opened.db")
    refused(result, 3, "out'", reason)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # not even the database


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, where no file can be created")
@pytest.mark.parametrize("command", ["export", "generate"])
def test_a_write_that_fails_is_an_input_error_naming_the_option(tmp_path, command):
    (tmp_path / "q.csv").write_text(QUOTAS)
    refused(invoke(*COMMANDS[command](tmp_path, Path("/proc/gpufleet-cannot-write.txt"))), 3, "out'",
            "/proc/gpufleet-cannot-write.txt")


def test_plan_out_into_a_missing_folder_as_a_subprocess(tmp_path):
    proc = run("plan", "--scenario", tmp_path / "never-read.yaml", "--out", tmp_path / "missing" / "plan.json",
               db=tmp_path / "never-opened.db")
    assert proc.returncode == 3 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith("error: field 'out': no such folder"), proc.stderr
    assert list(tmp_path.iterdir()) == []
