"""Reading scenario files: YAML with line numbers, validated as a whole."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gpufleet.domain.scenario import Scenario, unknown_sources
from gpufleet.errors import InputError

Path_ = tuple[str | int, ...]
MAX_ERRORS = 20


def read_scenario(path: Path) -> tuple[Scenario, dict[Path_, int]]:
    """Parse and validate ``path``; return the scenario and the line of every item (1-based).

    Raises :class:`InputError` naming the file, line and field of every problem found.
    """
    data, lines = _read_yaml(path)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(path, lines, err["loc"], err["msg"]) for err in exc.errors()[:MAX_ERRORS]]
        raise _many(problems, len(exc.errors())) from None
    bad = [_describe(path, lines, loc, f"source '{sid}' is not listed under `sources`")
           for loc, sid in unknown_sources(scenario)]
    if bad:
        raise _many(bad, len(bad))
    return scenario, lines


def location(path: Path, lines: dict[Path_, int], loc: tuple) -> str:
    """``file:line`` for the deepest part of ``loc`` that the file has."""
    found: Path_ = ()
    for part in loc:
        if found + (part,) in lines:
            found = found + (part,)
    return f"{path}:{lines.get(found, 1)}"


def _describe(path: Path, lines: dict[Path_, int], loc: tuple, msg: str) -> str:
    dotted = ".".join(str(p) for p in loc) or "(file)"
    return f"{location(path, lines, loc)}: field '{dotted}': {msg}"


def _many(problems: list[str], total: int) -> InputError:
    more = f"\n... and {total - len(problems)} more" if total > len(problems) else ""
    return InputError("\n".join(problems) + more)


def _read_yaml(path: Path) -> tuple[Any, dict[Path_, int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    loader = _Yaml12Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise InputError(f"{path}:1: the file is empty")
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = "invalid value" if isinstance(exc, yaml.constructor.ConstructorError) else "malformed YAML"
        raise InputError(f"{path}:{line}: {what}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: malformed YAML: {exc}") from None
    finally:
        loader.dispose()
    lines: dict[Path_, int] = {}
    _walk(node, (), lines, path)
    return data, lines


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. (YAML 1.1 reads ``on:`` and ``no`` as booleans.)"""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _timestamp(loader: yaml.SafeLoader, node: yaml.Node):
    """A date the calendar does not have (2024-02-30) stays text, so validation names its field."""
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError:
        return loader.construct_scalar(node)


_Yaml12Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)


def _walk(node: yaml.Node, at: Path_, lines: dict[Path_, int], path: Path,
          open_nodes: frozenset[int] = frozenset()) -> None:
    if id(node) in open_nodes:
        raise InputError(f"{path}:{node.start_mark.line + 1}: a YAML alias refers to a node that contains it")
    open_nodes = open_nodes | {id(node)}
    lines[at] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise InputError(f"{path}:{key_node.start_mark.line + 1}: duplicate key '{key}'")
            seen.add(key)
            _walk(value_node, at + (key,), lines, path, open_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, at + (i,), lines, path, open_nodes)
