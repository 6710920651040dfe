"""Print the service's OpenAPI document, as committed in docs/openapi.json (run after changing a route).

    .venv/bin/python scripts/gen_openapi.py > docs/openapi.json

The document is the one ``create_app`` serves at ``/openapi.json``; building it opens no database.
tests/test_openapi.py fails when the two differ.
"""

from __future__ import annotations

import json
import sys


def render(document: dict) -> str:
    """The committed form: sorted keys, two-space indent, a final newline (a stable diff)."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    from gpufleet.api.app import create_app
    from gpufleet.api.settings import ServiceSettings

    sys.stdout.write(render(create_app(ServiceSettings()).openapi()))


if __name__ == "__main__":
    main()
