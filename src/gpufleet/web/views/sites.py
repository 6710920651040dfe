"""The Sites page: each site's capacity (slots; MW online against MW drawn, PUE included) against its
installed and planned GPUs over time, each readiness slip marked with the GPUs it left idle."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gpufleet.domain.state import FleetState, Step
from gpufleet.services.fleet import FleetService
from gpufleet.services.head_state import HeadFold
from gpufleet.web import series
from gpufleet.web.charts import Chart, chart


@dataclass(frozen=True)
class Slip:
    site: str
    owner: str
    step: str
    slots: int
    planned: date
    online: date
    days: int
    idle_on_planned: int  # the owner's GPUs idle in its warehouse on the planned date
    idle_gpu_days: int  # at most the step's slots of them, for the days of the slip


@dataclass(frozen=True)
class SiteRow:
    site: str
    owner: str
    pue: float
    slots_online: int
    installed: int
    mw_online: float
    mw_drawn: float  # installed GPUs' watts × PUE


@dataclass(frozen=True)
class SitesPage:
    rows: list[SiteRow]
    slips: list[Slip]
    chart: Chart | None
    planned: list[tuple[str, str, int, str]]  # site, date, GPUs, plan


def _point(state: FleetState, day: date, sites: list[str]) -> dict:
    """What the charts read on ``day``: per site slots, installed GPUs, MW online and drawn; per owner idle."""
    out = {"sites": {}, "idle": {}}
    for name in sites:
        site = state.sites.get(name)
        if site is None:
            out["sites"][name] = (0, 0, 0.0, 0.0)
            continue
        out["sites"][name] = (site.slots_online(day), state.site_gpus[name], site.mw_online(day),
                              state.site_watts[name] * site.pue / 1e6)
    for (owner, _model), n in state.warehouse.items():
        out["idle"][owner] = out["idle"].get(owner, 0) + n
    return out


@dataclass(frozen=True)
class Table:
    """The sites of the entities shown on the as-of date: their rows, capacity steps and planned installs."""

    rows: list[SiteRow]
    steps: list[tuple[str, str, str, Step]]  # site, its owner, step id, the step
    planned: list[tuple[str, str, int, str]]


def table(state: FleetState, as_of: date, entities: list[str]) -> Table:
    """``state``: the fleet as of ``as_of``."""
    sites = sorted(n for n, s in state.sites.items() if s.owner in entities)
    rows = [SiteRow(n, s.owner, s.pue, s.slots_online(as_of), state.site_gpus[n], round(s.mw_online(as_of), 3),
                    round(state.site_watts[n] * s.pue / 1e6, 3)) for n in sites for s in [state.sites[n]]]
    # copies: a kept reading must not change when the fold it was read from moves on (a slip moves a step)
    steps = [(n, state.sites[n].owner, k, replace(st)) for n in sites for k, st in sorted(state.sites[n].steps.items())]
    planned = sorted((p.site, p.start.isoformat(), p.gpus, p.plan) for p in state.proposals.values()
                     if p.kind == "install" and p.site in sites)
    return Table(rows, steps, planned)


def build(fleet: FleetService, entities: list[str], as_of: date, known_at: str | None,
          head: HeadFold | None = None) -> SitesPage:
    """The page on ``as_of`` (as known at ``known_at``): the table, and the series from the first effective
    date with each slip's planned date; both are readings kept across writes that do not change them
    (:func:`series.over_time`; ``head``: the head's fold, if the caller holds it)."""
    (now,) = series.over_time(fleet, [as_of], lambda s, d: table(s, d, entities), known_at,
                              ("sites-table", tuple(entities)), head)
    sites = [r.site for r in now.rows]
    bounds = series.span(fleet, known_at)
    if bounds is None or not sites:
        return SitesPage(now.rows, [], None, now.planned)
    start = min(bounds[0], as_of)
    extra = {st.planned_date for *_n, st in now.steps if st.online_date > st.planned_date
             and start <= st.planned_date <= as_of}
    days = sorted(set(series.sample_days(start, as_of)) | extra)
    points = dict(zip(days, series.over_time(fleet, days, lambda s, d: _point(s, d, sites), known_at,
                                             ("sites", tuple(sites)), head)))
    slips = [_slip(n, owner, k, st, points) for n, owner, k, st in now.steps if st.online_date > st.planned_date]
    return SitesPage(now.rows, slips, _figure(days, points, sites, slips, now.planned), now.planned)


def _slip(site: str, owner: str, step: str, st, points: dict) -> Slip:
    idle = points.get(st.planned_date, {"idle": {}})["idle"].get(owner, 0)
    days = (st.online_date - st.planned_date).days
    return Slip(site, owner, step, st.slots, st.planned_date, st.online_date, days, idle, min(idle, st.slots) * days)


def _figure(days: list[date], points: dict, sites: list[str], slips: list[Slip],
            planned: list[tuple[str, str, int, str]]) -> Chart:
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=["GPU slots online against GPUs installed",
                                        "MW online against MW drawn (installed GPUs × PUE)"])
    x = [d.isoformat() for d in days]
    palette = ["#0b4fa8", "#b3261e", "#2e6b34", "#7b4fa0", "#8a4b00", "#00707a", "#5b5b5b"]
    for i, name in enumerate(sites):
        colour = palette[i % len(palette)]
        values = [points[d]["sites"][name] for d in days]
        common = {"x": x, "legendgroup": name, "line": {"color": colour, "shape": "hv"}}
        fig.add_trace(go.Scatter(y=[v[0] for v in values], name=f"{name} slots", mode="lines",
                                 line={"color": colour, "shape": "hv", "dash": "dash"}, x=x, legendgroup=name,
                                 hovertemplate=f"{name}: " + "%{y:,} slots on %{x}<extra></extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(y=[v[1] for v in values], name=f"{name} installed", mode="lines", **common,
                                 hovertemplate=f"{name}: " + "%{y:,} GPUs installed on %{x}<extra></extra>"),
                      row=1, col=1)
        fig.add_trace(go.Scatter(y=[v[2] for v in values], name=f"{name} MW online", mode="lines", showlegend=False,
                                 x=x, legendgroup=name, line={"color": colour, "shape": "hv", "dash": "dash"},
                                 hovertemplate=f"{name}: " + "%{y:,.1f} MW online on %{x}<extra></extra>"),
                      row=2, col=1)
        fig.add_trace(go.Scatter(y=[v[3] for v in values], name=f"{name} MW drawn", mode="lines", showlegend=False,
                                 **common, hovertemplate=f"{name}: " + "%{y:,.1f} MW drawn on %{x}<extra></extra>"),
                      row=2, col=1)
    if planned:
        fig.add_trace(go.Scatter(x=[p[1] for p in planned], y=[p[2] for p in planned], mode="markers",
                                 name="planned installs", marker={"symbol": "diamond", "size": 10, "color": "#111"},
                                 text=[p[0] for p in planned],
                                 hovertemplate="%{text}: %{y:,} GPUs planned for %{x}<extra></extra>"), row=1, col=1)
    for s in slips:
        fig.add_vrect(x0=s.planned.isoformat(), x1=s.online.isoformat(), fillcolor="#ff8c00", opacity=0.18,
                      line_width=0, row="all", col=1)
        fig.add_annotation(x=s.online.isoformat(), y=1, yref="y domain", text=f"{s.site} slip {s.days:,} d",
                           showarrow=False, xanchor="right", font={"size": 11, "color": "#5c3200"}, row=1, col=1)
    fig.update_yaxes(title_text="GPUs / slots", tickformat=",", row=1, col=1)
    fig.update_yaxes(title_text="MW", tickformat=",.0f", row=2, col=1)
    label = (f"Sites {', '.join(sites)}: slots online (dashed) against GPUs installed, and MW online (dashed) "
             "against MW drawn, over time; shaded spans are readiness slips.")
    return chart(fig, "sites-chart", label, height=640)
