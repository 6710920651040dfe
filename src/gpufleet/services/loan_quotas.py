"""The bridge from the ledger's dated loans to the scheduler's time-varying quotas.

A loan of ``g`` GPUs of a model moves ``g`` GPUs of nominal quota from the lender's tenant to the
borrower's for the loan's dates. Loans give *deltas* (:class:`QuotaDelta`); tenants' own quota
changes (Helios' daily GPUs per tenant) are *absolute* (:class:`QuotaChange`). The rule that
combines them (:func:`merge_quota_changes`): at any time, a tenant's nominal quota on a model is

    (its latest absolute change at or before then, else its base nominal) + (sum of loan deltas so far)

so a loan keeps moving its GPUs across later absolute changes of the lender's own quota.
Units: GPUs (float, exact to a milli-GPU); times are seconds from ``epoch`` (dates are 00:00 UTC).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from gpufleet.domain import events as ev
from gpufleet.domain.state import FleetState, Loan
from gpufleet.errors import InputError
from gpufleet.scheduler.model import MILLI, QuotaChange, Tenant, gpus_to_milli

Reclaims = Mapping[str, Sequence[tuple[date, int]]]  # loan id -> (effective date, GPUs taken back)


@dataclass(frozen=True, slots=True)
class QuotaDelta:
    """From ``at_s`` on, ``tenant``'s nominal quota on ``model`` changes by ``delta_gpus`` (+ or -)."""

    at_s: float
    tenant: str
    model: str
    delta_gpus: float
    reason: str = ""


# -- loans -> deltas -------------------------------------------------------------------------


def loan_reclaims(items: Iterable[tuple[ev.Payload, date]]) -> dict[str, list[tuple[date, int]]]:
    """Each loan's reclaims from ``(payload, effective date)`` pairs (other payloads are skipped).

    Pass the ledger's non-voided events up to the state's as-of date, parsed; the state itself
    keeps only a loan's last change, so several reclaims of one loan need this history.
    """
    out: dict[str, list[tuple[date, int]]] = defaultdict(list)
    for payload, on in items:
        if isinstance(payload, ev.LoanReclaimed):
            out[payload.loan].append((on, payload.gpus))
    return dict(out)


def loan_quota_deltas(state: FleetState, tenants: Sequence[Tenant], *, epoch: str,
                      model_map: Mapping[str, str | None] | None = None,
                      reclaims: Reclaims | None = None) -> list[QuotaDelta]:
    """Every loan in ``state`` as quota deltas: lender -g / borrower +g while ``g`` GPUs are out.

    A loan starts on its start date and ends on ``closed_on`` if it was closed, else on its
    ``end_date``; each reclaim returns its GPUs on its effective date. Times before ``epoch`` are
    clamped to 0 (only what is still out at the epoch moves quota). ``model_map`` maps ledger
    models to cluster models (identity when ``None``; a model mapped to ``None`` is left out).
    InputError for a lender/borrower that is no tenant, an unmapped model, or a reclaim history
    that the state cannot confirm (see :func:`_timeline`).
    """
    zero = _epoch(epoch)
    names = {t.name for t in tenants}
    out: list[QuotaDelta] = []
    for loan_id, loan in sorted(state.loans.items(), key=lambda kv: (kv[1].start, kv[0])):
        model = _model(loan_id, loan.model, model_map)
        if model is None:
            continue
        for party in (loan.lender, loan.borrower):
            if party not in names:
                raise InputError(f"loan '{loan_id}': '{party}' ({loan.lender} lends to {loan.borrower}) "
                                 "is not a tenant", field="tenants")
        steps = _timeline(loan_id, loan, (reclaims or {}).get(loan_id))
        out += _deltas(loan_id, loan, model, [(max(0.0, _seconds(d, zero)), g) for d, g in steps])
    return out


def _epoch(epoch: str) -> datetime:
    try:
        zero = datetime.fromisoformat(epoch)
    except (TypeError, ValueError):
        raise InputError(f"'{epoch}' is not an ISO date or datetime", field="epoch") from None
    return zero if zero.tzinfo else zero.replace(tzinfo=UTC)


def _seconds(day: date, zero: datetime) -> float:
    return (datetime(day.year, day.month, day.day, tzinfo=UTC) - zero).total_seconds()


def _model(loan_id: str, model: str, model_map: Mapping[str, str | None] | None) -> str | None:
    if model_map is None:
        return model
    if model not in model_map:
        raise InputError(f"loan '{loan_id}': GPU model '{model}' is not in the model map "
                         f"{sorted(model_map)}", field="model_map")
    return model_map[model]


def _timeline(loan_id: str, loan: Loan, reclaims: Sequence[tuple[date, int]] | None) -> list[tuple[date, int]]:
    """(date, GPUs out from then on) steps of one loan, ending with 0 GPUs at its end.

    Without ``reclaims``, the state's record is used: GPUs out fell from ``gpus_opened`` to
    ``gpus_out`` on ``since`` (one reclaim at most, checked against the loan's accrued GPU-hours,
    which several reclaims would not match: InputError asking for the history).
    """
    end = loan.closed_on or loan.end_date
    if reclaims is None:
        reclaims = _single_reclaim(loan_id, loan)
    steps, out = [(loan.start, loan.gpus_opened)], loan.gpus_opened
    for on, gpus in sorted(reclaims):
        out -= gpus
        if out < 0:
            raise InputError(f"loan '{loan_id}': reclaims take back more than the {loan.gpus_opened} "
                             "GPUs lent", field="reclaims")
        steps.append((on, out))
    if out != loan.gpus_out and loan.closed_on is None:
        raise InputError(f"loan '{loan_id}': reclaims leave {out} GPUs out but the ledger has "
                         f"{loan.gpus_out}", field="reclaims")
    return [(d, g) for d, g in steps if d < end] + [(end, 0)]


