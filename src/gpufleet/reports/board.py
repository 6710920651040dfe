"""The board report: one self-contained HTML file for a board or its audit committee.

Everything the page needs is inside it: plotly.js is embedded once, inline; there are no
links to a CDN, no external CSS or fonts, so it opens in a browser with no network. The
same ledger (and the same arguments) always gives the same bytes: the as-of date is the
last effective date in the ledger (or ``end``), never today, and the figures have fixed ids.

A shell over the services: nothing but the CLI imports this module.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from gpufleet.domain import views
from gpufleet.domain.governance import GovernancePolicy
from gpufleet.domain.state import FleetState
from gpufleet.reports import sweeps as sweep_figures
from gpufleet.services import governance
from gpufleet.services.claims import claim_forecasts
from gpufleet.services.costs import chargeback
from gpufleet.services.fleet import FleetService
from gpufleet.services.outputs import write_text
from gpufleet.services.sweeps import stored, supply

# (Holding field, legend label, colour): the states a GPU of the entity's own can be in.
FLEET_STATES = (("on_order", "on order", "#b0bec5"), ("in_transit", "in transit", "#64b5f6"),
                ("in_warehouse", "in warehouse (idle)", "#f2a541"),
                ("serving_self", "installed, serving itself", "#2e7d32"),
                ("lent", "installed, lent", "#7b1fa2"), ("failed", "failed", "#c62828"))
SECTION_TITLES = ("Fleet over time by entity and state", "Idle GPUs over time", "Loans and swaps",
                  "Related-party transactions and approvals", "Claims against the record", "Chargeback",
                  "Audit findings")
RISK_TITLE = "Risk: supply sweeps and quota what-if"
_CONFIG = {"displaylogo": False, "responsive": True}
_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1200px;
 padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
.meta{color:#555}.ok{color:#2e7d32;font-weight:bold}.bad{color:#c62828;font-weight:bold}
code{font-size:.9em;word-break:break-all}.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0;width:100%}
th,td{border:1px solid #ccc;padding:.25em .5em;vertical-align:top;text-align:left}td{overflow-wrap:anywhere}
th{background:#f3f3f3}td.num,td.short{white-space:nowrap}td.num{text-align:right}
.sev-critical,.sev-high{color:#c62828;font-weight:bold}.sev-medium{color:#e65100}.empty{color:#666;font-style:italic}
"""


@dataclass(frozen=True)
class Section:
    title: str
    intro: str  # plain text
    body: str  # HTML


@dataclass(frozen=True)
class Weekly:
    """Weekly totals per entity per state (summed over GPU models)."""

    days: list[date]
    series: dict[str, dict[str, list[int]]]  # entity -> Holding field -> GPUs per week


def write_report(service: FleetService, out: Path, policy: GovernancePolicy | None = None,
                 start: date | None = None, end: date | None = None, sweeps: Sequence[Path] = ()) -> Path:
    """Write the board report to ``out`` (HTML) and return its path.

    ``start``/``end`` bound the charts over time and the chargeback months (default: the
    first and last effective dates in the ledger); ``end`` is also the as-of date. ``sweeps``: stored
    sweep folders (``gpufleet sweep ... --out``) shown in a last section, "Risk", read without rerunning.
    """
    risk = [stored.read(path) for path in sweeps]  # refuse a bad folder before the work
    policy = policy or GovernancePolicy()
    first, last = _span(service)
    start, end = start or first, end or last
    as_of = end or date.min  # date.min only for an empty ledger
    # approvals and audit read the whole ledger, so they are judged no earlier than its last day
    # (an earlier date would also precede claims they look at).
    judged_on = max(as_of, last or as_of)
    state = service.state(as_of)
    weekly = _weekly(service, start, end)
    sections = [_fleet_section(weekly), _idle_section(weekly), _gantt_section(state),
                _approvals_section(governance.approvals(service, policy, judged_on), judged_on),
                _claims_section(claim_forecasts(service, state, as_of)),
                _chargeback_section(chargeback(service), start, end),
                _findings_section(governance.audit(service, policy, judged_on), judged_on)]
    if risk:
        sections.append(_risk_section(service, risk))
    out = Path(out)
    write_text(out, _page(service, end, sections), "out")
    return out


