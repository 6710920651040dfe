"""Output files named on the command line: refused before any work if they could not be written,
and written so that a failure is an input error naming the option, not a traceback."""

from __future__ import annotations

import os
from pathlib import Path

from gpufleet.errors import InputError


def check_writable(path: Path, field: str) -> None:
    """Refuse ``path`` (the option ``field``) if it is a folder, its folder does not exist or is not
    one, or the folder or an existing file there may not be written. Writes nothing."""
    try:
        problem = _problem(path)
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte
        problem = f"cannot use {str(path)[:200]!r}: {getattr(exc, 'strerror', None) or exc}"
    if problem:
        raise InputError(problem, field=field)


def _problem(path: Path) -> str | None:
    folder = path.parent
    if path.is_dir():
        return f"{path} is a folder; give a file name"
    if not folder.exists():
        return f"no such folder: {folder}"
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return f"cannot write {path}: permission denied"
    return None


def write_text(path: Path, text: str, field: str) -> None:
    """``text`` into ``path``; a failure (a full disk, a folder removed since the check) names ``field``."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}", field=field) from None
