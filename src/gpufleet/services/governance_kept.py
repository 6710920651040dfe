"""The approvals and the audit's findings as a long-lived process (the server) keeps them: per ledger
head (its seq and hash), date and policy, with :meth:`FleetService.kept` (one thread computes, the
others wait; the newest answers), from the head fold the caller holds.

At a million events each costs a second or more to build (every creator and vote event read, every
transaction's series), and every reader of the head asks for the same one: the API's approvals and
audit, the Approvals inbox and the Audit page. A write moves the head, and so the key. A kept answer
is shared: read it, never change it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from gpufleet.domain.governance import GovernancePolicy, Transaction, transactions
from gpufleet.services import governance
from gpufleet.services.fleet import FleetService
from gpufleet.services.head_state import HeadFold
from gpufleet.services.verification import LedgerChecks


def _key(name: str, fold: HeadFold, on: date, policy: GovernancePolicy, *rest) -> tuple:
    return (name, fold.seq, fold.hash, on, policy.model_dump_json(), *rest)


def _on(on: date | None) -> date:
    return on or datetime.now(UTC).date()


def approval_rows(fleet: FleetService, policy: GovernancePolicy, on: date | None, fold: HeadFold, *,
                  with_terms: bool = False) -> list[dict]:
    """:func:`governance.approvals` on ``fold`` (the head's), judged on ``on`` (default today), kept; the
    rows without their terms are the rows with them, less the ``terms`` key."""
    on = _on(on)
    with_them = fleet.kept(_key("approvals", fold, on, policy, True), lambda: governance.approvals(
        fleet, policy, on, with_terms=True, state=fold.state)).data
    if with_terms:
        return with_them
    return fleet.kept(_key("approvals", fold, on, policy, False),
                      lambda: [{k: v for k, v in row.items() if k != "terms"} for row in with_them]).data


def transactions_by_subject(fleet: FleetService, policy: GovernancePolicy, on: date | None,
                            fold: HeadFold) -> dict[str, Transaction]:
    """Every transaction of ``fold`` valued on ``on`` (default today), by subject, kept."""
    on = _on(on)
    return fleet.kept(_key("transactions", fold, on, policy), lambda: {
        t.subject: t for t in transactions(fold.state, policy, on)}).data


def record_findings(fleet: FleetService, policy: GovernancePolicy, on: date | None, fold: HeadFold) -> list[dict]:
    """:func:`governance.record_findings` on ``fold``, on ``on`` (default today), kept."""
    on = _on(on)
    return fleet.kept(_key("audit", fold, on, policy), lambda: governance.record_findings(
        fleet, policy, on, head=fold)).data


def audit(fleet: FleetService, policy: GovernancePolicy, on: date | None, fold: HeadFold,
          checks: LedgerChecks) -> tuple[list[dict], str]:
    """:func:`governance.audit`'s findings (the same JSON) from the kept findings on the record and the chain's
    verification as ``checks`` keeps it (a full verification now only when some events are not checked), and
    what was checked of the chain, and when (:meth:`LedgerStatus.describe`)."""
    report, how = checks.for_audit()
    found = [*record_findings(fleet, policy, on, fold), governance.verification_finding(report)]
    return sorted(found, key=lambda f: governance.SEVERITY_ORDER[f["severity"]]), how
