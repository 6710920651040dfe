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
    comparison = policy_comparison(service)
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
        "policies_2023_12_01": comparison,
        "governance": governance_section(service),
    }


def governance_section(service: FleetService) -> dict:
    """The swap as a related-party transaction, its delay, the claims as known when made, the findings."""
    from gpufleet.services import governance

    policy = governance.GovernancePolicy()
    state = service.state()
    findings = governance.audit(service, policy, WHATIF_END)
    return {
        "swaps": governance.swap_summary(service, policy, WHATIF_END),
        "claims": governance.claim_forecasts(service, state, WHATIF_END),
        "findings": findings,
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


WHATIF_START, WHATIF_END = date(2023, 12, 1), date(2024, 12, 31)
REDIRECTED_GPUS = 12_000
# Planner costs for the comparison (assumptions, in the demo output): a reclaim loses about half a
# checkpoint interval plus a restart per GPU [22]; a move is de-racking, shipping and re-racking.
WHATIF_OPTIONS = {"install_lead_weeks": 2, "move_cost_usd": 1_000.0, "reclaim_cost_usd": 25.0,
                  "loan_fee_usd_per_gpu_hour": 2.35}


def policy_comparison(service: FleetService) -> dict:
    """hold / what happened / owner-first from 2023-12-01 to 2024-12-31, on the same figures.

    Each row is planned from the fleet on 2023-12-01 with every later order, slip and demand
    known in advance, so that only the policy differs: ``hold`` has no swap and no loans;
    ``what happened`` has the swap as recorded and no loans; ``owner-first`` has no swap and
    lends only Tesla's true surplus, with reclaims.
    """
    from gpufleet.domain.views import holdings, unit_prices
    from gpufleet.domain.whatif import replanned
    from gpufleet.planner.plan import make_plan
    from gpufleet.planner.problem import PlanOptions, problem_from_state

    then, now = service.state(WHATIF_START), service.state()
    weeks = (WHATIF_END - WHATIF_START).days // 7 + 1
    options = PlanOptions(horizon_weeks=weeks, **WHATIF_OPTIONS)
    runs = {"hold": (True, "hold"), "what happened": (False, "hold"), "owner-first": (True, "owner-first")}
    plans = {name: make_plan(problem_from_state(replanned(then, now, undo), WHATIF_START, options), policy,
                             weekly=True)
             for name, (undo, policy) in runs.items()}
    hours = 24.0 * options.week_days
    prices = unit_prices(now)
    baseline = sum(plans["hold"]["served_gpus_by_week"]["tesla"])
    rows = []
    for name, plan in plans.items():
        tesla = plan["served_gpus_by_week"]["tesla"]
        swapped = _swap_value(now) if name == "what happened" else 0.0
        lent = sum(loan["gpus"] * prices.get((loan["lender"], loan["model"]), 0.0) for loan in plan["loans"])
        rows.append({
            "policy": name,
            "idle_gpu_weeks": plan["kpis"]["idle_gpu_weeks"]["total"],
            "tesla_delay_weeks": round((baseline - sum(tesla)) / REDIRECTED_GPUS, 2),
            "value_usd": plan["kpis"]["value_usd"],
            "related_party_hardware_usd": round(swapped + lent, 2),
            "related_party_fees_usd": round(sum(loan["gpu_weeks"] * hours * loan["fee_usd_per_gpu_hour"]
                                                for loan in plan["loans"]), 2),
            "tesla_active_2024_12_31": round(tesla[-1]),
            "loans": plan["loans"],
            "reclaims": plan["reclaims"],
        })
    active = sum(h.active for h in holdings(service.state(WHATIF_END), WHATIF_END, "tesla"))
    return {"start": WHATIF_START.isoformat(), "end": WHATIF_END.isoformat(), "options": WHATIF_OPTIONS,
            "claim_gpus": 85_000, "tesla_active_2024_12_31_recorded": active, "policies": rows}


def _swap_value(state) -> float:
    return float(sum(s.value_a_usd for s in state.swaps.values()))
