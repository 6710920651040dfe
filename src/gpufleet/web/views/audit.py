"""The Audit page: findings by severity with their evidence, the ledger's verification, its latest signed
checkpoint and cosignatures, and each approval's votes with their signatures' status."""

from __future__ import annotations

import threading
import urllib.parse
from dataclasses import dataclass

from gpufleet.services import checkpoints, governance
from gpufleet.services.fleet import FleetService

_VERIFIED: dict[tuple[int, str], object] = {}  # (head seq, head hash) -> its verify report: a prefix never changes
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Verification:
    ok: bool
    events_checked: int
    head_seq: int
    head_hash: str
    reason: str | None
    first_bad_seq: int | None


def verification(fleet: FleetService) -> Verification:
    """``gpufleet verify`` of the ledger at its head, once per head (kept while the process lives)."""
    head = fleet.head()
    key = (head.seq, head.hash)
    with _LOCK:
        report = _VERIFIED.get(key)
    if report is None:
        report = fleet.verify()
        with _LOCK:
            _VERIFIED.clear()
            _VERIFIED[key] = report
    return Verification(report.ok, report.events_checked, head.seq, head.hash, report.reason, report.first_bad_seq)


def evidence_url(seqs: list[int]) -> str:
    return "/ui/events?" + urllib.parse.urlencode([("seq", s) for s in seqs])


def findings(fleet: FleetService, policy, on) -> list[dict]:
    """The audit's findings, most severe first, each with the link to its evidence events."""
    rows = sorted(governance.audit(fleet, policy, on), key=lambda f: governance.SEVERITY_ORDER.get(f["severity"], 99))
    return [f | {"evidence_url": evidence_url(f["evidence_seqs"]) if f["evidence_seqs"] else None} for f in rows]


def latest_checkpoint(fleet: FleetService) -> dict | None:
    """The latest recorded checkpoint: size, origin, root, created, and who signed and cosigned it."""
    found = checkpoints.latest(fleet.engine)
    return None if found is None else found.summary() | {"note": found.note}
