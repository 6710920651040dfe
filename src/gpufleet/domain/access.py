"""Who may do what through the service: access roles per entity, granted and revoked as ledger events.

A *principal* is a person of the ledger or a service account bound to one entity. Its access roles
(:class:`~gpufleet.domain.types.AccessRole`) are the ``access_granted`` events not yet revoked, so
who could do what, when, is on the record and as-of queryable. The rules:

========  ====================================================================================
viewer    reads its entity's data
operator  also records fleet events for its entity (lots, installs, failures, loans it gives)
planner   also runs plans and records their proposals and demand for its entity
finance   also reads costs and prices
auditor   reads everything (every entity), runs the audit and verify
admin     persons, service accounts, access roles and vote-signing keys of its entity; never
          records fleet events or votes, whatever other role the same person holds (separation
          of duties)
========  ====================================================================================

Approving is not a role: a vote is cast by the authenticated person, and whether it counts follows
from the governance roles in the ledger (:func:`gpufleet.domain.approvals.check_voter`).
An entity's data is visible to its principals, to auditors, and to the approvers of a transaction
it is party to; a transaction between two entities is visible to both.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from gpufleet.domain import events as ev
from gpufleet.domain.state import FleetState
from gpufleet.domain.types import AccessRole, Role
from gpufleet.errors import GpufleetError

R = AccessRole


class Forbidden(GpufleetError):
    """The authenticated principal may not do this; says which role, in which entity, it needs."""

    exit_code = 3


class Scope(StrEnum):
    """What a credential allows, whatever the principal's roles: reads only, or reads and writes."""

    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class Principal:
    """Who is speaking, as authenticated by the service (never a field of a request)."""

    id: str
    scope: Scope = Scope.WRITE
    via: str = "token"  # how it was authenticated: token, oidc, local

    def can_write(self) -> bool:
        return self.scope is Scope.WRITE


class Capability(StrEnum):
    """What a route does; :data:`ROLES_FOR` says which roles allow it."""

    READ = "read"
    RECORD = "record"
    PLAN = "plan"
    FINANCE = "finance"
    AUDIT = "audit"
    ADMINISTER = "administer"
    SIMULATE = "simulate"


READERS = frozenset(R)
ROLES_FOR: dict[Capability, frozenset[AccessRole]] = {
    Capability.READ: READERS,
    Capability.RECORD: frozenset({R.OPERATOR}),
    Capability.PLAN: frozenset({R.PLANNER}),
    Capability.FINANCE: frozenset({R.FINANCE, R.AUDITOR}),
    Capability.AUDIT: frozenset({R.AUDITOR}),
    Capability.ADMINISTER: frozenset({R.ADMIN}),
    Capability.SIMULATE: frozenset({R.OPERATOR, R.PLANNER}),
}
_ADMIN_EVENTS = (ev.EntityRegistered, ev.PersonRegistered, ev.RoleAssigned, ev.ServiceAccountRegistered,
                 ev.AccessGranted, ev.AccessRevoked, ev.PersonKeyRegistered, ev.PersonKeyRevoked)
_PLANNER_EVENTS = (ev.DemandRecorded, ev.LoanProposed, ev.InstallPlanned)


def grants(state: FleetState, principal: str) -> dict[str, set[AccessRole]]:
    """Entity -> the access roles ``principal`` holds there in ``state``."""
    held: dict[str, set[AccessRole]] = {}
    for who, entity, role in state.access:
        if who == principal:
            held.setdefault(entity, set()).add(AccessRole(role))
    return held


def is_known(state: FleetState, principal: str) -> bool:
    return principal in state.persons or principal in state.service_accounts


def is_auditor(state: FleetState, principal: str) -> bool:
    return any(R.AUDITOR in roles for roles in grants(state, principal).values())


def is_admin(state: FleetState, principal: str) -> bool:
    return any(R.ADMIN in roles for roles in grants(state, principal).values())


