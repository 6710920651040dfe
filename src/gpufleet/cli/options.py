"""Numeric options with bounds: a value that is not a finite number within them is a usage error
(exit 2) naming the option, so ``inf`` and ``nan`` never reach a computation or the JSON output.

Typer's ``min``/``max`` let ``nan`` through (every comparison with it is false); these parsers do not.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import typer


def number(low: float, high: float, *, above: bool = False, below: bool = False) -> Callable[[str], float]:
    """A parser for ``typer.Option(parser=...)``: a finite float from ``low`` to ``high``, excluding
    ``low`` if ``above`` and ``high`` if ``below``."""
    if above or below:
        bounds = f"{'above' if above else 'at least'} {_amount(low)} and {'below' if below else 'at most'} {_amount(high)}"
    else:
        bounds = f"from {_amount(low)} to {_amount(high)}"

    def parse(text: str | float) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise typer.BadParameter(f"{text!r} is not a number") from None
        if not (math.isfinite(value) and (low < value if above else low <= value)
                and (value < high if below else value <= high)):
            raise typer.BadParameter(f"{text} is not a finite number {bounds}")
        return value

    return parse


def _amount(x: float) -> str:
    return f"{int(x):,}" if x == int(x) else f"{x:,}"
