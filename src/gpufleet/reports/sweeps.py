"""Figures of a sweep (plotly): the fan of active GPUs against each claim, the probability per claim,
and the quota Pareto front; written as one self-contained HTML file, or as PNG (:mod:`.png`)."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

from gpufleet.errors import InputError
from gpufleet.reports import png
from gpufleet.services.outputs import check_writable


def fan_chart(summary: dict, claims: list[dict] | None = None) -> go.Figure:
    """P10-P90 band and P50 line of active GPUs per entity by week; each active-GPU claim as a marker."""
    fig = go.Figure()
    for e in summary["entities"]:
        x = e["dates"]
        fig.add_trace(go.Scatter(x=x + x[::-1], y=e["active_p90"] + e["active_p10"][::-1], fill="toself",
                                 opacity=0.25, line={"width": 0}, name=f"{e['entity']} P10-P90", hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=x, y=e["active_p50"], mode="lines", name=f"{e['entity']} P50"))
    for c in claims or []:
        if c.get("metric") == "active_gpus" and c.get("deadline"):
            fig.add_trace(go.Scatter(x=[c["deadline"]], y=[c["target"]], mode="markers+text", marker_symbol="star",
                                     marker_size=14, text=[f"{c['claim']}: P={c['probability']:.0%}"],
                                     textposition="top left", name=c["claim"]))
    fig.update_layout(title=f"Active GPUs, {summary['samples']} samples from {summary['start']} (P10 / P50 / P90)",
                      xaxis_title="week", yaxis_title="GPUs")
    return fig


def claim_chart(claims: list[dict]) -> go.Figure:
    """Each claim's probability of being met with its 95% interval, per point of view (claim date, today)."""
    fig = go.Figure()
    for view in sorted({c["known_at"] for c in claims}):
        mine = [c for c in claims if c["known_at"] == view]
        fig.add_trace(go.Bar(x=[c["claim"] for c in mine], y=[c["probability"] for c in mine], name=f"known at {view}",
                             error_y={"type": "data", "symmetric": False,
                                      "array": [c["ci95"][1] - c["probability"] for c in mine],
                                      "arrayminus": [c["probability"] - c["ci95"][0] for c in mine]}))
    fig.update_layout(title="Probability that each claim is met (95% Wilson interval)", yaxis_range=[0, 1],
                      barmode="group", yaxis_title="probability")
    return fig


def pareto_chart(rows: list[dict], front: list[dict], chosen: dict | None = None) -> go.Figure:
    """Utilization against the worst guarantee violation, colored by p99 wait; the front joined."""
    ok = [r for r in rows if r["status"] == "ok"]
    label = [f"#{r['sample']} {r['policy']} mix={r['mix']} lend={r['lending']} borrow={r['borrowing']}" for r in ok]
    fig = go.Figure(go.Scatter(x=[r["worst_guarantee_violation_s"] for r in ok], y=[r["utilization"] for r in ok],
                               mode="markers", text=label, name="configurations",
                               marker={"color": [r["wait_p99_s"] for r in ok], "colorbar": {"title": "p99 wait, s"}}))
    front = sorted(front, key=lambda r: r["worst_guarantee_violation_s"])
    fig.add_trace(go.Scatter(x=[r["worst_guarantee_violation_s"] for r in front], y=[r["utilization"] for r in front],
                             mode="lines", name="Pareto front"))
    if chosen is not None:
        fig.add_trace(go.Scatter(x=[chosen["worst_guarantee_violation_s"]], y=[chosen["utilization"]], mode="markers",
                                 marker_symbol="star", marker_size=16, name=f"chosen #{chosen['sample']}"))
    fig.update_layout(title="Quota configurations: utilization against the worst guarantee violation",
                      xaxis_title="worst guarantee violation, s", yaxis_title="utilization")
    return fig


def write(figures: dict[str, go.Figure], path: Path) -> list[Path]:
    """The figures (name -> figure) at ``path``; the files written. ``.png``: one PNG per figure, drawn by
    kaleido in Chrome or Chromium (:mod:`.png`: ``path`` itself for one figure, ``STEM.NAME.png`` for several);
    otherwise one HTML file with every figure (plotly.js inlined once: it opens offline)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".png":
            return png.write(figures, path)
        parts = [f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figures.values())]
        path.write_text("<!doctype html><html><head><meta charset='utf-8'><title>gpufleet sweep</title></head><body>"
                        + "".join(parts) + "</body></html>\n", encoding="utf-8")
        return [path]
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}", field="plot") from None


def check(path: Path | None) -> None:
    """Before a sweep runs (a refusal then costs nothing): ``path``'s folder is writable, and a ``.png`` has
    kaleido and a browser (:func:`.png.require`)."""
    if path is None:
        return
    check_writable(Path(path), "plot")
    if Path(path).suffix.lower() == ".png":
        png.require(Path(path))
