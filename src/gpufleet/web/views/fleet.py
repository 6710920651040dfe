"""The Fleet page: each entity's GPUs by state over time (idle highlighted) and the holdings table."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gpufleet.domain import views
from gpufleet.domain.state import FleetState
from gpufleet.services.fleet import FleetService
from gpufleet.services.head_state import HeadFold
from gpufleet.web import series
from gpufleet.web.charts import Chart, chart

# (Holding field, label, colour), bottom to top of the stack. Idle is the one to see: a strong orange.
STATES = (("serving_self", "active (own)", "#2e6b34"), ("borrowed", "borrowed", "#5aa469"),
          ("lent", "lent", "#7b4fa0"), ("in_warehouse", "idle in warehouse", "#ff8c00"),
          ("in_transit", "in transit", "#6c9fd4"), ("on_order", "on order", "#b7c0cc"),
          ("failed", "failed", "#b3261e"))
IDLE = "in_warehouse"


@dataclass(frozen=True)
class FleetPage:
    entities: list[str]
    chart: Chart | None
    rows: list[views.Holding]
    idle: dict[str, int]  # entity -> GPUs idle in its warehouse on the as-of date
    totals: dict[str, int]  # state -> GPUs over the entities shown, on the as-of date


def per_entity(state: FleetState, day: date, entities: list[str]) -> dict[str, Counter]:
    """Entity -> state -> GPUs (summed over models) on ``day``."""
    found: dict[str, Counter] = {e: Counter() for e in entities}
    for h in views.holdings(state, day):
        if h.entity in found:
            for name, _label, _colour in STATES:
                found[h.entity][name] += getattr(h, name)
    return found


def build(fleet: FleetService, entities: list[str], as_of: date, known_at: str | None,
          head: HeadFold | None = None) -> FleetPage:
    """The page's data, from one fold: the series from the first effective date to ``as_of``, and the
    holdings table on ``as_of`` (as known at ``known_at``); ``head``: the head's fold, if the caller holds
    it (:func:`series.over_time`)."""
    bounds = series.span(fleet, known_at)
    chart_, rows = None, []
    if bounds is not None and entities:
        days = series.sample_days(min(bounds[0], as_of), as_of)

        def take(state: FleetState, day: date) -> tuple[dict[str, Counter], list[views.Holding]]:
            table = [h for h in views.holdings(state, day) if h.entity in entities] if day == as_of else []
            return per_entity(state, day, entities), table

        points = series.over_time(fleet, days, take, known_at, ("fleet", tuple(entities), as_of), head)
        chart_, rows = _figure(days, [p for p, _ in points], entities), points[-1][1]
    idle: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for h in rows:
        idle[h.entity] += h.in_warehouse
        for name, _label, _colour in STATES:
            totals[name] += getattr(h, name)
    return FleetPage(entities, chart_, rows, dict(idle), dict(totals))


def _figure(days: list[date], points: list[dict[str, Counter]], entities: list[str]) -> Chart | None:
    shown = [e for e in entities if any(any(p[e].values()) for p in points)]
    if not shown:
        return None
    fig = make_subplots(rows=len(shown), cols=1, shared_xaxes=True, subplot_titles=shown,
                        vertical_spacing=min(0.08, 0.5 / len(shown)))
    x = [d.isoformat() for d in days]
    legend: set[str] = set()
    for row, entity in enumerate(shown, start=1):
        for name, label, colour in STATES:
            y = [p[entity][name] for p in points]
            if not any(y):
                continue
            idle = name == IDLE
            fig.add_trace(go.Scatter(
                x=x, y=y, name=label, stackgroup=entity, mode="lines", legendgroup=name,
                showlegend=name not in legend, fillcolor=colour,
                line={"width": 1.5 if idle else 0.5, "color": "#c25e00" if idle else colour, "shape": "hv"},
                hovertemplate=f"{entity}, {label}: " + "%{y:,} GPUs on %{x}<extra></extra>"), row=row, col=1)
            legend.add(name)
        fig.update_yaxes(title_text="GPUs", tickformat=",", row=row, col=1)
    label = (f"GPUs of {', '.join(shown)} by state from {x[0]} to {x[-1]}, stacked; GPUs idle in a warehouse "
             "are the bright orange band.")
    return chart(fig, "fleet-chart", label, height=200 * len(shown) + 140)
