"""The Audit page: findings by severity with their evidence, the ledger's verification, its latest signed
checkpoint and cosignatures, and each approval's votes with their signatures' status.

What costs seconds at a million events is kept per ledger head (:mod:`gpufleet.services.governance_kept`):
the findings on the record and the approvals. The hash chain's verification is the server's
(:class:`gpufleet.services.verification.LedgerChecks`): the last full verification on record and the
events checked as appended since, never a full verification on a page view.
"""

from __future__ import annotations

import urllib.parse
from collections import Counter
from dataclasses import dataclass
from datetime import date

from gpufleet.api.routes.governance import may_see_transaction
from gpufleet.domain import vote_signing
from gpufleet.domain.access import Principal
from gpufleet.domain.governance import GovernancePolicy
from gpufleet.services import checkpoints, governance, governance_kept
from gpufleet.services.fleet import FleetService
from gpufleet.services.head_state import HeadFold
from gpufleet.services.verification import LedgerStatus

SIGNATURE_ORDER = (vote_signing.SIGNED_INVALID, vote_signing.SIGNED_VALID, vote_signing.UNSIGNED)


@dataclass(frozen=True)
class Findings:
    """Every finding on the record, most severe first, each with the link to its evidence events, and how
    many there are of each (severity, kind), in that order."""

    rows: list[dict]
    counts: list[tuple[str, str, int]]


def evidence_url(seqs: list[int]) -> str:
    return "/ui/events?" + urllib.parse.urlencode([("seq", s) for s in seqs])


def findings(fleet: FleetService, policy: GovernancePolicy, on: date | None, fold: HeadFold) -> Findings:
    """The findings on the record at ``fold`` (the head's) on ``on``, with their links and counts, kept."""
    def build() -> Findings:
        rows = [f | {"evidence_url": evidence_url(f["evidence_seqs"]) if f["evidence_seqs"] else None}
                for f in governance_kept.record_findings(fleet, policy, on, fold)]
        counts = Counter((f["severity"], f["kind"]) for f in rows)
        return Findings(rows, [(s, k, n) for (s, k), n in counts.items()])  # first seen: most severe first

    return fleet.kept(("ui-audit-findings", fold.seq, fold.hash, on, policy.model_dump_json()), build).data


def with_chain(found: Findings, status: LedgerStatus) -> list[dict]:
    """The findings with the hash chain's (as ``gpufleet audit`` lists it) when every event is checked:
    first if it does not verify, last if it does; none when some events are not checked (the page says so)."""
    report = status.report()
    if report is None:
        return found.rows
    chain = governance.verification_finding(report, status.describe()) | {"evidence_url": None}
    return [chain, *found.rows] if not report.ok else [*found.rows, chain]


def chosen(rows: list[dict], severity: str | None, kind: str | None) -> list[dict]:
    """The findings of ``severity`` and ``kind`` (None: any)."""
    if severity is None and kind is None:
        return rows
    return [f for f in rows if severity in (None, f["severity"]) and kind in (None, f["kind"])]


def approvals(fleet: FleetService, policy: GovernancePolicy, on: date | None, fold: HeadFold, who: Principal,
              entity: str | None) -> list[dict]:
    """The transactions needing approval that ``who`` may read (of ``entity``, if given), with their votes."""
    return [r for r in governance_kept.approval_rows(fleet, policy, on, fold)
            if may_see_transaction(fold.state, who, r) and (not entity or entity in (r["giver"], r["receiver"]))]


def approval_counts(rows: list[dict]) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """How many transactions are in each status, and how many votes have each signature status."""
    statuses = Counter(r["status"] for r in rows)
    votes = Counter(v["signature"] for r in rows for v in r["votes"])
    order = {s: i for i, s in enumerate(SIGNATURE_ORDER)}
    return sorted(statuses.items(), key=lambda x: (-x[1], x[0])), sorted(votes.items(), key=lambda x: (
        order.get(x[0], len(order)), x[0]))


def latest_checkpoint(fleet: FleetService) -> dict | None:
    """The latest recorded checkpoint: size, origin, root, created, and who signed and cosigned it."""
    found = checkpoints.latest(fleet.engine)
    return None if found is None else found.summary() | {"note": found.note}