def _single_reclaim(loan_id: str, loan: Loan) -> list[tuple[date, int]]:
    last = loan.closed_on or loan.since or loan.start
    one_step = loan.gpus_opened * 24.0 * (last - loan.start).days
    if abs(loan.accrued_gpu_hours - one_step) > 1e-6 * max(1.0, one_step):
        raise InputError(f"loan '{loan_id}' was reclaimed several times and the state keeps only the "
                         "last; pass reclaims=loan_reclaims(events)", field="reclaims")
    if loan.closed_on is None and loan.gpus_out < loan.gpus_opened:
        return [(loan.since, loan.gpus_opened - loan.gpus_out)]
    return []


def _deltas(loan_id: str, loan: Loan, model: str, steps: list[tuple[float, int]]) -> list[QuotaDelta]:
    """Lender/borrower deltas at each change of the GPUs out (steps already in seconds)."""
    out: list[QuotaDelta] = []
    before = 0
    for i, (at_s, gpus) in enumerate(steps):
        change = gpus - before
        if change == 0:
            continue
        if i == 0:
            why = f"loan {loan_id}: {loan.lender} lends {gpus} {model} to {loan.borrower}"
        elif i == len(steps) - 1:
            why = f"loan {loan_id} ends: {before} {model} back from {loan.borrower} to {loan.lender}"
        else:
            why = f"loan {loan_id}: {loan.lender} reclaims {-change} {model} from {loan.borrower}"
        out += [QuotaDelta(at_s, loan.lender, model, -change, why), QuotaDelta(at_s, loan.borrower, model, change, why)]
        before = gpus
    return out


# -- deltas + absolute changes -> absolute changes -------------------------------------------


def merge_quota_changes(tenants: Sequence[Tenant], base_changes: Iterable[QuotaChange],
                        loan_deltas: Iterable[QuotaDelta]) -> list[QuotaChange]:
    """Absolute quota changes from tenants' own (absolute) changes and loan deltas (module rule).

    Everything at one time applies together (absolute changes in list order, the last wins), then
    the result must be >= 0: InputError naming the tenant, model, time and reasons otherwise.
    One QuotaChange per (time, tenant, model) where the nominal changes, sorted by time then
    tenant order then model; its reason joins the reasons of what happened then.
    """
    order = {t.name: i for i, t in enumerate(tenants)}
    base = {(t.name, m): gpus_to_milli(q.nominal_gpus) for t in tenants for m, q in t.quotas.items()}
    timeline: dict[tuple[str, str], dict[float, list]] = defaultdict(lambda: defaultdict(list))
    for c in base_changes:
        timeline[(_tenant(c.tenant, order), c.model)][c.at_s].append(("set", gpus_to_milli(c.nominal_gpus), c.reason))
    for d in loan_deltas:
        timeline[(_tenant(d.tenant, order), d.model)][d.at_s].append(("add", gpus_to_milli(d.delta_gpus), d.reason))
    out = [change for key, times in timeline.items() for change in _walk(key, base.get(key, 0), times)]
    return sorted(out, key=lambda c: (c.at_s, order[c.tenant], c.model))


def _tenant(name: str, order: Mapping[str, int]) -> str:
    if name not in order:
        raise InputError(f"quota change names unknown tenant '{name}'", field="tenant")
    return name


def _walk(key: tuple[str, str], own: int, times: Mapping[float, list]) -> list[QuotaChange]:
    """The absolute changes of one (tenant, model), from its base nominal (milli-GPUs)."""
    out, lent, previous = [], 0, own
    for at_s in sorted(times):
        reasons = []
        for kind, milli, reason in times[at_s]:
            own, lent = (milli, lent) if kind == "set" else (own, lent + milli)
            if reason and reason not in reasons:
                reasons.append(reason)
        nominal = own + lent
        if nominal < 0:
            raise InputError(f"{key[0]}'s nominal {key[1]} quota would be {nominal / MILLI:g} GPUs at "
                             f"{at_s:g}s ({'; '.join(reasons)})", field="loans")
        if nominal != previous:
            out.append(QuotaChange(at_s, key[0], key[1], nominal / MILLI, "; ".join(reasons)))
        previous = nominal
    return out


def loan_quota_changes(state: FleetState, tenants: list[Tenant], *, epoch: str,
                       model_map: dict[str, str | None] | None = None, reclaims: Reclaims | None = None,
                       base_changes: Iterable[QuotaChange] = ()) -> list[QuotaChange]:
    """The loans in ``state`` (plus optional absolute ``base_changes``) as absolute quota changes.

    :func:`loan_quota_deltas` then :func:`merge_quota_changes`; see them for the rules and errors.
    """
    deltas = loan_quota_deltas(state, tenants, epoch=epoch, model_map=model_map, reclaims=reclaims)
    return merge_quota_changes(tenants, base_changes, deltas)
