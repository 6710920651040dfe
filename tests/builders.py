"""Fluent builders of event drafts, so tests read like the story they tell."""

from __future__ import annotations

from datetime import date

from gpufleet.domain import events as ev
from gpufleet.domain.state import FleetState
from gpufleet.ledger.store import Draft


class Story:
    """Events in the order told; ``on(day)`` moves the effective date for the ones after it."""

    def __init__(self, start: str = "2024-01-01"):
        self.day = date.fromisoformat(start)
        self.items: list[tuple[ev.Payload, date]] = []

    def on(self, day: str) -> Story:
        self.day = date.fromisoformat(day)
        return self

    def add(self, payload: ev.Payload) -> Story:
        self.items.append((payload, self.day))
        return self

    # -- registrations -----------------------------------------------------------------
    def entity(self, entity: str, parent: str | None = None) -> Story:
        return self.add(ev.EntityRegistered(entity=entity, name=entity.upper(), parent=parent))

    def model(self, model: str = "h100", watts: float = 700) -> Story:
        return self.add(ev.GpuModelRegistered(model=model, name=model.upper(), watts=watts, memory_gb=80))

    def site(self, site: str, owner: str, slots: int, mw: float, online: str | None = None,
             pue: float = 1.0) -> Story:
        step = ev.CapacityStep(step=f"{site}-1", online_date=date.fromisoformat(online) if online else self.day,
                               slots=slots, mw=mw)
        return self.add(ev.SiteRegistered(site=site, name=site, owner=owner, pue=pue, capacity=[step]))

    def po(self, po: str, buyer: str, lots: dict[str, tuple[int, str]], price: float = 30_000,
           model: str = "h100") -> Story:
        specs = [ev.LotSpec(lot=k, gpus=g, planned_date=date.fromisoformat(d)) for k, (g, d) in lots.items()]
        return self.add(ev.PurchaseOrderPlaced(po=po, buyer=buyer, vendor="nvidia", model=model,
                                               unit_price_usd=price, lots=specs))

    # -- everyday events ---------------------------------------------------------------
    def ship(self, lot: str) -> Story:
        return self.add(ev.LotShipped(lot=lot))

    def deliver(self, lot: str) -> Story:
        return self.add(ev.LotDelivered(lot=lot))

    def install(self, owner: str, site: str, gpus: int, model: str = "h100") -> Story:
        return self.add(ev.GpusInstalled(owner=owner, model=model, site=site, gpus=gpus))

    def fail(self, owner: str, gpus: int, site: str | None = None, model: str = "h100") -> Story:
        return self.add(ev.GpusFailed(owner=owner, model=model, gpus=gpus, site=site))

    def retire(self, owner: str, gpus: int, site: str | None = None, from_failed: bool = False,
               model: str = "h100") -> Story:
        return self.add(ev.GpusRetired(owner=owner, model=model, gpus=gpus, site=site, from_failed=from_failed))

    def lend(self, loan: str, lender: str, borrower: str, site: str, gpus: int, end: str,
             fee: float = 2.0, notice_days: int = 0, model: str = "h100") -> Story:
        return self.add(ev.LoanOpened(loan=loan, lender=lender, borrower=borrower, model=model, site=site,
                                      gpus=gpus, end_date=date.fromisoformat(end), fee_usd_per_gpu_hour=fee,
                                      reclaim_notice_days=notice_days))

    def reclaim(self, loan: str, gpus: int, notice: str) -> Story:
        return self.add(ev.LoanReclaimed(loan=loan, gpus=gpus, notice_given_on=date.fromisoformat(notice)))

    def close(self, loan: str) -> Story:
        return self.add(ev.LoanClosed(loan=loan))

    # -- results -------------------------------------------------------------------------
    def drafts(self, actor: str = "test") -> list[Draft]:
        return [Draft(p, d, actor) for p, d in self.items]

    def state(self) -> FleetState:
        """Apply the story directly to a state (pure, no ledger)."""
        s = FleetState()
        for payload, day in self.items:
            s.apply(payload, day)
        return s


def two_party_fleet(start: str = "2024-01-01", slots: int = 1000, mw: float = 1.0) -> Story:
    """Entities a and b, model h100, site s1 owned by a, online from ``start``."""
    return Story(start).entity("a").entity("b").model().site("s1", "a", slots, mw)
