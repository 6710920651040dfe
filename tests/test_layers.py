"""Imports flow one way: domain <- ledger <- planner, scheduler <- services <- reports <- api <- web <- cli. The core imports no framework."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "gpufleet"
LAYERS = ["domain", "ledger", "planner", "scheduler", "services", "reports", "api", "web", "cli"]  # each may import only the layers before it
SHARED = {"errors"}  # importable from every layer
FRAMEWORKS = {"sqlalchemy", "alembic", "typer", "rich", "fastapi", "uvicorn", "matplotlib", "plotly", "yaml",
              "highspy", "psycopg", "click", "jinja2"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules_of(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_the_layers_below_it(layer):
    allowed = set(LAYERS[: LAYERS.index(layer) + 1]) | SHARED
    for path in modules_of(layer):
        for name in imports(path):
            parts = name.split(".")
            if parts[0] == "gpufleet" and len(parts) > 1:
                assert parts[1] in allowed, f"{path.relative_to(PACKAGE)} imports {name}"


def test_the_domain_core_imports_no_framework_and_does_no_io():
    for path in modules_of("domain"):
        roots = {name.split(".")[0] for name in imports(path)}
        assert not roots & FRAMEWORKS, f"{path.name} imports {roots & FRAMEWORKS}"
        assert not roots & {"os", "pathlib", "sqlite3", "subprocess", "socket", "io"}, path.name


def test_every_layer_exists():
    assert all(modules_of(layer) for layer in LAYERS)
