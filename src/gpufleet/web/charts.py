"""Plotly figures for the dashboard: one look for every chart, and the JSON a page embeds."""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go

from gpufleet.web.common import figure_json

FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 13, "color": "#1b1f24"}


@dataclass(frozen=True)
class Chart:
    """A figure to draw in the page: its div id, a one-line description (the div's label) and its JSON."""

    id: str
    label: str
    json: str
    height: int


def chart(fig: go.Figure, ident: str, label: str, height: int = 380) -> Chart:
    """``fig`` with the dashboard's layout, ready for ``templates/_chart.html``."""
    fig.update_layout(height=height, margin={"l": 64, "r": 16, "t": 36, "b": 40}, template="plotly_white",
                      font=FONT, legend={"orientation": "h", "y": -0.12 if height < 500 else -0.05},
                      hoverlabel={"font": FONT})
    return Chart(ident, label, figure_json(fig), height)

