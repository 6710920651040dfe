"""A stored sweep (a ``--out`` folder) read again, without rerunning it: its summary (supply) or Pareto
front (quotas), and whether its rows come from the ledger a report is about."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpufleet.errors import InputError
from gpufleet.services.fleet import FleetService
from gpufleet.services.sweeps import quotas, runner, supply


@dataclass(frozen=True)
class Stored:
    """One results folder: its ``sweep.json`` and what it sums up to."""

    path: Path
    kind: str
    inputs_hash: str
    seed: int
    samples: int  # rows stored (a stopped sweep stores fewer than it was asked for)
    about: dict
    summary: dict | None  # supply: supply.summary's answer
    rows: list[dict]  # quotas: every configuration's row; supply: empty (the summary holds them)
    front: list[dict]  # quotas: the Pareto front


def read(path: Path, field: str = "sweep") -> Stored:
    """The sweep stored in ``path``; a supply folder written before ``sweep.json`` kept what a summary needs
    is refused, naming the folder."""
    meta, rows = runner.read_folder(path, field)
    if not rows:
        raise InputError(f"{path} holds no finished sample yet", field=field)
    kind, about = meta["kind"], meta.get("about") or {}
    if kind == "supply":
        if "entities" not in about:
            raise InputError(f"{path}/sweep.json lacks the sweep's entities and claims (written by an older "
                             "gpufleet); run the sweep again into a new folder", field=field)
        return Stored(Path(path), kind, meta["inputs_hash"], meta["seed"], len(rows), about,
                      supply.summarize(about, rows), [], [])
    return Stored(Path(path), kind, meta["inputs_hash"], meta["seed"], len(rows), about, None, rows,
                  quotas.pareto(rows))


def ledger_match(service: FleetService, stored: Stored, field: str = "sweep") -> str:
    """How the supply sweep's ledger relates to ``service``'s: a sentence to show. A sweep from another
    ledger (its recorded event is not this chain's) is refused, naming the inputs' hash."""
    seen = stored.about.get("ledger")
    if stored.kind != "supply":
        return "a quota sweep replays a trace, not the ledger"
    if not seen:
        return (f"the folder does not record the ledger it was read from (inputs {stored.inputs_hash[:16]}); "
                "it may be another ledger's")
    head = service.head()
    found = service.events(seen["seq"] - 1, seen["seq"], limit=1) if seen["seq"] >= 1 else []
    if not found or found[0].hash != seen["hash"]:
        raise InputError(f"{stored.path} holds a sweep of another ledger (inputs {stored.inputs_hash}, read at "
                         f"event {seen['seq']} with hash {seen['hash'][:16]}, which this ledger lacks)", field=field)
    if head.seq == seen["seq"]:
        return f"read from this ledger at its head, event {seen['seq']:,} (inputs {stored.inputs_hash[:16]})"
    return (f"read from this ledger at event {seen['seq']:,}; {head.seq - seen['seq']:,} events were recorded "
            f"since (inputs {stored.inputs_hash[:16]})")