def readable_entities(state: FleetState, principal: str) -> set[str] | None:
    """The entities whose data ``principal`` may read; None: every entity (an auditor)."""
    if is_auditor(state, principal):
        return None
    return set(grants(state, principal))


def require(state: FleetState, principal: Principal, capability: Capability, entities: Iterable[str] | None,
            *, writes: bool = False) -> None:
    """Raise :class:`Forbidden` unless ``principal`` holds a role allowing ``capability`` in one of
    ``entities`` (None: in any entity). ``writes``: the request changes something, so the credential
    must allow writes too."""
    if writes and not principal.can_write():
        raise Forbidden("this credential is read-only; writes need a read-write token")
    allowed = ROLES_FOR[capability]
    held = grants(state, principal.id)
    if capability is Capability.READ and is_auditor(state, principal.id):
        return
    targets = None if entities is None else sorted(set(entities))
    if targets == []:
        raise Forbidden(f"no role allows '{principal.id}' to {capability.value} this")
    scope = held if targets is None else {e: held.get(e, set()) for e in targets}
    if any(roles & allowed for roles in scope.values()):
        return
    need = " or ".join(sorted(r.value for r in allowed))
    where = "any entity" if targets is None else " or ".join(f"'{e}'" for e in targets)
    raise Forbidden(f"'{principal.id}' needs the role {need} in {where} to {capability.value}")


def require_record(state: FleetState, principal: Principal, payload: ev.Payload) -> None:
    """May ``principal`` record ``payload`` (not a vote: see :func:`require_vote`)?"""
    if isinstance(payload, ev.ApprovalRecorded):
        require_vote(state, principal, payload.person)
        return
    if isinstance(payload, ev.EventVoided):
        raise Forbidden("voiding an event is a correction made by the ledger's custodian (the local CLI); "
                        "it is not offered through the service")
    capability = (Capability.ADMINISTER if isinstance(payload, _ADMIN_EVENTS)
                  else Capability.PLAN if isinstance(payload, _PLANNER_EVENTS) else Capability.RECORD)
    if capability is not Capability.ADMINISTER and is_admin(state, principal.id):
        raise Forbidden(f"'{principal.id}' is an admin: admins manage access and never record fleet events")
    require(state, principal, capability, acting_entities(state, payload), writes=True)


def require_vote(state: FleetState, principal: Principal, person: str) -> None:
    """A vote is the authenticated person's own; whether it counts, the governance rules decide later."""
    if not principal.can_write():
        raise Forbidden("this credential is read-only; writes need a read-write token")
    if principal.id not in state.persons:
        raise Forbidden(f"'{principal.id}' is not a person of the ledger; only persons vote")
    if person != principal.id:
        raise Forbidden(f"'{principal.id}' cannot vote as '{person}': a vote is the authenticated person's own")
    if is_admin(state, principal.id):
        raise Forbidden(f"'{principal.id}' is an admin: admins manage access and never vote")


def acting_entities(state: FleetState, p: ev.Payload) -> set[str] | None:
    """The entities for which ``p`` is recorded (a role in any one of them allows it); None: no
    single entity (a new person, model or top-level entity, or a reference to a record the ledger does
    not have, which its own check refuses next), so a role in any entity allows it; empty: nothing does."""
    match p:
        case ev.EntityRegistered():
            return {p.parent} if p.parent else None
        case ev.PersonRegistered() | ev.GpuModelRegistered():
            return None
        case ev.RoleAssigned() | ev.ServiceAccountRegistered() | ev.AccessGranted() | ev.AccessRevoked():
            return {p.entity}
        case ev.PersonKeyRegistered():
            return {p.entity}
        case ev.PersonKeyRevoked():  # the entity whose admin registered the key
            return _field(state.person_keys, f"{p.person}/{p.key_id}", "entity")
        case ev.DemandRecorded():
            return {p.entity}
        case ev.SiteRegistered():
            return {p.owner}
        case ev.SiteCapacityAdded() | ev.SiteCapacitySlipped():
            return _owner(state.sites, p.site)
        case ev.PurchaseOrderPlaced():
            return {p.buyer}
        case ev.LotRescheduled() | ev.LotShipped() | ev.LotDelivered():
            return _owner(state.lots, p.lot)
        case ev.DeliverySlotSwap():
            return {state.lots[x].owner for x in p.lots_a if x in state.lots} or None
        case ev.LoanOpened() | ev.LoanProposed():
            return {p.lender}
        case ev.LoanReclaimed():
            return _field(state.loans, p.loan, "lender")
        case ev.LoanClosed():
            loan = state.loans.get(p.loan)
            return {loan.lender, loan.borrower} if loan else None
        case ev.ClaimRecorded():
            return {p.claimant}
        case _ if hasattr(p, "owner"):
            return {p.owner}
    return set()  # nothing allows it (an event type this table does not know)


