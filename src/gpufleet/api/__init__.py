"""The REST service: a thin HTTP shell over :mod:`gpufleet.services` (``gpufleet serve``)."""

from gpufleet.api.app import create_app
from gpufleet.api.settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app"]
