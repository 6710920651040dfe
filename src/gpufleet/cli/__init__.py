"""The ``gpufleet`` command. Exit codes: 0 ok, 1 ledger does not verify, 2 usage,
3 invalid input or refused by an invariant, 4 database not initialized, 5 conflict,
70 internal error (never expected; set ``GPUFLEET_DEBUG=1`` for the traceback)."""

from __future__ import annotations

import os
import sys
import warnings

from rich.text import Text

from gpufleet.cli.app import app
from gpufleet.cli.render import errors
from gpufleet.errors import GpufleetError
from gpufleet.ledger.snapshots import SnapshotDistrusted

__all__ = ["app", "main"]


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning):
    """A distrusted snapshot is told to the user on stderr as one line; other warnings as Python shows them."""
    if issubclass(category, SnapshotDistrusted):
        errors.print(Text.assemble(("warning: ", "bold yellow"), str(message)), highlight=False, soft_wrap=True)
    else:
        _default(message, category, filename, lineno, file, line)


def main() -> None:
    """Run the CLI; typer handles usage errors, this turns gpufleet errors into exit codes."""
    warnings.showwarning = _show_warning
    try:
        app()
    except GpufleetError as exc:
        errors.print(Text.assemble(("error: ", "bold red"), str(exc)), highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # the last guard: a user never sees a traceback
        if os.environ.get("GPUFLEET_DEBUG"):
            raise
        errors.print(f"internal error: {type(exc).__name__}: {exc} (set GPUFLEET_DEBUG=1 for details)",
                     markup=False, highlight=False)
        sys.exit(70)
