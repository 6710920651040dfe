"""Scenario files: a fleet and its history, validated as a whole (see ``docs/scenario-format.md``).

Every item of a scenario is one event payload (same field names) plus these
bookkeeping fields:

- ``on``: the effective date (``events`` items; the sections have defaults, below);
- ``recorded``: when the fact was recorded (default: 00:00 UTC on ``on``), to tell
  history as it was known at the time;
- ``source``: ids from ``sources`` backing the numbers; ``assumption``: the reasoning
  behind any number without a source.

Sections are sugar for the common registrations; ``events`` takes any event type
with an explicit ``type``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, create_model

from gpufleet.domain import events as ev
from gpufleet.domain.types import FIRST_DAY, LAST_DAY, Day, EnvelopeText


SourceId = Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) else v)]


def _exactly_one(value: Any) -> Any:
    """The version is the integer 1: ``true`` and ``1.0`` compare equal to 1 but are not it."""
    if type(value) is not int:
        raise ValueError(f"the format version must be the integer 1, not {value!r}")
    return value


Version = Annotated[Literal[1], BeforeValidator(_exactly_one)]


def _recorded_in_range(value: datetime | date | None) -> datetime | date | None:
    day = value.date() if isinstance(value, datetime) else value
    if day is not None and not FIRST_DAY <= day <= LAST_DAY:
        raise ValueError(f"must be from {FIRST_DAY} to {LAST_DAY}")
    return value


class Provenance(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    on: Day | None = Field(default=None, description="effective date; defaults per section")
    recorded: Annotated[datetime | date | None, AfterValidator(_recorded_in_range)] = Field(
        default=None, description="recorded time (ISO date or date-time, UTC)")
    source: list[SourceId] = Field(default_factory=list, description="ids from the file's `sources`")
    assumption: str | None = Field(default=None, description="why a number without a source is what it is")


def _item(payload: type[ev.Payload], with_type: bool) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    if with_type:
        fields["type"] = (Literal[payload.event_type], ...)
    return create_model(f"{payload.__name__}Item", __base__=(payload, Provenance), **fields)


class PersonItem(_item(ev.PersonRegistered, False)):  # type: ignore[misc]
    """A person and the roles they hold (each role becomes a ``role_assigned`` event)."""

    roles: list[_item(ev.RoleAssigned, False)] = Field(default_factory=list)  # type: ignore[valid-type]


AnyEvent = Annotated[
    Union[tuple(_item(cls, True) for cls in ev.EVENT_TYPES.values())],  # noqa: UP007
    Field(discriminator="type"),
]

# section -> the payload each of its items is (``persons`` expands to several events)
SECTIONS: dict[str, type[ev.Payload]] = {
    "entities": ev.EntityRegistered,
    "gpu_models": ev.GpuModelRegistered,
    "sites": ev.SiteRegistered,
    "purchase_orders": ev.PurchaseOrderPlaced,
    "demand": ev.DemandRecorded,
    "claims": ev.ClaimRecorded,
}
_FILE_ORDER = ("entities", "persons", "gpu_models", "sites", "purchase_orders", "demand", "claims")


class Scenario(BaseModel):
    """A scenario file. ``start`` is the default effective date of the registrations."""

    model_config = ConfigDict(extra="forbid")
    gpufleet: Version = Field(description="format version")
    name: str
    description: str = ""
    start: Day
    actor: EnvelopeText = "scenario"
    sources: dict[SourceId, str] = Field(default_factory=dict, description="source id -> URL or citation")
    entities: list[_item(ev.EntityRegistered, False)] = Field(default_factory=list)  # type: ignore[valid-type]
    persons: list[PersonItem] = Field(default_factory=list)
    gpu_models: list[_item(ev.GpuModelRegistered, False)] = Field(default_factory=list)  # type: ignore[valid-type]
    sites: list[_item(ev.SiteRegistered, False)] = Field(default_factory=list)  # type: ignore[valid-type]
    purchase_orders: list[_item(ev.PurchaseOrderPlaced, False)] = Field(default_factory=list)  # type: ignore[valid-type]
    demand: list[_item(ev.DemandRecorded, False)] = Field(default_factory=list)  # type: ignore[valid-type]
    claims: list[_item(ev.ClaimRecorded, False)] = Field(default_factory=list)  # type: ignore[valid-type]
    events: list[AnyEvent] = Field(default_factory=list)


@dataclass(frozen=True)
class ScenarioEvent:
    """One event of a scenario, with where it came from (a path into the file)."""

    payload: ev.Payload
    effective_date: date
    recorded: datetime | date | None
    path: tuple[str | int, ...]


def scenario_events(s: Scenario) -> list[ScenarioEvent]:
    """The scenario's events in file order (the ledger orders them by recorded time)."""
    out: list[ScenarioEvent] = []
    for section in _FILE_ORDER:
        for i, item in enumerate(getattr(s, section)):
            out.extend(_expand(section, i, item, s.start))
    for i, item in enumerate(s.events):
        cls = ev.EVENT_TYPES[item.type]
        out.append(_event(cls, item, ("events", i), item.on or s.start))
    return out


def _expand(section: str, index: int, item: BaseModel, start: date) -> list[ScenarioEvent]:
    on = item.on or start
    if section == "persons":
        first = ScenarioEvent(ev.PersonRegistered(person=item.person, name=item.name), on, item.recorded,
                              (section, index))
        roles = [_event(ev.RoleAssigned, r, (section, index, "roles", j), r.on or on)
                 for j, r in enumerate(item.roles)]
        return [first, *roles]
    return [_event(SECTIONS[section], item, (section, index), on)]


def _event(cls: type[ev.Payload], item: BaseModel, path: tuple, on: date) -> ScenarioEvent:
    data = item.model_dump(include=set(cls.model_fields))
    return ScenarioEvent(cls.model_validate(data), on, item.recorded, path)


def unknown_sources(s: Scenario) -> list[tuple[tuple, str]]:
    """(path, id) of every ``source`` id that is not declared in ``sources``."""
    bad = []
    for section in (*_FILE_ORDER, "events"):
        for i, item in enumerate(getattr(s, section)):
            bad += [((section, i, "source"), sid) for sid in item.source if sid not in s.sources]
    return bad


def json_schema() -> dict[str, Any]:
    return Scenario.model_json_schema()
