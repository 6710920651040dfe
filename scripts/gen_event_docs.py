"""Write docs/events.md from the payload models (run after changing an event type).

    python scripts/gen_event_docs.py > docs/events.md
"""

from __future__ import annotations

import enum
from datetime import date
import inspect
import typing

from gpufleet.domain.events import EVENT_TYPES, CapacityStep, LotSpec


def _type_name(annotation) -> str:
    text = str(annotation) if not isinstance(annotation, type) else annotation.__name__
    text = text.replace("typing.", "").replace("datetime.", "").replace("gpufleet.domain.events.", "")
    text = text.replace("gpufleet.domain.types.", "")
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    if "Annotated[" in text:
        args = typing.get_args(annotation)
        text = _type_name(args[0]) if args else text
    return text.replace("NoneType", "None")


def _bounds(info) -> str:
    """The field's constraints in words: ``> 0``, ``≤ 10,000,000``, ``at most 2000 characters``."""
    words = []
    for item in info.metadata:
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(item, attr, None)
            if value is not None and type(item).__name__ in ("Gt", "Ge", "Lt", "Le"):
                text = value.isoformat() if isinstance(value, date) else f"{value:,}" if isinstance(value, int) else \
                    f"{value:,.0f}" if value.is_integer() else f"{value:g}"
                words.append(f"{sign} {text}")
        if type(item).__name__ == "MaxLen":
            words.append(f"at most {item.max_length:,} {'items' if typing.get_origin(info.annotation) is list else 'characters'}")
        if type(item).__name__ == "MinLen":
            words.append(f"at least {item.min_length:,}")
    return ", ".join(words)


def _table(cls) -> list[str]:
    lines = ["| field | type | bounds | required | description |", "|---|---|---|---|---|"]
    for field, info in cls.model_fields.items():
        required = "yes" if info.is_required() else f"no (default `{info.get_default(call_default_factory=True)}`)"
        lines.append(f"| `{field}` | {_type_name(info.annotation)} | {_bounds(info)} | {required} | "
                     f"{info.description or ''} |")
    return lines


def render() -> str:
    lines = [
        "# Event types",
        "",
        "Generated from `src/gpufleet/domain/events.py` by `scripts/gen_event_docs.py`; do not edit by hand.",
        "Every event also has the envelope fields described in [ledger.md](ledger.md): `seq`, `recorded_at`,",
        "`effective_date`, `actor`, `type`, `idempotency_key`, `prev_hash` and `hash`.",
        "",
        "Numbers are strict and finite: `true` is not a number, `\"5\"` is not parsed as one, an integer field",
        "refuses `5.0`, and NaN and Infinity are refused. Every number has the bounds shown (why these:",
        "[scenario-format.md](scenario-format.md#bounds)).",
        "",
    ]
    for name, cls in EVENT_TYPES.items():
        lines += [f"## `{name}`", "", inspect.cleandoc(cls.__doc__ or ""), "", *_table(cls), ""]
    lines += ["## Parts of payloads", ""]
    for cls in (CapacityStep, LotSpec):
        lines += [f"### `{cls.__name__}`", "", inspect.cleandoc(cls.__doc__ or ""), "", *_table(cls), ""]
    return "\n".join(line for line in lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
