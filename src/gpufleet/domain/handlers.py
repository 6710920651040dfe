"""How each event changes the fleet state: one handler per payload type.

Every handler checks all its preconditions before its first change, so a refused event
(``InvariantViolation`` / ``UnknownReference``) leaves the state as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from gpufleet.domain import events as ev
from gpufleet.domain import vote_signing
from gpufleet.domain.approvals import check_voter
from gpufleet.domain.state import (
    Approval,
    Claim,
    Demand,
    Entity,
    FleetState,
    GpuModel,
    Lot,
    Loan,
    PersonKey,
    Proposal,
    PurchaseOrder,
    Site,
    Step,
    Swap,
    _get,
    _new,
    _require,
)
from gpufleet.domain.types import AccessRole, LotStatus, Role
from gpufleet.errors import InvariantViolation, UnknownReference

Handler = Callable[[FleetState, Any, date], None]
HANDLERS: dict[type[ev.Payload], Handler] = {}


def handles(payload_type: type[ev.Payload]):
    def register(fn: Handler) -> Handler:
        HANDLERS[payload_type] = fn
        return fn

    return register


@handles(ev.EntityRegistered)
def _entity(s: FleetState, p: ev.EntityRegistered, on: date) -> None:
    _new(s.entities, p.entity, "entity")
    if p.parent is not None:
        s.entity(p.parent, "parent")
    s.entities[p.entity] = Entity(p.name, p.parent, p.kind)


@handles(ev.PersonRegistered)
def _person(s: FleetState, p: ev.PersonRegistered, on: date) -> None:
    _new(s.persons, p.person, "person")
    if p.person in s.service_accounts:
        raise InvariantViolation(f"'{p.person}' is a service account; a person needs its own id", field="person")
    s.persons[p.person] = p.name


@handles(ev.RoleAssigned)
def _role(s: FleetState, p: ev.RoleAssigned, on: date) -> None:
    _get(s.persons, p.person, "person", "person")
    s.entity(p.entity)
    if p.family_of is not None:
        _get(s.persons, p.family_of, "person", "family_of")
    role = Role(p.role).value
    if any(held[:3] == (p.person, p.entity, role) for held in s.roles):
        raise InvariantViolation(f"'{p.person}' already holds the role {role} in '{p.entity}'", field="role")
    s.roles.add((p.person, p.entity, role, p.family_of or ""))


@handles(ev.ServiceAccountRegistered)
def _service_account(s: FleetState, p: ev.ServiceAccountRegistered, on: date) -> None:
    _new(s.service_accounts, p.account, "service account", "account")
    if p.account in s.persons:
        raise InvariantViolation(f"'{p.account}' is a person; a service account needs its own id", field="account")
    s.entity(p.entity)
    s.service_accounts[p.account] = p.entity


@handles(ev.AccessGranted)
def _access_granted(s: FleetState, p: ev.AccessGranted, on: date) -> None:
    s.entity(p.entity)
    role = AccessRole(p.role).value
    bound = s.service_accounts.get(p.principal)
    if p.principal not in s.persons and bound is None:
        raise UnknownReference(f"'{p.principal}' is neither a registered person nor a service account",
                               field="principal")
    if bound is not None and bound != p.entity:
        raise InvariantViolation(f"service account '{p.principal}' is bound to '{bound}'; it cannot act in "
                                 f"'{p.entity}'", field="entity")
    if bound is not None and role == AccessRole.ADMIN:
        raise InvariantViolation("admin is a role for persons, not service accounts", field="role")
    if (p.principal, p.entity, role) in s.access:
        raise InvariantViolation(f"'{p.principal}' already holds {role} in '{p.entity}'", field="role")
    s.access.add((p.principal, p.entity, role))


@handles(ev.AccessRevoked)
def _access_revoked(s: FleetState, p: ev.AccessRevoked, on: date) -> None:
    role = AccessRole(p.role).value
    if (p.principal, p.entity, role) not in s.access:
        raise InvariantViolation(f"'{p.principal}' holds no {role} in '{p.entity}' to revoke", field="role")
    s.access.discard((p.principal, p.entity, role))


@handles(ev.GpuModelRegistered)
def _model(s: FleetState, p: ev.GpuModelRegistered, on: date) -> None:
    _new(s.models, p.model, "GPU model")
    s.models[p.model] = GpuModel(p.name, p.watts, p.memory_gb)


@handles(ev.SiteRegistered)
def _site(s: FleetState, p: ev.SiteRegistered, on: date) -> None:
    _new(s.sites, p.site, "site")
    s.entity(p.owner, "owner")
    steps = {c.step: Step(c.online_date, c.slots, c.mw, c.online_date) for c in p.capacity}
    s.sites[p.site] = Site(p.name, p.owner, p.pue, steps)


@handles(ev.SiteCapacityAdded)
def _capacity_added(s: FleetState, p: ev.SiteCapacityAdded, on: date) -> None:
    site = s.site(p.site)
    _new(site.steps, p.capacity.step, "capacity step", "capacity.step")
    c = p.capacity
    site.steps[c.step] = Step(c.online_date, c.slots, c.mw, c.online_date)


@handles(ev.SiteCapacitySlipped)
def _slipped(s: FleetState, p: ev.SiteCapacitySlipped, on: date) -> None:
    site = s.site(p.site)
    step = _get(site.steps, p.step, "capacity step", "step")
    before = step.online_date
    step.online_date = p.online_date
    try:
        s.check_site(p.site, on)
    except InvariantViolation:
        step.online_date = before
        raise


@handles(ev.PurchaseOrderPlaced)
def _po(s: FleetState, p: ev.PurchaseOrderPlaced, on: date) -> None:
    _new(s.pos, p.po, "purchase order", "po")
    s.entity(p.buyer, "buyer")
    s.model(p.model)
    for spec in p.lots:
        _new(s.lots, spec.lot, "lot", "lots.lot")
    s.pos[p.po] = PurchaseOrder(p.buyer, p.vendor, p.model, p.unit_price_usd, on)
    for spec in p.lots:
        s.lots[spec.lot] = Lot(
            p.po, p.buyer, p.model, spec.gpus, p.unit_price_usd, spec.planned_date,
            first_planned_date=spec.planned_date, original_owner=p.buyer,
        )
        s.acquired[(p.buyer, p.model)] += spec.gpus
        s.on_order[(p.buyer, p.model)] += spec.gpus


@handles(ev.LotRescheduled)
def _rescheduled(s: FleetState, p: ev.LotRescheduled, on: date) -> None:
    lot = s.lot(p.lot)
    if lot.status is LotStatus.DELIVERED:
        raise InvariantViolation(f"lot '{p.lot}' was delivered on {lot.delivered_on}; it cannot be rescheduled")
    lot.planned_date = p.planned_date


@handles(ev.LotShipped)
def _shipped(s: FleetState, p: ev.LotShipped, on: date) -> None:
    lot = s.lot(p.lot)
    if lot.status is not LotStatus.ON_ORDER:
        raise InvariantViolation(f"lot '{p.lot}' is {lot.status.value}, not on order; it cannot ship")
    key = (lot.owner, lot.model)
    s.on_order[key] -= lot.gpus
    s.in_transit[key] += lot.gpus
    lot.status, lot.shipped_on = LotStatus.IN_TRANSIT, on


@handles(ev.LotDelivered)
def _delivered(s: FleetState, p: ev.LotDelivered, on: date) -> None:
    lot = s.lot(p.lot)
    if lot.status is LotStatus.DELIVERED:
        raise InvariantViolation(f"lot '{p.lot}' was already delivered on {lot.delivered_on}")
    key = (lot.owner, lot.model)
    source = s.on_order if lot.status is LotStatus.ON_ORDER else s.in_transit
    source[key] -= lot.gpus
    s.warehouse[key] += lot.gpus
    lot.shipped_on = lot.shipped_on or on
    lot.status, lot.delivered_on = LotStatus.DELIVERED, on


@handles(ev.DeliverySlotSwap)
def _swap(s: FleetState, p: ev.DeliverySlotSwap, on: date) -> None:
    _new(s.swaps, p.swap, "swap")
    side_a = [s.lot(x, "lots_a") for x in p.lots_a]
    side_b = [s.lot(x, "lots_b") for x in p.lots_b]
    owner_a, owner_b = _one_owner(side_a, "lots_a"), _one_owner(side_b, "lots_b")
    if owner_a == owner_b:
        raise InvariantViolation(f"both sides of swap '{p.swap}' belong to '{owner_a}'")
    models = {lot.model for lot in side_a + side_b}
    if len(models) != 1:
        raise InvariantViolation(f"swap '{p.swap}' mixes GPU models {sorted(models)}")
    gpus_a, gpus_b = sum(x.gpus for x in side_a), sum(x.gpus for x in side_b)
    if gpus_a != gpus_b:
        raise InvariantViolation(f"swap '{p.swap}' exchanges {gpus_a} GPUs for {gpus_b}; both sides must match")
    for lot_id, lot in zip(p.lots_a + p.lots_b, side_a + side_b, strict=True):
        if lot.status is LotStatus.DELIVERED:
            raise InvariantViolation(f"lot '{lot_id}' was delivered on {lot.delivered_on}; it cannot be swapped")
    for lot, new_owner in [(x, owner_b) for x in side_a] + [(x, owner_a) for x in side_b]:
        _move_lot_owner(s, lot, new_owner)
    s.swaps[p.swap] = Swap(
        owner_a, owner_b, list(p.lots_a), list(p.lots_b), models.pop(), gpus_a,
        sum(x.gpus * x.unit_price_usd for x in side_a), sum(x.gpus * x.unit_price_usd for x in side_b),
        on, p.reason,
    )


def _one_owner(lots: list[Lot], field_name: str) -> str:
    owners = {lot.owner for lot in lots}
    if len(owners) != 1:
        raise InvariantViolation(f"the lots in {field_name} belong to several owners {sorted(owners)}")
    return owners.pop()


def _move_lot_owner(s: FleetState, lot: Lot, new_owner: str) -> None:
    counter = s.on_order if lot.status is LotStatus.ON_ORDER else s.in_transit
    for c in (counter, s.acquired):
        c[(lot.owner, lot.model)] -= lot.gpus
        c[(new_owner, lot.model)] += lot.gpus
    lot.owner = new_owner


@handles(ev.OpeningBalance)
def _opening(s: FleetState, p: ev.OpeningBalance, on: date) -> None:
    s.entity(p.owner, "owner")
    model = s.model(p.model)
    key = (p.owner, p.model)
    if p.site is None:
        s.warehouse[key] += p.gpus
    else:
        s.site(p.site)
        _install(s, p.site, p.owner, p.model, model, p.gpus, on)
    s.acquired[key] += p.gpus


@handles(ev.GpusInstalled)
def _installed(s: FleetState, p: ev.GpusInstalled, on: date) -> None:
    s.entity(p.owner, "owner")
    model = s.model(p.model)
    s.site(p.site)
    _require(s.warehouse, (p.owner, p.model), p.gpus, f"'{p.owner}' has {{have}} {p.model} in its warehouse; "
             f"cannot install {p.gpus} at '{p.site}'")
    _install(s, p.site, p.owner, p.model, model, p.gpus, on)
    s.warehouse[(p.owner, p.model)] -= p.gpus


def _install(s: FleetState, site: str, owner: str, model_id: str, model: GpuModel, gpus: int, on: date) -> None:
    s.site_gpus[site] += gpus
    s.site_watts[site] += gpus * model.watts
    try:
        s.check_site(site, on)
    except InvariantViolation:
        s.site_gpus[site] -= gpus
        s.site_watts[site] -= gpus * model.watts
        raise
    s.installed[(site, owner, model_id, owner)] += gpus
    s.installed_owned[(owner, model_id)] += gpus


def _uninstall(s: FleetState, site: str, owner: str, model_id: str, gpus: int) -> None:
    """Take ``gpus`` serving their owner out of ``site`` (caller has checked they are there)."""
    s.installed[(site, owner, model_id, owner)] -= gpus
    s.installed_owned[(owner, model_id)] -= gpus
    s.site_gpus[site] -= gpus
    s.site_watts[site] -= gpus * s.models[model_id].watts


def _require_installed(s: FleetState, p: Any, verb: str) -> None:
    s.entity(p.owner, "owner")
    s.model(p.model)
    s.site(p.site)
    _require(s.installed, (p.site, p.owner, p.model, p.owner), p.gpus,
             f"'{p.owner}' has {{have}} {p.model} installed at '{p.site}' and serving itself; cannot {verb} {p.gpus}")


@handles(ev.GpusUninstalled)
def _uninstalled(s: FleetState, p: ev.GpusUninstalled, on: date) -> None:
    _require_installed(s, p, "uninstall")
    _uninstall(s, p.site, p.owner, p.model, p.gpus)
    s.warehouse[(p.owner, p.model)] += p.gpus


@handles(ev.GpusFailed)
def _failed(s: FleetState, p: ev.GpusFailed, on: date) -> None:
    key = (p.owner, p.model)
    if p.site is None:
        s.entity(p.owner, "owner")
        s.model(p.model)
        _require(s.warehouse, key, p.gpus, f"'{p.owner}' has {{have}} {p.model} in its warehouse; cannot fail {p.gpus}")
        s.warehouse[key] -= p.gpus
    else:
        _require_installed(s, p, "fail")
        _uninstall(s, p.site, p.owner, p.model, p.gpus)
    s.failed[key] += p.gpus


@handles(ev.GpusRepaired)
def _repaired(s: FleetState, p: ev.GpusRepaired, on: date) -> None:
    s.entity(p.owner, "owner")
    s.model(p.model)
    key = (p.owner, p.model)
    _require(s.failed, key, p.gpus, f"'{p.owner}' has {{have}} failed {p.model}; cannot repair {p.gpus}")
    s.failed[key] -= p.gpus
    s.warehouse[key] += p.gpus


@handles(ev.GpusRetired)
def _retired(s: FleetState, p: ev.GpusRetired, on: date) -> None:
    key = (p.owner, p.model)
    if p.site is not None:
        _require_installed(s, p, "retire")
        _uninstall(s, p.site, p.owner, p.model, p.gpus)
    else:
        s.entity(p.owner, "owner")
        s.model(p.model)
        source, where = (s.failed, "failed") if p.from_failed else (s.warehouse, "in its warehouse")
        _require(source, key, p.gpus, f"'{p.owner}' has {{have}} {p.model} {where}; cannot retire {p.gpus}")
        source[key] -= p.gpus
    s.retired[key] += p.gpus


@handles(ev.LoanOpened)
def _loan_opened(s: FleetState, p: ev.LoanOpened, on: date) -> None:
    _new(s.loans, p.loan, "loan")
    s.entity(p.lender, "lender")
    s.entity(p.borrower, "borrower")
    s.model(p.model)
    s.site(p.site)
    if p.end_date <= on:
        raise InvariantViolation(f"loan '{p.loan}' ends on {p.end_date}, not after its start {on}", field="end_date")
    _require(s.installed, (p.site, p.lender, p.model, p.lender), p.gpus,
             f"lender '{p.lender}' holds {{have}} {p.model} installed at '{p.site}' and serving itself; "
             f"cannot lend {p.gpus}")
    s.installed[(p.site, p.lender, p.model, p.lender)] -= p.gpus
    s.installed[(p.site, p.lender, p.model, p.borrower)] += p.gpus
    s.loans[p.loan] = Loan(
        p.lender, p.borrower, p.model, p.site, p.gpus, p.gpus, on, p.end_date,
        p.fee_usd_per_gpu_hour, p.reclaim_notice_days, since=on,
    )


def _return(s: FleetState, loan: Loan, gpus: int, on: date) -> None:
    loan.accrued_gpu_hours = loan.gpu_hours_through(on)
    loan.since = on
    s.installed[(loan.site, loan.lender, loan.model, loan.borrower)] -= gpus
    s.installed[(loan.site, loan.lender, loan.model, loan.lender)] += gpus
    loan.gpus_out -= gpus


def _open_loan(s: FleetState, loan_id: str) -> Loan:
    loan = s.loan(loan_id)
    if loan.closed_on is not None:
        raise InvariantViolation(f"loan '{loan_id}' was closed on {loan.closed_on}")
    return loan


@handles(ev.LoanReclaimed)
def _reclaimed(s: FleetState, p: ev.LoanReclaimed, on: date) -> None:
    loan = _open_loan(s, p.loan)
    earliest = p.notice_given_on + timedelta(days=loan.reclaim_notice_days)
    if on < earliest:
        raise InvariantViolation(
            f"loan '{p.loan}' needs {loan.reclaim_notice_days} days' notice: notice given {p.notice_given_on}, "
            f"so the GPUs return on {earliest} at the earliest, not {on}", field="notice_given_on"
        )
    if p.notice_given_on < loan.start:
        raise InvariantViolation(f"notice for loan '{p.loan}' is dated before the loan started on {loan.start}",
                                 field="notice_given_on")
    if p.gpus > loan.gpus_out:
        raise InvariantViolation(f"loan '{p.loan}' has {loan.gpus_out} GPUs out; cannot reclaim {p.gpus}",
                                 field="gpus")
    _return(s, loan, p.gpus, on)


@handles(ev.LoanClosed)
def _closed(s: FleetState, p: ev.LoanClosed, on: date) -> None:
    loan = _open_loan(s, p.loan)
    _return(s, loan, loan.gpus_out, on)
    loan.closed_on = on


@handles(ev.LoanProposed)
def _loan_proposed(s: FleetState, p: ev.LoanProposed, on: date) -> None:
    key = f"loan:{p.loan}"
    _new(s.proposals, key, "proposal", "loan")
    if p.loan in s.loans:
        raise InvariantViolation(f"loan '{p.loan}' is already recorded", field="loan")
    s.entity(p.lender, "lender")
    s.entity(p.borrower, "borrower")
    s.model(p.model)
    s.site(p.site)
    s.proposals[key] = Proposal("loan", p.lender, p.borrower, p.model, p.site, p.gpus, p.start, p.end_date,
                                p.fee_usd_per_gpu_hour, p.plan, p.reason, on)


@handles(ev.InstallPlanned)
def _install_planned(s: FleetState, p: ev.InstallPlanned, on: date) -> None:
    s.entity(p.owner, "owner")
    s.model(p.model)
    s.site(p.site)
    key = f"install:{p.owner}:{p.model}:{p.site}:{p.planned_date}"
    _new(s.proposals, key, "proposal", "planned_date")
    s.proposals[key] = Proposal("install", p.owner, p.owner, p.model, p.site, p.gpus, p.planned_date, None, 0.0,
                                p.plan, "", on)


@handles(ev.DemandRecorded)
def _demand(s: FleetState, p: ev.DemandRecorded, on: date) -> None:
    _new(s.demand, p.demand, "demand")
    s.entity(p.entity)
    s.demand[p.demand] = Demand(p.entity, p.start, p.end, p.gpus, p.value_usd_per_gpu_hour, p.workload.value, p.tier)


@handles(ev.ClaimRecorded)
def _claim(s: FleetState, p: ev.ClaimRecorded, on: date) -> None:
    _new(s.claims, p.claim, "claim")
    s.entity(p.claimant, "claimant")
    if p.person is not None:
        _get(s.persons, p.person, "person", "person")
    if p.model is not None:
        s.model(p.model)
    if p.deadline < on:
        raise InvariantViolation(f"claim '{p.claim}' has its deadline {p.deadline} before it was stated ({on})",
                                 field="deadline")
    s.claims[p.claim] = Claim(
        p.claimant, p.person, p.metric.value, p.model, p.target, p.deadline, p.period_start, on,
        p.source_url, p.quote,
    )


@handles(ev.ApprovalRecorded)
def _approval(s: FleetState, p: ev.ApprovalRecorded, on: date) -> None:
    _new(s.approvals, p.approval, "approval")
    _get(s.persons, p.person, "person", "person")
    if p.decision.value == "waived" and not p.reason.strip():
        raise InvariantViolation("a waiver needs a written reason", field="reason")
    check_voter(s, p.subject, p.person)
    if any(a.subject == p.subject and a.person == p.person for a in s.approvals.values()):
        raise InvariantViolation(f"{p.person} has already voted on {p.subject}", field="person")
    vote_signing.check_signature(s, p, on)
    s.approvals[p.approval] = Approval(p.subject, p.decision.value, p.person, p.reason, on,
                                       p.content_sha256, p.key_id, p.signature)


@handles(ev.PersonKeyRegistered)
def _key_registered(s: FleetState, p: ev.PersonKeyRegistered, on: date) -> None:
    _get(s.persons, p.person, "person", "person")
    s.entity(p.entity)
    key = vote_signing.check_registration(s, p)
    key_id = key.key_id.hex()
    s.person_keys[f"{p.person}/{key_id}"] = PersonKey(p.person, p.entity, key_id, p.public_key, on)


@handles(ev.PersonKeyRevoked)
def _key_revoked(s: FleetState, p: ev.PersonKeyRevoked, on: date) -> None:
    record = s.person_keys.get(f"{p.person}/{p.key_id}")
    if record is None:
        raise UnknownReference(f"'{p.person}' has no registered key {p.key_id}", field="key_id")
    if record.revoked_on is not None:
        raise InvariantViolation(f"{p.person}'s key {p.key_id} was already revoked on {record.revoked_on}",
                                 field="key_id")
    record.revoked_on, record.reason = on, p.reason


@handles(ev.EventVoided)
def _voided(s: FleetState, p: ev.EventVoided, on: date) -> None:
    """No change here: the fold skips voided events (see :mod:`gpufleet.domain.fold`)."""
