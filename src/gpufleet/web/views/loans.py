"""The Loans and swaps page: a Gantt chart of every loan and delivery-slot swap the principal may read,
with reclaims and their notice periods; each bar links to its events and its approval."""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from datetime import date, timedelta

import plotly.graph_objects as go

from gpufleet.domain.chain import Event
from gpufleet.domain.state import FleetState
from gpufleet.web.charts import Chart, chart


@dataclass(frozen=True)
class Bar:
    kind: str  # loan | slot swap | notice | reclaimed
    subject: str  # loan:ID or swap:ID
    label: str
    start: date
    end: date
    text: str
    events_url: str
    approval_url: str
    parties: tuple[str, ...] = ()  # the entities on either side: who may read the bar


def events_url(subject: str) -> str:
    return "/ui/events?" + urllib.parse.urlencode({"subject": subject})


def approval_url(subject: str) -> str:
    return "/ui/approvals?" + urllib.parse.urlencode({"subject": subject})


def bars(state: FleetState, reclaims: list[Event], readable=None) -> list[Bar]:
    """Loans (start to close or end), reclaims (notice given to effective), swaps (swap to last delivery);
    ``readable(parties)``: may the principal read a transaction between these entities? (None: every bar,
    each with its parties, for the caller to filter: :func:`visible`)."""
    readable = readable or (lambda _parties: True)
    by_loan: dict[str, list[tuple[Event, dict]]] = {}
    for e in reclaims:  # read each reclaim once, not once per loan
        p = json.loads(e.payload)
        by_loan.setdefault(p.get("loan"), []).append((e, p))
    found = []
    for loan_id, loan in sorted(state.loans.items()):
        if not readable({loan.lender, loan.borrower}):
            continue
        subject = f"loan:{loan_id}"
        row = f"loan {loan_id}: {loan.lender} → {loan.borrower}"
        found.append(Bar("loan", subject, row, loan.start, loan.closed_on or loan.end_date,
                         f"{loan.gpus_opened:,} {loan.model} GPUs at USD {loan.fee_usd_per_gpu_hour:,.2f}/GPU-hour; "
                         f"reclaim notice {loan.reclaim_notice_days:,} days",
                         events_url(subject), approval_url(subject), (loan.lender, loan.borrower)))
        for e, p in by_loan.get(loan_id, ()):
            given = date.fromisoformat(p["notice_given_on"])
            until = max(e.effective_date, given + timedelta(days=1))
            found.append(Bar("reclaim notice", subject, row, given, until,
                             f"{p['gpus']:,} GPUs reclaimed on {e.effective_date} (notice {given}); event {e.seq}",
                             f"/ui/events?seq={e.seq}", approval_url(subject), (loan.lender, loan.borrower)))
    for swap_id, swap in sorted(state.swaps.items()):
        if not readable({swap.party_a, swap.party_b}):
            continue
        lots = [state.lots[x] for x in (*swap.lots_a, *swap.lots_b) if x in state.lots]
        settled = max((x.delivered_on or x.planned_date for x in lots), default=swap.on)
        subject = f"swap:{swap_id}"
        found.append(Bar("slot swap", subject, f"swap {swap_id}: {swap.party_a} ⇄ {swap.party_b}", swap.on,
                         max(settled, swap.on + timedelta(days=1)),
                         f"{swap.gpus:,} {swap.model} GPUs, USD {swap.value_a_usd:,.0f} given up",
                         events_url(subject), approval_url(subject), (swap.party_a, swap.party_b)))
    return found


def visible(found: list[Bar], readable) -> list[Bar]:
    """The bars of transactions between entities the principal may read (``readable(parties)``)."""
    return [b for b in found if readable(set(b.parties))]


COLOURS = {"loan": "#0b4fa8", "reclaim notice": "#ff8c00", "slot swap": "#b3261e"}
MAX_TRANSACTIONS = 150  # rows a Gantt chart stays legible with


def latest(found: list[Bar], limit: int = MAX_TRANSACTIONS) -> tuple[list[Bar], int]:
    """The bars of the ``limit`` transactions that started last, and how many transactions there are."""
    starts: dict[str, date] = {}
    for b in found:
        starts[b.subject] = min(starts.get(b.subject, b.start), b.start)
    kept = set(sorted(starts, key=lambda s: (starts[s], s), reverse=True)[:limit])
    return [b for b in found if b.subject in kept], len(starts)


def figure(found: list[Bar]) -> Chart | None:
    """The Gantt chart: one row per transaction, bars by kind; a click opens the bar's events."""
    if not found:
        return None
    fig = go.Figure()
    for kind, colour in COLOURS.items():
        rows = [b for b in found if b.kind == kind]
        if rows:
            fig.add_trace(go.Bar(
                orientation="h", name=kind, marker_color=colour, y=[b.label for b in rows],
                base=[b.start.isoformat() for b in rows],
                x=[int((b.end - b.start).total_seconds() * 1000) for b in rows],
                customdata=[[b.start.isoformat(), b.end.isoformat(), b.text, b.events_url] for b in rows],
                width=0.5 if kind == "reclaim notice" else 0.8,
                hovertemplate="%{y}<br>%{customdata[0]} → %{customdata[1]}<br>%{customdata[2]}<extra></extra>"))
    labels = list(dict.fromkeys(b.label for b in found))
    fig.update_layout(xaxis={"type": "date"}, yaxis={"autorange": "reversed", "automargin": True},
                      barmode="overlay", meta={"link": 3})
    label = (f"{len(labels):,} loans and swaps from {min(b.start for b in found)} to {max(b.end for b in found)}; "
             "click a bar to open its events (the table below has the same links).")
    return chart(fig, "loans-chart", label, height=160 + 44 * len(labels))
