"""The web dashboard under ``/ui`` (docs/dashboard.md): server-rendered pages over the services.

``create_app(settings)`` is the API application with the dashboard added; ``gpufleet serve`` runs it.
"""

from gpufleet.web.app import create_app

__all__ = ["create_app"]
