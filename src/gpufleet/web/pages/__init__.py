"""The dashboard's pages: each module here has a ``router`` (an APIRouter under ``/ui``, out of the schema).

Modules are found by name, so a new page is a new module: no list to edit.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def _pages() -> list[ModuleType]:
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "router"):
            found.append(module)
    return found


PAGES = _pages()