# -- data ------------------------------------------------------------------------------


def _span(service: FleetService) -> tuple[date | None, date | None]:
    days = [e.effective_date for e in service.events()]
    return (min(days), max(days)) if days else (None, None)


def _weeks(start: date | None, end: date | None) -> list[date]:
    if start is None or end is None or end < start:
        return []
    days = [start + timedelta(weeks=i) for i in range((end - start).days // 7 + 1)]
    return days if days[-1] == end else [*days, end]


def _weekly(service: FleetService, start: date | None, end: date | None) -> Weekly:
    days = _weeks(start, end)
    series: dict[str, dict[str, list[int]]] = {}
    for i, day in enumerate(days):
        for h in views.holdings(service.state(day), day):
            per_state = series.setdefault(h.entity, {name: [0] * len(days) for name, _, _ in FLEET_STATES})
            for name, _, _ in FLEET_STATES:
                per_state[name][i] += getattr(h, name)
    return Weekly(days, dict(sorted(series.items())))


def _gantt_bars(state: FleetState) -> list[dict]:
    """Loans from start to their close (or end date); swaps from the swap to the last delivery."""
    bars = []
    for loan_id, loan in sorted(state.loans.items()):
        bars.append({"kind": "loan", "label": f"loan {loan_id}: {loan.lender} → {loan.borrower}",
                     "start": loan.start, "end": loan.closed_on or loan.end_date,
                     "text": f"{loan.gpus_opened:,} {loan.model}, USD {loan.fee_usd_per_gpu_hour:.2f}/GPU-hour"})
    for swap_id, swap in sorted(state.swaps.items()):
        lots = [state.lots[lot] for lot in (*swap.lots_a, *swap.lots_b) if lot in state.lots]
        settled = max((lot.delivered_on or lot.planned_date for lot in lots), default=swap.on)
        bars.append({"kind": "slot swap", "label": f"swap {swap_id}: {swap.party_a} ⇄ {swap.party_b}",
                     "start": swap.on, "end": max(settled, swap.on + timedelta(days=1)),
                     "text": f"{swap.gpus:,} {swap.model}, USD {swap.value_a_usd:,.0f}"})
    return bars


# -- sections --------------------------------------------------------------------------


def _fleet_section(weekly: Weekly) -> Section:
    intro = ("Each panel is one entity's own GPUs, stacked by state, week by week. Lent GPUs still belong "
             "to the lender; GPUs it borrows are not in its stack.")
    entities = [e for e, s in weekly.series.items() if any(any(v) for v in s.values())]
    if not entities:
        return Section(SECTION_TITLES[0], intro, _empty("The ledger records no GPUs in this period."))
    fig = make_subplots(rows=len(entities), cols=1, shared_xaxes=True, subplot_titles=entities,
                        vertical_spacing=min(0.06, 1 / len(entities)))
    shown: set[str] = set()
    for row, entity in enumerate(entities, start=1):
        for name, label, colour in FLEET_STATES:
            values = weekly.series[entity][name]
            if any(values):
                fig.add_trace(go.Scatter(x=_iso(weekly.days), y=values, name=label, stackgroup=entity, mode="lines",
                                         line={"width": 0.5, "color": colour, "shape": "hv"}, legendgroup=name,
                                         showlegend=name not in shown), row=row, col=1)
                shown.add(name)
        fig.update_yaxes(title_text="GPUs", row=row, col=1)
    return Section(SECTION_TITLES[0], intro, _figure(fig, 1, 260 * len(entities) + 120))


def _idle_section(weekly: Weekly) -> Section:
    intro = "GPUs delivered but sitting in a warehouse, neither installed nor lent: capital that earns nothing."
    idle = {e: s["in_warehouse"] for e, s in weekly.series.items() if any(s["in_warehouse"])}
    if not idle:
        return Section(SECTION_TITLES[1], intro, _empty("No entity had idle GPUs in this period."))
    fig = go.Figure([go.Scatter(x=_iso(weekly.days), y=values, name=entity, mode="lines", line_shape="hv")
                     for entity, values in idle.items()])
    fig.update_layout(yaxis_title="GPUs in warehouse")
    return Section(SECTION_TITLES[1], intro, _figure(fig, 2, 380))


def _gantt_section(state: FleetState) -> Section:
    intro = ("Loans run from their start to their close (or agreed end); a delivery-slot swap runs from the "
             "swap to the last delivery of the lots exchanged, the time one party waited for what it got back.")
    bars = _gantt_bars(state)
    if not bars:
        return Section(SECTION_TITLES[2], intro, _empty("The ledger records no loans and no swaps."))
    fig = go.Figure()
    for kind, colour in (("loan", "#1565c0"), ("slot swap", "#c62828")):
        rows = [b for b in bars if b["kind"] == kind]
        if rows:
            fig.add_trace(go.Bar(
                orientation="h", name=kind, marker_color=colour, y=[b["label"] for b in rows],
                base=[b["start"].isoformat() for b in rows], x=[_ms(b["end"] - b["start"]) for b in rows],
                customdata=[[b["start"].isoformat(), b["end"].isoformat(), b["text"]] for b in rows],
                hovertemplate="%{y}<br>%{customdata[0]} → %{customdata[1]}<br>%{customdata[2]}<extra></extra>"))
    fig.update_layout(xaxis={"type": "date"}, yaxis={"autorange": "reversed", "automargin": True},
                      barmode="overlay")
    return Section(SECTION_TITLES[2], intro, _figure(fig, 3, 140 + 40 * len(bars)))


def _approvals_section(rows: list[dict], on: date) -> Section:
    intro = ("Transactions between related parties that need approval by the giver's independent directors "
             "or audit committee; 'executed_unapproved' means it happened with no recorded approval. "
             f"The whole ledger, judged on {on}.")
    intro += (" 'votes' gives each vote's signature: unsigned, signed-valid (the voter's registered key, over "
              "the transaction's terms as the ledger has them) or signed-invalid.")
    shown = [{k: v for k, v in r.items() if k not in ("votes", "content_sha256")}
             | {"votes": [f"{v['person']} {v['decision']} {v['signature']}" for v in r["votes"]]} for r in rows]
    body = _table(shown) if rows else _empty("No transaction needs related-party approval.")
    return Section(SECTION_TITLES[3], intro, body)


def _claims_section(rows: list[dict]) -> Section:
    intro = ("Each public claim against what the ledger records at its deadline (or the as-of date, if "
             "earlier), and against the most the ledger supported on the day the claim was made.")
    if not rows:
        return Section(SECTION_TITLES[4], intro, _empty("The ledger records no claims."))
    metrics = sorted({r["metric"] for r in rows})
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=metrics)
    for col, metric in enumerate(metrics, start=1):
        mine = [r for r in rows if r["metric"] == metric]
        for key, label, colour in (("target", "target", "#9e9e9e"), ("actual", "actual", "#1565c0"),
                                   ("supported_when_stated", "supported when stated", "#f2a541")):
            fig.add_trace(go.Bar(x=[r["claim"] for r in mine], y=[r[key] for r in mine], name=label,
                                 marker_color=colour, legendgroup=key, showlegend=col == 1), row=1, col=col)
    fig.update_layout(barmode="group")
    return Section(SECTION_TITLES[4], intro, _table(rows) + _figure(fig, 5, 420))


def _risk_section(service: FleetService, sweeps: list[stored.Stored]) -> Section:
    """Each stored sweep: the fan of active GPUs per entity against its claims and the claim probabilities
    (supply), or the quota configurations' Pareto front (quotas); figures numbered from 100."""
    intro = ("Monte Carlo sweeps stored by `gpufleet sweep --out`, read again here (not rerun): how likely each "
             "claim is, and the quota configurations no other beats. docs/sweeps.md says what is drawn.")
    parts, number = [], 100
    for found in sweeps:
        if found.kind == "supply":
            html_, number = _supply_part(service, found, number)
        else:
            html_, number = _quota_part(found, number)
        parts.append(html_)
    return Section(RISK_TITLE, intro, "".join(parts))


def _supply_part(service: FleetService, found: stored.Stored, number: int) -> tuple[str, int]:
    """A supply sweep's fan per entity (its claims starred), claim probabilities and their table."""
    body = found.summary
    origin = stored.ledger_match(service, found)
    start = date.fromisoformat(body["start"])
    claims = supply.claim_views(service.state(start), start, body["claims"])
    head = (f"<h3>Supply sweep from {_esc(body['start'])}</h3><p class=meta>{body['samples']:,} samples, seed "
            f"{found.seed}, policy {_esc(body['policy'])}, from <code>{_esc(found.path.name)}</code>; "
            f"{_esc(origin)}. Inputs hash <code>{_esc(found.inputs_hash)}</code>.</p>")
    parts = [head]
    for entity in body["entities"]:
        mine = [c for c in claims if c.get("claimant") == entity["entity"]]
        fig = sweep_figures.fan_chart(body | {"entities": [entity]}, mine)
        fig.update_layout(title=f"{entity['entity']}: active GPUs (P10-P90, P50) against its claims")
        parts.append(_figure(fig, number, 380))
        number += 1
    if claims:
        parts.append(_figure(sweep_figures.claim_chart(claims), number, 380))
        number += 1
        parts.append(_table([{"claim": c["claim"], "claimant": c.get("claimant"), "deadline": c["deadline"],
                              "target": c["target"], "probability": f"{c['probability']:.2f}",
                              "95% interval": f"{c['ci95'][0]:.2f}-{c['ci95'][1]:.2f}"} for c in claims]))
    else:
        parts.append(_empty("The sweep found no claim to judge."))
    return "".join(parts), number


def _quota_part(found: stored.Stored, number: int) -> tuple[str, int]:
    """A quota sweep's configurations against the Pareto front, and the front as a table."""
    head = (f"<h3>Quota what-if</h3><p class=meta>{found.samples:,} configurations, seed {found.seed}, from "
            f"<code>{_esc(found.path.name)}</code>. Inputs hash <code>{_esc(found.inputs_hash)}</code>.</p>")
    if not found.front:
        return head + _empty("No configuration could run the trace."), number
    keys = ("sample", "policy", "mix", "lending", "borrowing", "utilization", "worst_guarantee_violation_s",
            "wait_p99_s")
    table = _table([{k: r.get(k) for k in keys} for r in found.front])
    return head + _figure(sweep_figures.pareto_chart(found.rows, found.front), number, 420) + table, number + 1


def _chargeback_section(rows: list[dict], start: date | None, end: date | None) -> Section:
    intro = ("What each entity's GPUs cost per month (depreciation and power), what it earned by lending "
             "and paid for borrowing, and what idle GPUs cost it. GPU-hours by use.")
    lo, hi = (start or date.min).strftime("%Y-%m"), (end or date.max).strftime("%Y-%m")
    rows = [r for r in rows if lo <= str(r.get("month", lo)) <= hi]
    return Section(SECTION_TITLES[5], intro, _table(rows) if rows else _empty("No chargeback in this period."))


def _findings_section(rows: list[dict], on: date) -> Section:
    intro = (f"What an audit of the whole ledger, judged on {on}, found, most severe first. Evidence lists "
             "the ledger sequence numbers of the events behind each finding: `gpufleet events` shows them.")
    rows = sorted(rows, key=lambda f: governance.SEVERITY_ORDER.get(f["severity"], 99))
    return Section(SECTION_TITLES[6], intro, _table(rows) if rows else _empty("No findings."))


# -- HTML ------------------------------------------------------------------------------


def _page(service: FleetService, as_of: date | None, sections: list[Section]) -> str:
    report = service.verify()
    verdict = (f'<span class="ok">verifies</span> ({report.events_checked:,} events)' if report.ok else
               f'<span class="bad">DOES NOT VERIFY</span> at event {report.first_bad_seq}: '
               f'{html.escape(report.reason or "")}')
    header = (f"<h1>GPU fleet: board report</h1><p class=meta>As of <b>{_esc(as_of or 'no events')}</b>. "
              f"Ledger {verdict}; head hash <code>{_esc(report.head_hash)}</code>.</p>"
              + _HOW_TO_READ)
    parts = [f"<section><h2>{i}. {_esc(s.title)}</h2><p>{_esc(s.intro)}</p>{s.body}</section>"
             for i, s in enumerate(sections, start=1)]
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>GPU fleet board report</title>"
            f"<style>{_STYLE}</style>{_include_plotlyjs(sections)}</head><body>{header}{''.join(parts)}"
            "</body></html>\n")