def parties(state: FleetState, p: ev.Payload) -> set[str]:
    """Every entity whose data ``p`` is: the acting entities and the counterparties."""
    found = set(acting_entities(state, p) or ())
    match p:
        case ev.EntityRegistered():
            found.add(p.entity)  # an entity's own registration is its data, whether it has a parent or not
        case ev.LoanOpened() | ev.LoanProposed():
            found.add(p.borrower)
        case ev.LoanReclaimed() | ev.LoanClosed():
            found |= _field(state.loans, p.loan, "borrower") or set()
        case ev.DeliverySlotSwap():
            found |= {state.lots[x].owner for x in p.lots_b if x in state.lots}
        case ev.ApprovalRecorded():
            found |= subject_parties(state, p.subject)
    if hasattr(p, "site") and isinstance(getattr(p, "site"), str):
        found |= _owner(state.sites, p.site) or set()
    return found


def subject_parties(state: FleetState, subject: str) -> set[str]:
    """The giver and receiver of the transaction ``subject`` (loan:ID, proposal:ID, swap:ID)."""
    kind, _, ident = subject.partition(":")
    if kind == "loan" and ident in state.loans:
        loan = state.loans[ident]
        return {loan.lender, loan.borrower}
    if kind == "proposal" and f"loan:{ident}" in state.proposals:
        prop = state.proposals[f"loan:{ident}"]
        return {prop.owner, prop.user}
    if kind == "swap" and ident in state.swaps:
        swap = state.swaps[ident]
        return {swap.party_a, swap.party_b}
    return set()


def subject_giver(state: FleetState, subject: str) -> str | None:
    """The party that gives up value in the transaction ``subject``; None if the ledger has none such."""
    kind, _, ident = subject.partition(":")
    if kind == "loan" and ident in state.loans:
        return state.loans[ident].lender
    if kind == "proposal" and f"loan:{ident}" in state.proposals:
        return state.proposals[f"loan:{ident}"].owner
    if kind == "swap" and ident in state.swaps:
        return state.swaps[ident].party_a
    return None


def approver_of(state: FleetState, person: str, giver: str) -> bool:
    """Is ``person`` one of the people who approve ``giver``'s related-party transactions?"""
    return any(who == person and entity == giver and role in (Role.INDEPENDENT_DIRECTOR, Role.AUDIT_COMMITTEE)
               for who, entity, role, _family in state.roles)


def may_read(state: FleetState, principal: str, entities: set[str], giver: str | None = None) -> bool:
    """May ``principal`` read data of ``entities`` (a transaction's parties, whose giver is ``giver``)?"""
    readable = readable_entities(state, principal)
    if readable is None or entities & readable:
        return True
    return giver is not None and approver_of(state, principal, giver)


def _owner(table: dict, key: str) -> set[str] | None:
    return _field(table, key, "owner")


def _field(table: dict, key: str, name: str) -> set[str] | None:
    record = table.get(key)
    return {getattr(record, name)} if record is not None else None
