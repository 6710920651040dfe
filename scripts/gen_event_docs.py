"""Write docs/events.md from the payload models (run after changing an event type).

    python scripts/gen_event_docs.py > docs/events.md
"""

from __future__ import annotations

import enum
import inspect
import typing

from gpufleet.domain.events import EVENT_TYPES


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


def render() -> str:
    lines = [
        "# Event types",
        "",
        "Generated from `src/gpufleet/domain/events.py` by `scripts/gen_event_docs.py`; do not edit by hand.",
        "Every event also has the envelope fields described in [ledger.md](ledger.md): `seq`, `recorded_at`,",
        "`effective_date`, `actor`, `type`, `idempotency_key`, `prev_hash` and `hash`.",
        "",
    ]
    for name, cls in EVENT_TYPES.items():
        lines += [f"## `{name}`", "", inspect.cleandoc(cls.__doc__ or ""), ""]
        lines += ["| field | type | required | description |", "|---|---|---|---|"]
        for field, info in cls.model_fields.items():
            required = "yes" if info.is_required() else f"no (default `{info.get_default(call_default_factory=True)}`)"
            lines.append(f"| `{field}` | {_type_name(info.annotation)} | {required} | {info.description or ''} |")
        lines.append("")
    return "\n".join(line for line in lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
