"""Output for the CLI: Rich tables for people, JSON and CSV for programs."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Pipes and CI logs get wide tables rather than 80 columns of wrapped cells.
console = Console(width=None if sys.stdout.isatty() else 200)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def print_csv(rows: Sequence[dict]) -> None:
    if not rows:
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def table(title: str, rows: Sequence[dict], columns: Sequence[str] | None = None,
          headers: Sequence[str] | None = None) -> Table:
    """A Rich table of ``rows``; numbers right-aligned with thousands separators."""
    columns = list(columns or (rows[0].keys() if rows else []))
    out = Table(title=title, title_justify="left", header_style="bold")
    for i, col in enumerate(columns):
        sample = next((r[col] for r in rows if r.get(col) is not None), None)
        numeric = isinstance(sample, (int, float)) and not isinstance(sample, bool)
        out.add_column((headers or columns)[i], justify="right" if numeric else "left")
    for r in rows:
        out.add_row(*[_cell(r.get(c)) for c in columns])
    return out


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.2g}" if 0 < abs(value) < 0.005 else f"{value:,.2f}"  # small is not shown as zero
    return escape(str(value))  # a name from a file, shown as written: "[/x]" is no Rich markup
