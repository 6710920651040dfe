"""Reading scenario files: YAML with line numbers, validated as a whole.

A file is read within bounds before it is walked (docs/scenario-format.md, "Bounds"): at most
``MAX_FILE_BYTES``, mappings and sequences nested at most ``MAX_DEPTH`` deep, and at most
``MAX_NODES`` nodes with every alias expanded. The composer counts as it goes, so a small file
of aliases that would expand to millions of nodes (a "billion laughs") is refused after reading
about ``MAX_NODES`` of them, in well under a second, instead of being walked path by path.
"""

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
MAX_FILE_BYTES = 16 * 1024 * 1024  # 25 times `gpufleet generate large`
MAX_DEPTH = 32  # the format itself nests 6 deep
MAX_NODES = 1_000_000  # keys, values and items, aliases expanded; 15 times `generate large`


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
    return f"{location(path, lines, loc)}: field '{dotted}': {msg.removeprefix('Value error, ')}"


def _many(problems: list[str], total: int) -> InputError:
    more = f"\n... and {total - len(problems)} more" if total > len(problems) else ""
    return InputError("\n".join(problems) + more)


def read_text(path: Path, max_bytes: int) -> str:
    """The UTF-8 text of ``path``, refused past ``max_bytes`` (read no further: a device never ends)."""
    try:
        with path.open("rb") as f:
            raw = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise InputError(f"{path}: the file is larger than {max_bytes:,} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{path}:{line}: cannot read: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _read_yaml(path: Path) -> tuple[Any, dict[Path_, int]]:
    """The document in ``path`` and the line of each of its nodes, within the bounds above."""
    text = read_text(path, MAX_FILE_BYTES)
    loader = None
    try:
        loader = _Yaml12Loader(text, path)  # checks every character first
        node = loader.get_single_node()
        if node is None:
            raise InputError(f"{path}:1: the file is empty")
        data = loader.construct_document(node)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise InputError(f"{path}:{line}: malformed YAML: unacceptable character #x{exc.character:04x} "
                         "(control characters such as NUL are not allowed)") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = "invalid value" if isinstance(exc, yaml.constructor.ConstructorError) else "malformed YAML"
        raise InputError(f"{path}:{line}: {what}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: malformed YAML: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()
    lines: dict[Path_, int] = {}
    _walk(node, (), lines, path)
    return data, lines


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. (YAML 1.1 reads ``on:`` and ``no`` as booleans.)

    Composes within ``MAX_DEPTH`` and ``MAX_NODES``, counting an alias as the size (and
    height) of the node it names, so the bounds hold for the document as it will be walked.
    """

    def __init__(self, text: str, path: Path):
        super().__init__(text)
        self.path = path
        self.depth = 0  # of the node being composed
        self.deepest = 0  # the deepest level reached, aliases expanded
        self.nodes = 0  # composed so far, aliases expanded
        self.expanded: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, height) of its node

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self.anchors and event.anchor not in self.expanded:
                self._refuse(event, "a YAML alias refers to a node that contains it")
            nodes, height = self.expanded.get(event.anchor, (1, 1))
            self._count(event, nodes, self.depth + height)
            return super().compose_node(parent, index)
        self.depth += 1
        self._count(event, 1, self.depth)
        outer, self.deepest = self.deepest, self.depth
        before = self.nodes - 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if event.anchor is not None:
            self.expanded[event.anchor] = (self.nodes - before, self.deepest - self.depth)
        self.deepest = max(outer, self.deepest)
        return node

    def _count(self, event: yaml.Event, nodes: int, depth: int) -> None:
        self.nodes += nodes
        self.deepest = max(self.deepest, depth)
        if depth > MAX_DEPTH:
            self._refuse(event, f"nested more than {MAX_DEPTH} levels deep")
        if self.nodes > MAX_NODES:
            self._refuse(event, f"more than {MAX_NODES:,} YAML nodes (keys, values and items, aliases expanded)")

    def _refuse(self, event: yaml.Event, why: str):
        raise InputError(f"{self.path}:{event.start_mark.line + 1}: {why}")


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _or_text(construct):
    """``construct``, except that a scalar it cannot build (a date the calendar does not have,
    2024-02-30; an integer past Python's 4,300 digits) stays text, so validation names its field."""
    def build(loader: yaml.SafeLoader, node: yaml.Node):
        try:
            return construct(loader, node)
        except ValueError:
            return loader.construct_scalar(node)
    return build


_Yaml12Loader.add_constructor("tag:yaml.org,2002:timestamp", _or_text(yaml.SafeLoader.construct_yaml_timestamp))
_Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _or_text(yaml.SafeLoader.construct_yaml_int))


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
