"""What every dashboard page needs: the signed-in principal, the time control, templates, forms, errors.

A page module is thin: a route that takes :data:`Viewer` (the signed-in principal, or a redirect to the
sign-in page) and :data:`Time` (the as-of date and "as known at" instant from the query string), reads
the services, calls a builder for its data and figures, and returns :func:`render`. Authorization is the
API's: :func:`gpufleet.domain.access.require` and friends, on the fold of the ledger at its head.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import Depends, Query, Request
from starlette.responses import HTMLResponse

from gpufleet.domain import access
from gpufleet.domain.access import Capability, Principal
from gpufleet.domain.state import FleetState
from gpufleet.domain.types import FIRST_DAY, LAST_DAY, AccessRole
from gpufleet.errors import InputError
from gpufleet.services.fleet import FleetService
from gpufleet.web import session as sessions

HERE = Path(__file__).resolve().parent
TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                               autoescape=jinja2.select_autoescape(default=True), trim_blocks=True,
                               lstrip_blocks=True, undefined=jinja2.StrictUndefined)
# (path under /ui, label) of the navigation, in order; a page's module adds its route.
NAV = [("fleet", "Fleet"), ("sites", "Sites"), ("loans", "Loans and swaps"), ("approvals", "Approvals"),
       ("claims", "Claims"), ("risk", "Risk"), ("plans", "Plans"), ("cluster", "Shared cluster"), ("audit", "Audit"),
       ("events", "Events")]


class SignInRequired(Exception):
    """No valid session: the page redirects to the sign-in form (and back afterwards)."""


class NotFoundPage(Exception):
    """A page for something that does not exist, or that the principal may not know exists."""


@dataclass
class Viewing:
    """The signed-in principal, its session, and its access roles at the ledger's head."""

    principal: Principal
    session: sessions.Session
    fleet: FleetService
    roles: dict[str, set[AccessRole]] = field(default_factory=dict)
    auditor: bool = False
    csrf: str = ""

    def readable(self, state: FleetState) -> list[str] | None:
        """The entities it reads (None: every entity, an auditor)."""
        found = access.readable_entities(state, self.principal.id)
        return None if found is None else sorted(found)

    def has(self, role: AccessRole, entity: str | None = None) -> bool:
        return any(role in roles for e, roles in self.roles.items() if entity is None or e == entity)


def fleet_of(request: Request) -> FleetService:
    return request.app.state.fleet


def signer_of(request: Request) -> sessions.Signer:
    return request.app.state.ui_signer


def viewer(request: Request) -> Viewing:
    """The signed-in principal, from the session cookie; :class:`SignInRequired` without one."""
    fleet = fleet_of(request)
    signer = signer_of(request)
    found = signer.load(request.cookies.get(sessions.COOKIE))
    if found is None or not sessions.still_valid(fleet, found):
        raise SignInRequired()
    who = found.as_principal()
    request.state.principal = who.id
    with fleet.reading_head() as head:
        roles = access.grants(head.state, who.id)
        auditor = access.is_auditor(head.state, who.id)
    return Viewing(who, found, fleet, roles, auditor, signer.csrf(found.nonce))


@dataclass(frozen=True)
class TimeControl:
    """The as-of date and the "as known at" instant of a page, from (and back into) its URL."""

    as_of: date | None
    known_at: str | None

    def on(self) -> date:
        return self.as_of or datetime.now(UTC).date()


def time_control(as_of: Annotated[str | None, Query(max_length=10)] = None,
                 known_at: Annotated[str | None, Query(max_length=40)] = None) -> TimeControl:
    """Parse the time control; an empty field means "today" / "now" (a form sends empty strings)."""
    day = None
    if as_of:
        try:
            day = date.fromisoformat(as_of)
        except ValueError:
            raise InputError(f"as_of '{as_of}' is not a date (YYYY-MM-DD)", field="as_of") from None
        if not FIRST_DAY <= day <= LAST_DAY:
            raise InputError(f"as_of must be between {FIRST_DAY} and {LAST_DAY}", field="as_of")
    known = None
    if known_at:
        known = known_at.strip()
        try:
            datetime.fromisoformat(known.replace("Z", "+00:00"))
        except ValueError:
            raise InputError(f"known_at '{known_at}' is not an ISO date or instant", field="known_at") from None
    return TimeControl(day, known)


Viewer = Annotated[Viewing, Depends(viewer)]
Time = Annotated[TimeControl, Depends(time_control)]


