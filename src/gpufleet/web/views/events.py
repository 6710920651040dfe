"""The Events page: the ledger, filtered (type, entity, subject, sequence numbers, dates), a page at a time;
each event with its actor, its hash and a link to what it changed. Only events the principal may read."""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field
from datetime import date

from gpufleet.api.routes.fleet import may_read_event
from gpufleet.domain import access
from gpufleet.domain.access import Principal
from gpufleet.domain.chain import Event
from gpufleet.domain.events import payload_class
from gpufleet.domain.state import FleetState
from gpufleet.services.fleet import FleetService, known_at_instant

PAGE = 50
MAX_SCAN = 20_000  # events one page reads at most (as GET /v1/events)


@dataclass(frozen=True)
class Filters:
    types: list[str] = field(default_factory=list)
    entity: str | None = None
    subject: str | None = None  # loan:ID, swap:ID, proposal:ID
    seqs: list[int] = field(default_factory=list)  # exactly these (an audit finding's evidence)
    seq_from: int | None = None
    seq_to: int | None = None
    date_from: date | None = None
    date_to: date | None = None
    since: int = 0  # the page starts after this sequence number


@dataclass(frozen=True)
class Row:
    event: Event
    payload: dict
    changed: list[tuple[str, str]]  # (label, URL) of what the event changed


def matches(e: Event, payload: dict, state: FleetState, f: Filters, as_of: date | None, known: str | None) -> bool:
    """Does ``e`` pass the filters (the principal's visibility is checked apart)?"""
    if f.seqs and e.seq not in f.seqs:
        return False
    if (f.seq_from and e.seq < f.seq_from) or (f.seq_to and e.seq > f.seq_to):
        return False
    if (f.date_from and e.effective_date < f.date_from) or (f.date_to and e.effective_date > f.date_to):
        return False
    if (as_of and e.effective_date > as_of) or (known and e.recorded_at > known):
        return False
    if f.subject and not _about(e, payload, f.subject):
        return False
    if f.entity:
        try:
            parsed = payload_class(e.event_type).model_validate(payload)
        except Exception:  # an event that no longer validates names no party
            return False
        return f.entity in access.parties(state, parsed)
    return True


def _about(e: Event, payload: dict, subject: str) -> bool:
    kind, _, ident = subject.partition(":")
    if payload.get("subject") == subject:
        return True
    if kind == "proposal":
        return e.event_type == "loan_proposed" and payload.get("loan") == ident
    return payload.get(kind) == ident and e.event_type != "loan_proposed"


def changed(e: Event, payload: dict, state: FleetState) -> list[tuple[str, str]]:
    """Links to what the event changed: its transaction, site, or entity's fleet."""
    links = []
    for key, kind in (("loan", "loan"), ("swap", "swap")):
        if isinstance(payload.get(key), str) and e.event_type != "loan_proposed":
            links.append((f"{kind} {payload[key]}", "/ui/loans"))
    if e.event_type == "loan_proposed":
        subject = f"proposal:{payload.get('loan')}"
        links.append((f"proposal {payload.get('loan')}", _q("/ui/approvals", subject=subject)))
    if isinstance(payload.get("subject"), str):
        links.append((payload["subject"], _q("/ui/events", subject=payload["subject"])))
    site = payload.get("site")
    if isinstance(site, str) and site in state.sites:
        links.append((f"site {site}", _q("/ui/sites", entity=state.sites[site].owner)))
    for key in ("owner", "entity", "buyer", "lender", "claimant"):
        if isinstance(payload.get(key), str) and payload[key] in state.entities:
            links.append((f"{payload[key]}'s fleet", _q("/ui/fleet", entity=payload[key])))
            break
    return links


def _q(path: str, **params: str) -> str:
    return f"{path}?{urllib.parse.urlencode(params)}"


def page(fleet: FleetService, state: FleetState, who: Principal, f: Filters, as_of: date | None,
         known_at: str | None) -> tuple[list[Row], int | None]:
    """One page of the events that pass ``f`` and that ``who`` may read; and the cursor of the next page."""
    everything = access.readable_entities(state, who.id) is None
    known = known_at_instant(known_at) if known_at else None
    found: list[Row] = []
    cursor, last = f.since, None
    until = f.seq_to or (max(f.seqs) if f.seqs else None)
    while len(found) < PAGE and cursor - f.since < MAX_SCAN:
        batch = fleet.events(max(cursor, (f.seq_from or 1) - 1, (min(f.seqs) - 1) if f.seqs else 0), until,
                             f.types, 500)
        if not batch:
            last = None
            break
        for e in batch:
            last = e.seq
            payload = json.loads(e.payload)
            if matches(e, payload, state, f, as_of, known) and (everything or may_read_event(state, who, e)):
                found.append(Row(e, payload, changed(e, payload, state)))
                if len(found) == PAGE:
                    break
        cursor = last
    head = fleet.head().seq
    more = last is not None and last < (until or head) and len(found) == PAGE
    return found, (last if more else None)
