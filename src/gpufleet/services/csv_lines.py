"""CSV files read one physical line at a time, so that every record is one line of the file.

The traces, node lists and quota files gpufleet reads never hold a field that spans lines. The
``csv`` module would let a quote left open take the rest of the file into one field (a 300-row
trace read as 5 jobs, without a word); here such a line is an error naming it, and the lines after
it are read as they are. A line is refused (:class:`LineError`, with a short ``reason`` to count
skipped lines by) when it is longer than :data:`~gpufleet.scheduler.limits.MAX_LINE_BYTES`, is not
UTF-8, holds a NUL byte or a bare carriage return, leaves a quote open or puts text after a closing
quote, or has a field longer than :data:`~gpufleet.scheduler.limits.MAX_FIELD_CHARS`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

from gpufleet.errors import InputError
from gpufleet.scheduler.limits import MAX_FIELD_CHARS, MAX_LINE_BYTES, MAX_ROWS


class LineError(Exception):
    """A line that is not one CSV record; ``reason`` is the short key counted when skipping."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


def read_header(path: Path) -> list[str]:
    """The first line's fields, stripped; a file-level error (missing, unreadable) names the file."""
    with closing(_lines(path)) as lines:
        for line, raw in lines:
            try:
                return [name.strip() for name in split(raw)]
            except LineError as bad:
                raise InputError(f"the header {bad.message}", location=f"{path.name}:{line}") from None
    return []


def data_lines(path: Path) -> Iterator[tuple[int, bytes | None]]:
    """(line, raw bytes) of each non-empty line after the header, for :func:`split`; lines are 1-based.
    More than :data:`MAX_ROWS` such lines is an error naming the first one too many."""
    rows = 0
    for line, raw in _lines(path):
        if line == 1 or raw == b"":
            continue
        rows += 1
        if rows > MAX_ROWS:
            raise InputError(f"more than {MAX_ROWS:,} rows", location=f"{path.name}:{line}")
        yield line, raw


def split(raw: bytes | None) -> list[str]:
    """The fields of one line (``None``: a line over the length limit); :class:`LineError` if it is no record."""
    if raw is None:
        raise LineError("line too long", f"is longer than {MAX_LINE_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineError("not UTF-8", f"is not UTF-8 text (byte {exc.start + 1})") from None
    for char, what in (("\x00", "a NUL byte"), ("\r", "a carriage return")):
        if char in text:
            raise LineError(what.split(" ", 1)[1], f"holds {what} at character {text.index(char) + 1}")
    fields = _quoted(text) if '"' in text else text.split(",")
    if len(text) > MAX_FIELD_CHARS:
        for i, field in enumerate(fields):
            if len(field) > MAX_FIELD_CHARS:
                raise LineError("field too long", f"has a field (the {_ordinal(i + 1)}) of {len(field):,} "
                                                  f"characters, over {MAX_FIELD_CHARS:,}")
    return fields


def _quoted(text: str) -> list[str]:
    try:
        return next(csv.reader([text], strict=True))
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            raise LineError("unbalanced quote", "opens a quote it does not close (a field may not span "
                                                "lines)") from None
        raise LineError("unbalanced quote", f"has text after a closing quote ({exc})") from None


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _lines(path: Path) -> Iterator[tuple[int, bytes | None]]:
    """(line, bytes without the line end) of every line; ``None`` for a line over the length limit,
    which is read past without keeping it. The first line loses a UTF-8 byte order mark."""
    try:
        with path.open("rb") as f:
            line = 0
            while chunk := f.readline(MAX_LINE_BYTES + 2):
                line += 1
                raw: bytes | None = _strip_end(chunk)
                if len(raw) > MAX_LINE_BYTES:
                    while not chunk.endswith(b"\n") and (chunk := f.readline(MAX_LINE_BYTES)):
                        pass
                    raw = None
                elif line == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                yield line, raw
    except FileNotFoundError:
        raise InputError("no such file", location=str(path)) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", location=str(path)) from None


def _strip_end(chunk: bytes) -> bytes:
    if chunk.endswith(b"\r\n"):
        return chunk[:-2]
    return chunk[:-1] if chunk.endswith(b"\n") else chunk
