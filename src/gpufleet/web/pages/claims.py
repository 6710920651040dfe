"""Claims: each public claim against the record at its deadline, and against what the ledger supported
on the day the claim was made (as known that day), at the page's as-of date and "as known at" time."""

from __future__ import annotations

from datetime import date

import plotly.graph_objects as go
from fastapi import APIRouter, Request
from starlette.responses import Response
from plotly.subplots import make_subplots

from gpufleet.domain import access
from gpufleet.domain.state import FleetState
from gpufleet.services import claims as claim_readings
from gpufleet.services.fleet import FleetService
from gpufleet.services.head_state import HeadFold
from gpufleet.web import common

UNITS = {"active_gpus": "GPUs", "gpu_spend_usd": "USD"}
SERIES = (("target", "target", "#616161"), ("actual", "recorded", "#1565c0"),
          ("supported_when_stated", "supported when stated", "#b35900"))


def claim_rows(service: FleetService, on: date, known_at: str | None = None,
               head: HeadFold | None = None) -> list[dict]:
    """Each claim made by ``on`` (as recorded by ``known_at``): the recorded metric at its deadline (or
    ``on``, if earlier) and the most the ledger supported by the deadline, as known the day it was made
    (:func:`gpufleet.services.claims.claim_forecasts`), with what the page adds: model, gap, source.
    ``head``: the head's fold, if the caller holds it; it has the same claims made by ``on`` (a claim is
    recorded effective the day it is made, and never changed but by a void)."""
    state = head.state if head is not None and known_at is None else service.state(on, known_at)
    rows = claim_readings.claim_forecasts(service, state, on, known_at, head)
    for row in rows:
        c = state.claims[row["claim"]]
        row.update(metric=str(c.metric), model=c.model, gap=row["actual"] - c.target, source_url=c.source_url)
    return rows


def visible(rows: list[dict], state: FleetState, principal: str) -> list[dict]:
    """The claims of entities ``principal`` may read (``state``: the ledger's head, where roles are)."""
    return [r for r in rows if access.may_read(state, principal, {r["claimant"]})]


def verdict(row: dict) -> str:
    """One sentence a reader can check against the two figures."""
    unit = UNITS.get(row["metric"], "")
    when = "was" if row["achievable_when_stated"] else "was not"
    return (f"On {row['stated_on']} the record supported {row['supported_when_stated']:,.0f} {unit} by "
            f"{row['deadline']}: the claim {when} achievable when made; {row['status']}.")


def claims_figure(rows: list[dict]) -> go.Figure | None:
    """Target, recorded and supported-when-stated per claim, one panel per metric (None: no claims)."""
    if not rows:
        return None
    metrics = sorted({r["metric"] for r in rows})
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[f"{m} ({UNITS.get(m, '')})" for m in metrics])
    for col, metric in enumerate(metrics, start=1):
        mine = [r for r in rows if r["metric"] == metric]
        for key, label, colour in SERIES:
            fig.add_trace(go.Bar(x=[r["claim"] for r in mine], y=[r[key] for r in mine], name=label,
                                 marker_color=colour, legendgroup=key, showlegend=col == 1,
                                 hovertemplate="%{x}<br>" + label + ": %{y:,.0f}<extra></extra>"), row=1, col=col)
        fig.update_yaxes(tickformat=",.0f", row=1, col=col)
    fig.update_layout(barmode="group", height=420, legend={"orientation": "h", "y": -0.2})
    return fig


# -- the page -------------------------------------------------------------------------------------

router = APIRouter(prefix="/ui", include_in_schema=False)


@router.get("/claims")
def page(request: Request, who: common.Viewer, time: common.Time) -> Response:
    """The claims the signed-in principal may read, at the page's as-of date and as known at its time."""
    fleet = request.app.state.fleet
    on = time.on()
    with fleet.reading_head() as head:  # seconds to read at a million events, so kept per head
        key = ("ui-claims", head.seq, head.hash, on, time.known_at, date.today())
        rows = fleet.kept(key, lambda: claim_rows(fleet, on, time.known_at, head)).data
        rows = visible(rows, head.state, who.principal.id)
    fig = claims_figure(rows)
    chart = None if fig is None else {"id": "claims-chart", "json": common.figure_json(fig),
                                      "label": "Each claim's target, what the record holds at its deadline (or the "
                                               "as-of date) and the most the ledger supported when it was made"}
    return common.render(request, "claims.html", who, time, page_title="Claims", rows=rows, chart=chart,
                         charts=chart is not None, units=UNITS, verdict=verdict)

