"""``gpufleet demo``: the bundled 2024 H100 story, loaded into a fresh ledger and read back."""

from __future__ import annotations

from datetime import date
from importlib import resources
from pathlib import Path

from gpufleet.errors import ConflictError
from gpufleet.services.fleet import FleetService

DEMO_DATES = (date(2023, 12, 31), date(2024, 4, 23), date(2024, 6, 4), date(2024, 12, 31))
HOLDING_FIGURES = ("owned", "active", "installed", "in_warehouse", "lent", "borrowed", "on_order", "in_transit")


def example_path() -> Path:
    """The bundled scenario (``examples/h100-2024.yaml`` in the source tree)."""
    return Path(str(resources.files("gpufleet") / "examples" / "h100-2024.yaml"))


def run_demo(database: str) -> dict:
    """Load the example into the empty ledger at ``database`` and report the four dates.

    Each date is read as the ledger knew it at the end of that day. The forecast shows
    what the ledger said on 2024-04-23 (the day of the 85k claim) about 2024-12-31.
    """
    service = FleetService.open(database, create=True)
    if service.head().seq:
        raise ConflictError(f"the demo needs an empty ledger; {database} already has events", field="db")
    loaded = service.load(example_path())
    dates = [_date_report(service, day) for day in DEMO_DATES]
    forecast = service.status(as_of=date(2024, 12, 31), known_at="2024-04-23", entity="tesla")
    report = service.verify()
    return {
        "database": database,
        "scenario": str(example_path()),
        "events": loaded.events,
        "head_hash": loaded.head_hash,
        "verified": report.ok,
        "dates": dates,
        "forecast_2024_04_23_for_2024_12_31": {
            "entity": "tesla",
            "holdings": _by_entity(forecast["holdings"]),
            "claims": forecast["claims"],
        },
    }


def _date_report(service: FleetService, day: date) -> dict:
    status = service.status(as_of=day, known_at=day.isoformat())
    return {
        "as_of": day.isoformat(),
        "holdings": _by_entity(status["holdings"]),
        "transfers": status["transfers"],
        "claims": status["claims"],
        "sites": status["sites"],
    }


def _by_entity(rows: list[dict]) -> list[dict]:
    """Sum holdings over GPU models, one row per entity."""
    out: dict[str, dict] = {}
    for row in rows:
        agg = out.setdefault(row["entity"], {"entity": row["entity"]} | dict.fromkeys(HOLDING_FIGURES, 0)
                             | {"due_by_as_of": 0})
        for name in (*HOLDING_FIGURES, "due_by_as_of"):
            agg[name] += row[name]
    return list(out.values())
