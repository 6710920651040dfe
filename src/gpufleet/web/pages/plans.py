"""Plans: run one policy or compare them all (a plan job, as ``POST /v1/plans``), see idle GPU-weeks,
value per entity, delayed demand and the proposed loans side by side, and apply a plan as proposals
(as ``POST /v1/plans/apply``)."""

from __future__ import annotations

import plotly.graph_objects as go

POLICY_COLOURS = {"hold": "#616161", "max-value": "#1565c0", "owner-first": "#2e7d32", "fair": "#8e24aa"}


def entities_of(plans: list[dict]) -> list[str]:
    """The entities a comparison shows rows of (the caller's, or all for an auditor)."""
    names = {e for p in plans for table in ("idle_gpu_weeks", "value_usd") for e in p["kpis"].get(table, {})}
    return sorted(names - {"total"})


def _unserved(plan: dict, entity: str) -> float:
    """Demand of ``entity`` the plan leaves unserved (GPU-weeks): the delay, over all tiers."""
    return float(sum(plan["kpis"].get("unserved_gpu_weeks", {}).get(entity, {}).values()))


def summary_rows(plans: list[dict]) -> list[dict]:
    """One row per policy: idle GPU-weeks, value, delayed demand (GPU-weeks), and the loans proposed,
    summed over the entities shown."""
    entities = entities_of(plans)
    rows = []
    for p in plans:
        kpis = p["kpis"]
        rows.append({
            "policy": p["policy"], "status": p["status"],
            "idle_gpu_weeks": sum(kpis["idle_gpu_weeks"].get(e, 0.0) for e in entities),
            "value_usd": sum(kpis["value_usd"].get(e, 0.0) for e in entities),
            "unserved_gpu_weeks": sum(_unserved(p, e) for e in entities),
            "loans": len(p["loans"]), "loan_gpu_weeks": sum(x["gpu_weeks"] for x in p["loans"]),
            "reclaims": len(p["reclaims"]), "solve_s": p.get("solve", {}).get("solve_s")})
    return rows


def entity_rows(plans: list[dict]) -> list[dict]:
    """Per entity, each policy's idle GPU-weeks, value and delayed demand, side by side."""
    rows = []
    for entity in entities_of(plans):
        row: dict = {"entity": entity}
        for p in plans:
            row[p["policy"]] = {"idle_gpu_weeks": p["kpis"]["idle_gpu_weeks"].get(entity, 0.0),
                                "value_usd": p["kpis"]["value_usd"].get(entity, 0.0),
                                "unserved_gpu_weeks": _unserved(p, entity)}
        rows.append(row)
    return rows


def loan_rows(plans: list[dict]) -> list[dict]:
    """Every loan each policy proposes, with its policy."""
    return [{"policy": p["policy"]} | loan for p in plans for loan in p["loans"]]


def kpi_figure(plans: list[dict], kpi: str, title: str, unit: str) -> go.Figure | None:
    """One bar per policy per entity for ``kpi`` (idle_gpu_weeks, value_usd or unserved_gpu_weeks)."""
    entities = entities_of(plans)
    if not plans or not entities:
        return None
    fig = go.Figure()
    for p in plans:
        values = [_unserved(p, e) if kpi == "unserved_gpu_weeks" else p["kpis"][kpi].get(e, 0.0) for e in entities]
        fig.add_trace(go.Bar(x=entities, y=values, name=p["policy"], marker_color=POLICY_COLOURS.get(p["policy"]),
                             hovertemplate="%{x}, " + p["policy"] + ": %{y:,.0f} " + unit + "<extra></extra>"))
    fig.update_layout(barmode="group", title={"text": title}, height=360, yaxis={"title": unit, "tickformat": ",.0f"},
                      legend={"orientation": "h", "y": -0.2})
    return fig


def figures(plans: list[dict]) -> list[tuple[str, go.Figure]]:
    """The comparison's charts, each with an id; none for an empty comparison."""
    charts = [("plan-idle", kpi_figure(plans, "idle_gpu_weeks", "Idle GPU-weeks", "GPU-weeks")),
              ("plan-value", kpi_figure(plans, "value_usd", "Value per entity", "USD")),
              ("plan-delay", kpi_figure(plans, "unserved_gpu_weeks", "Demand left unserved", "GPU-weeks"))]
    return [(name, fig) for name, fig in charts if fig is not None]
