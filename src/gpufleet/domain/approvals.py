"""Who may vote on a transaction: the rule the ledger applies to every ``approval_recorded``.

Approvers are the independent directors and audit committee members of the party that gives
up value. A person is interested, and can never vote, when they hold a role in the receiving
party, when a family member holds one there, or when they hold a role as family of someone who
does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpufleet.domain.types import Role
from gpufleet.errors import InvariantViolation, UnknownReference

if TYPE_CHECKING:
    from gpufleet.domain.state import FleetState

APPROVER_ROLES = {Role.INDEPENDENT_DIRECTOR.value, Role.AUDIT_COMMITTEE.value}


def parties_of(state: FleetState, subject: str) -> tuple[str, str]:
    """(giver, receiver) of the transaction ``subject`` names: ``swap:ID``, ``loan:ID`` or ``proposal:ID``."""
    kind, _, ident = subject.partition(":")
    if kind == "swap" and ident in state.swaps:
        return state.swaps[ident].party_a, state.swaps[ident].party_b
    if kind == "loan" and ident in state.loans:
        return state.loans[ident].lender, state.loans[ident].borrower
    if kind == "proposal" and f"loan:{ident}" in state.proposals:
        proposal = state.proposals[f"loan:{ident}"]
        return proposal.owner, proposal.user
    raise UnknownReference(f"no transaction '{subject}' is recorded (use swap:ID, loan:ID or proposal:ID)",
                           field="subject")


def check_voter(state: FleetState, subject: str, person: str) -> None:
    """Refuse the vote of an interested person, or of someone who is not an approver of the giver."""
    giver, receiver = parties_of(state, subject)
    in_receiver = {(p, family) for p, entity, _role, family in state.roles if entity == receiver}
    holders = {p for p, _f in in_receiver}
    families = {f for _p, f in in_receiver if f}
    my_families = {f for p, _e, _r, f in state.roles if p == person and f}
    if person in holders or person in families or my_families & holders:
        raise InvariantViolation(f"{person} is interested in {subject}: they or their family hold a role in "
                                 f"{receiver}, the party that receives value, so their vote is refused",
                                 field="person")
    if not any(p == person and e == giver and r in APPROVER_ROLES for p, e, r, _f in state.roles):
        raise InvariantViolation(f"{person} is not an independent director or audit committee member of {giver}, "
                                 f"the party that gives up value in {subject}", field="person")
