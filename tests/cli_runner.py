"""The real CLI entry point (:func:`gpufleet.cli.main`, with its mapping of errors to exit codes) run in
this process: about a millisecond a call where a subprocess costs a second."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from gpufleet.cli import main

DOCUMENTED_EXITS = {0, 1, 2, 3, 4, 5, 6}  # docs/cli.md; 70 is an internal error


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


def invoke(*args: object, db: Path | None = None) -> Result:
    """``gpufleet [--db DB] ARGS...``, its exit code and what it printed."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["gpufleet", *(["--db", str(db)] if db else []), *(str(a) for a in args)]
    saved = sys.argv, os.environ.pop("GPUFLEET_DEBUG", None), os.environ.get("COLUMNS")
    sys.argv, os.environ["COLUMNS"] = argv, "200"
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved[0]
        if saved[1] is not None:
            os.environ["GPUFLEET_DEBUG"] = saved[1]
        if saved[2] is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved[2]
    return Result(code, out.getvalue(), err.getvalue())


def refused(result: Result, code: int, *names: str) -> None:
    """``result`` is a refusal with exit ``code`` whose message names every one of ``names``."""
    detail = f"exit {result.code}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}"
    assert result.code == code, detail
    assert "Traceback" not in result.stderr + result.stdout and "internal error" not in result.stderr, detail
    assert result.stdout == "", detail
    assert all(name in result.stderr for name in names), detail
