"""Shared cluster: replay a trace of the server's traces folder on a cluster and tenants' quotas (a
simulate job, as ``POST /v1/simulations``), and see per tenant utilization, waits, guarantee
violations and lost work, policy against policy, as charts."""

from __future__ import annotations

import plotly.graph_objects as go

POLICY_COLOURS = {"static": "#616161", "borrow": "#1565c0", "fair": "#2e7d32"}
# (field of a tenant's row, chart title, unit, scale applied to the field)
TENANT_CHARTS = (("utilization", "Utilization of each tenant's quota", "%", 100.0),
                 ("queue_mean_s", "Mean wait in the queue", "hours", 1 / 3600),
                 ("guarantee_violation_s", "Guarantee violations (time a tenant waited under its quota)", "hours",
                  1 / 3600),
                 ("lost_gpu_hours", "Work lost to preemption", "GPU-hours", 1.0))


def policy_rows(summary: dict) -> list[dict]:
    """One row per policy: the whole cluster's figures, in the units the page shows."""
    return [{"policy": p["policy"], "jobs": p["jobs"], "finished": p["finished"],
             "utilization_pct": 100.0 * p["utilization"], "queue_mean_h": p["queue_mean_s"] / 3600,
             "jct_p99_h": p["jct_p99_s"] / 3600, "guarantee_violation_h": p["guarantee_violation_s"] / 3600,
             "preemptions": p["preemptions"], "lost_gpu_hours": p["lost_gpu_hours"],
             "jain_over_time": p["jain_over_time"], "finish_time_fairness_max": p["finish_time_fairness_max"]}
            for p in summary["policies"]]


def tenants_of(summary: dict) -> list[str]:
    return sorted({t["tenant"] for p in summary["policies"] for t in p["tenants"]})


def tenant_figure(summary: dict, field: str, title: str, unit: str, scale: float) -> go.Figure | None:
    """One bar per policy per tenant for ``field`` of the tenants' rows (None: no tenants)."""
    tenants = tenants_of(summary)
    if not tenants:
        return None
    fig = go.Figure()
    for p in summary["policies"]:
        by = {t["tenant"]: t.get(field, 0.0) * scale for t in p["tenants"]}
        fig.add_trace(go.Bar(x=tenants, y=[by.get(t, 0.0) for t in tenants], name=p["policy"],
                             marker_color=POLICY_COLOURS.get(p["policy"]),
                             hovertemplate="%{x}, " + p["policy"] + ": %{y:,.1f} " + unit + "<extra></extra>"))
    fig.update_layout(barmode="group", title={"text": title}, height=340, yaxis={"title": unit, "tickformat": ",.1f"},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def figures(summary: dict) -> list[tuple[str, go.Figure]]:
    """The simulation's charts, each with an id."""
    charts = [(f"sim-{field.replace('_', '-')}", tenant_figure(summary, field, title, unit, scale))
              for field, title, unit, scale in TENANT_CHARTS]
    return [(name, fig) for name, fig in charts if fig is not None]