def require_read(state: FleetState, who: Viewing, entity: str) -> None:
    """Raise :class:`~gpufleet.domain.access.Forbidden` unless ``who`` reads ``entity``'s data."""
    access.require(state, who.principal, Capability.READ, [entity])


def visible_entities(state: FleetState, who: Viewing, entity: str | None) -> list[str]:
    """The entities a page shows: ``entity`` if given (and readable), else all those it may read."""
    if entity:
        if entity not in state.entities:
            raise NotFoundPage(f"there is no entity '{entity}'")
        require_read(state, who, entity)
        return [entity]
    readable = who.readable(state)
    return sorted(state.entities) if readable is None else [e for e in readable if e in state.entities]


def render(request: Request, template: str, who: Viewing | None, time: TimeControl | None = None,
           status: int = 200, **context: Any) -> HTMLResponse:
    """A page from ``template`` with the layout's context: navigation, principal, time control."""
    page = TEMPLATES.get_template(template).render(
        request=request, who=who, time=time, nav=NAV, current=request.url.path.removeprefix("/ui/").split("/")[0],
        keep=_kept_params(request), time_query=_time_query(time),
        url_with=lambda **kw: url_with(request, **kw), **context)
    return HTMLResponse(page, status, headers={"Cache-Control": "no-store"})


PAGE_ROWS = 100  # rows per page of a long table


@dataclass(frozen=True)
class Paged:
    """One page of a long table: its rows, which page of how many (from 1), the rows before it and in all,
    and the query parameter that names the page."""

    rows: Sequence[Any]
    page: int
    pages: int
    before: int
    total: int
    param: str


def paged(request: Request, rows: Sequence[Any], param: str = "page", size: int | None = None) -> Paged:
    """The page of ``size`` rows (default ``PAGE_ROWS``) of ``rows`` that the query parameter ``param``
    names (default the first; past the last: the last, the table having shrunk since the link was made)."""
    size = size or PAGE_ROWS
    text = request.query_params.get(param) or "1"
    if not text.isdigit() or int(text) < 1 or len(text) > 9:
        raise InputError(f"{param} '{text[:20]}' is not a page number (1, 2, ...)", field=param)
    pages = max(1, -(-len(rows) // size))
    page = min(int(text), pages)
    before = (page - 1) * size
    return Paged(rows[before:before + size], page, pages, before, len(rows), param)


def url_with(request: Request, **changes: Any) -> str:
    """This page's URL with query parameters changed (None removes one): links keep the time control."""
    params = dict(request.query_params)
    for key, value in changes.items():
        if value is None or value == "":
            params.pop(key, None)
        else:
            params[key] = str(value)
    query = urllib.parse.urlencode(params)
    return request.url.path + (f"?{query}" if query else "")


def _time_query(time: TimeControl | None) -> str:
    """``?as_of=...&known_at=...`` for the navigation's links (empty when the page shows today, as known now)."""
    params = {} if time is None else {"as_of": time.as_of, "known_at": time.known_at}
    query = urllib.parse.urlencode({k: str(v) for k, v in params.items() if v})
    return f"?{query}" if query else ""


def _kept_params(request: Request) -> list[tuple[str, str]]:
    """The query parameters other than the time control's: hidden fields of its form."""
    return [(k, v) for k, v in request.query_params.multi_items() if k not in ("as_of", "known_at")]


async def form_of(request: Request) -> dict[str, str]:
    """A urlencoded form's fields (the last value of each); :func:`check_csrf` checks its token."""
    body = (await request.body()).decode("utf-8", "replace")
    return dict(urllib.parse.parse_qsl(body, keep_blank_values=True))


def check_csrf(request: Request, who: Viewing, fields: dict[str, str]) -> None:
    """Refuse a state-changing form whose CSRF token is not the session's."""
    if not signer_of(request).check_csrf(who.session.nonce, fields.get("csrf")):
        raise access.Forbidden("the form's CSRF token is missing or wrong: reload the page and submit it again")


def figure_json(fig) -> str:
    """A plotly figure as the JSON the page's script renders (``<script type=application/json>``)."""
    return json.dumps(fig.to_plotly_json(), default=_plain, separators=(",", ":")).replace("</", "<\\/")


def _plain(value):
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot encode {type(value).__name__}")


def number(value: float | int | None, unit: str = "", digits: int = 0) -> str:
    """A number with thousands separators and its unit: ``12,345 GPUs``."""
    if value is None:
        return "–"
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".strip()


TEMPLATES.filters["number"] = number