_HOW_TO_READ = (
    "<h3>How to read this</h3><ul>"
    "<li>Every figure is read from an append-only, hash-chained ledger. If the ledger verifies, no recorded "
    "event has been changed or removed since it was written; the head hash above identifies this exact ledger.</li>"
    "<li>Counts are GPUs; money is US dollars. Charts show the state at the start of each week.</li>"
    "<li>Sections 4 and 7 are the ones that need the committee: transactions with related parties that lack "
    "approval, and the audit findings, each with the ledger events behind it.</li>"
    "<li>Hover over a chart for exact figures; the charts need no network.</li></ul>")


def _include_plotlyjs(sections: Iterable[Section]) -> str:
    """plotly.js, once, inline (what ``to_html(include_plotlyjs=True)`` embeds), if any figure needs it."""
    if not any("Plotly.newPlot" in s.body for s in sections):
        return ""
    return ("<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"
            f"<script>{get_plotlyjs()}</script>")


def _figure(fig: go.Figure, number: int, height: int) -> str:
    fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 40, "b": 40}, template="plotly_white",
                      legend={"orientation": "h", "y": -0.12 if height < 500 else -0.04})
    return pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=f"figure-{number}", config=_CONFIG,
                       default_height=f"{height}px")


def _table(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{_esc(c).replace('_', '_<wbr>')}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(r.get(c), c == "severity") for c in columns) + "</tr>" for r in rows)
    return f'<div class=scroll><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _cell(value, severity: bool = False) -> str:
    if isinstance(value, bool) or value is None:
        return f"<td>{_esc('' if value is None else str(value).lower())}</td>"
    if isinstance(value, int):
        return f"<td class=num>{value:,}</td>"
    if isinstance(value, float):
        return f"<td class=num>{value:,.0f}</td>" if abs(value) >= 1000 or value.is_integer() else \
            f"<td class=num>{value:,.2f}</td>"
    if isinstance(value, list | tuple):
        return f"<td>{_esc(', '.join(map(str, value)))}</td>"
    text = str(value)
    css = f"short sev-{text}" if severity else ("short" if len(text) <= 12 else "")
    return f'<td class="{_esc(css)}">{_esc(text)}</td>' if css else f"<td>{_esc(text)}</td>"


def _empty(sentence: str) -> str:
    return f"<p class=empty>{_esc(sentence)}</p>"


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _iso(days: Iterable[date]) -> list[str]:
    return [d.isoformat() for d in days]


def _ms(delta: timedelta) -> int:
    """A duration in milliseconds: plotly's unit for bar lengths on a date axis."""
    return int(delta.total_seconds() * 1000)
