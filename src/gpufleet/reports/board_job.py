"""The board report as a job of the service (kind ``report``, a ``text/html`` result).

It is registered here, not in :mod:`gpufleet.services.jobs`, because services may not import
reports; the API imports this module to offer the kind, and a pool process imports it when it
unpickles the job's function. The report shows every entity, so only a principal who may read
every entity gets it (an auditor, or finance in each entity): :func:`require_reads_everything`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from gpufleet.domain import access
from gpufleet.domain.access import Forbidden
from gpufleet.domain.state import FleetState
from gpufleet.reports.board import write_report
from gpufleet.services import governance
from gpufleet.services.fleet import parse_date
from gpufleet.services.jobs import JobContext, kind

HTML = "text/html; charset=utf-8"


def require_reads_everything(state: FleetState, principal: str) -> None:
    """Raise :class:`Forbidden` unless ``principal`` may read the data of every entity in ``state``."""
    readable = access.readable_entities(state, principal)
    hidden = [] if readable is None else sorted(set(state.entities) - readable)
    if hidden:
        raise Forbidden(f"the board report shows every entity, and '{principal}' may not read "
                        f"{', '.join(hidden)}; ask an auditor")


@kind("report", media_type=HTML)
def board_report(ctx: JobContext, params: dict) -> str:
    """The HTML of the board report (``gpufleet report``), for ``start``..``end`` (default: the ledger's span)."""
    with ctx.service.reading_head() as fold:
        require_reads_everything(fold.state, ctx.principal)
    ctx.progress(0.1, "building the report")
    policy = governance.load_policy(ctx.settings.policy)
    with tempfile.TemporaryDirectory(prefix="gpufleet-report-") as folder:
        out = write_report(ctx.service, Path(folder) / "report.html", policy, parse_date(params.get("start"), "start"),
                           parse_date(params.get("end"), "end"))
        return out.read_text(encoding="utf-8")
