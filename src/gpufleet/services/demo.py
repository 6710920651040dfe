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
        "disclosure": disclosure_section(service, Path(database).parent),
    }


def governance_section(service: FleetService) -> dict:
    """The swap as a related-party transaction, its delay, the claims as known when made, the findings."""
    from gpufleet.services import claims, governance

    policy = governance.GovernancePolicy()
    state = service.state()
    findings = governance.audit(service, policy, WHATIF_END)
    return {
        "swaps": governance.swap_summary(service, policy, WHATIF_END),
        "claims": claims.claim_forecasts(service, state, WHATIF_END),
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


# -- verifiable disclosure: checkpoints, a bundle, and a rewrite caught ------------------------------------------

CHECKPOINT_DAYS = (date(2023, 12, 31), date(2024, 12, 31))
SWAP_ID = "dec-2023-h100"


def disclosure_section(service: FleetService, folder: Path) -> dict:
    """Publish checkpoints at the end of 2023 (after the swap) and of 2024 with a demo key (in a temporary
    folder, 0600, removed at the end), write the related-party bundle to ``folder``, verify it offline, and
    show that a rewrite of the swap, chain rebuilt, passes ``verify`` but not the consistency proof."""
    import shutil
    import tempfile

    from gpufleet.domain import disclosure as bundles
    from gpufleet.services import disclosure, keys

    key_dir = Path(tempfile.mkdtemp(prefix="gpufleet-demo-key-"))
    try:
        signer = keys.generate_key_files("demo.gpufleet.example/h100-2024", key_dir / "log.key")
        notes = [checkpoint_at(service, signer, _size_known_by(service, day)) for day in CHECKPOINT_DAYS]
        for day, note in zip(CHECKPOINT_DAYS, notes, strict=True):
            (folder / f"checkpoint-{day.year}.note").write_text(note, encoding="utf-8")
        bundle = disclosure.build_bundle(service, "related-party", note=notes[1], keys=[signer.vkey],
                                         previous=notes[0])
        path = folder / "disclosure.json"
        path.write_text(disclosure.bundle_text(bundle), encoding="utf-8")
        report = bundles.verify_bundle(bundles.load_bundle(bundle), [signer.vkey], previous=notes[0])
        tamper = rewrite_story(service, folder, notes[0], bundle)
    finally:
        shutil.rmtree(key_dir, ignore_errors=True)
    return {"key": signer.vkey.text, "checkpoints": [_checkpoint_row(day, n) for day, n in
                                                     zip(CHECKPOINT_DAYS, notes, strict=True)],
            "bundle": str(path), "verified": report.as_dict(), "tamper": tamper}


def _size_known_by(service: FleetService, day: date) -> int:
    """The number of events recorded by the end of ``day``: a checkpoint's tree size then."""
    from gpufleet.domain.chain import end_of_day

    last = end_of_day(day)
    return max((e.seq for e in service.events() if e.recorded_at <= last), default=0)


def checkpoint_at(service: FleetService, signer, size: int) -> str:
    """A signed checkpoint note of the tree of ``size`` events, with event ``size``'s recorded time and hash.
    At the head it is recorded (``create_checkpoint``); at a past size it is only signed: a demo replaying
    history signs today what would have been published then."""
    from gpufleet.domain.notes import Checkpoint, gpufleet_extensions, sign_note
    from gpufleet.ledger import merkle_store
    from gpufleet.services import checkpoints

    if size == service.head().seq:
        return checkpoints.create_checkpoint(service, signer).note
    event = next(iter(service.events(size - 1, size)))
    with service.engine.connect() as conn:
        root = merkle_store.root_hash(conn, size)
    body = Checkpoint(signer.name, size, root, gpufleet_extensions(event.recorded_at, size, event.hash)).body
    return sign_note(body, [signer])


def _checkpoint_row(day: date, note: str) -> dict:
    from gpufleet.services.disclosure import read_checkpoint

    cp = read_checkpoint(note)
    return {"as_of": day.isoformat(), "tree_size": cp.tree_size, "root_hash": cp.root_hash.hex(),
            "recorded_at": cp.recorded_at}


def rewrite_story(service: FleetService, folder: Path, first_note: str, bundle: dict) -> dict:
    """On a copy of the ledger: rewrite the swap's event (its reason), rebuild the chain, the head and the
    Merkle tree, as an insider with the database's password can; then what catches it and what does not."""
    from gpufleet.domain import merkle
    from gpufleet.ledger import merkle_store
    from gpufleet.services.disclosure import read_checkpoint

    copy = folder / "rewritten.db"
    _copy_database(service.engine.url.database, copy)
    rewritten = FleetService.open(str(copy))
    try:
        seq = _rewrite_swap(rewritten)
        verified = rewritten.verify().ok
        first = read_checkpoint(first_note)
        original = next(e for e in bundle["events"] if e["seq"] == seq)
        with rewritten.engine.connect() as conn:
            size = merkle_store.tree_size(conn)
            proof = merkle_store.consistency(conn, first.tree_size, size)
            new_root = merkle_store.root_hash(conn, size)
            inclusion = merkle_store.inclusion(conn, seq, size)
        consistency = merkle.consistency_problem(first.tree_size, size, proof.proof, first.root_hash, new_root)
        leaf = merkle.leaf_hash(_b64(original["canonical"]))
        included = merkle.inclusion_problem(leaf, seq - 1, size, inclusion.audit_path, new_root)
    finally:
        rewritten.engine.dispose()
        copy.unlink(missing_ok=True)
    return {"seq": seq, "chain_verifies": verified, "consistency_with_first_checkpoint": consistency,
            "original_event_included": included}


def _copy_database(source: str, target: Path) -> None:
    """A consistent copy of an SQLite ledger (its write-ahead log included), by SQLite's backup API."""
    import sqlite3

    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    dst.close()
    src.close()


def _b64(text: str) -> bytes:
    import base64

    return base64.b64decode(text)


def _rewrite_swap(service: FleetService) -> int:
    """Drop the triggers, change the swap's reason, recompute every later hash, the head and the tree."""
    from sqlalchemy import text

    from gpufleet.domain.chain import canonical_bytes, event_hash
    from gpufleet.domain.merkle import leaf_hash
    from gpufleet.ledger import merkle_store

    with service.engine.begin() as conn:
        for (name,) in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).all():
            conn.execute(text(f'DROP TRIGGER "{name}"'))
        seq = conn.execute(text("SELECT seq FROM events WHERE type = 'delivery_slot_swap' AND payload LIKE :p"),
                           {"p": f'%"{SWAP_ID}"%'}).scalar_one()
        conn.execute(text("UPDATE events SET payload = replace(payload, '\"reason\":\"', "
                          "'\"reason\":\"routine reallocation by the vendor; ') WHERE seq = :s"), {"s": seq})
        cols = "seq, recorded_at, effective_date, actor, type, idempotency_key, prev_hash, payload"
        rows = [list(r) for r in conn.execute(text(f"SELECT {cols} FROM events ORDER BY seq")).all()]
        prev = conn.execute(text("SELECT hash FROM events WHERE seq = :s"), {"s": seq - 1}).scalar_one()
        leaves = []
        for r in rows:
            if r[0] >= seq:
                r[6] = prev
                prev = event_hash(*r)
                conn.execute(text("UPDATE events SET prev_hash = :p, hash = :h WHERE seq = :s"),
                             {"p": r[6], "h": prev, "s": r[0]})
            leaves.append(leaf_hash(canonical_bytes(*r)))
        conn.execute(text("UPDATE ledger_head SET hash = :h"), {"h": prev})
        conn.execute(text("DELETE FROM merkle_nodes"))
        conn.execute(text("DELETE FROM snapshots"))
        merkle_store.add_leaves(conn, 1, leaves)
    return seq
