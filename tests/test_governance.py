"""Related parties, the approval state machine, arm's-length prices and claims against the record."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builders import Story, two_party_fleet
from gpufleet.domain import events as ev
from gpufleet.domain.governance import (
    GovernancePolicy,
    Transaction,
    approval_gate,
    fiscal_year,
    needs_approval,
    off_market,
    status_of,
    structuring,
    transactions,
)
from gpufleet.domain.parties import related_parties
from gpufleet.errors import InputError, InvariantViolation
from gpufleet.ledger.store import Draft
from gpufleet.services import claims, governance
from gpufleet.services.fleet import FleetService


def person(story: Story, who: str, *roles: tuple[str, str], family_of: str | None = None) -> Story:
    story.add(ev.PersonRegistered(person=who, name=who.title()))
    for entity, role in roles:
        story.add(ev.RoleAssigned(person=who, entity=entity, role=role, family_of=family_of))
    return story


RELATED = {
    "one person is director of both": (
        lambda: person(Story().entity("a").entity("b"), "p", ("a", "director"), ("b", "director")),
        {frozenset("ab")}, "share a related person"),
    "control through parents": (
        lambda: Story().entity("top").entity("mid", parent="top").entity("leaf", parent="mid"),
        {frozenset({"leaf", "mid"}), frozenset({"leaf", "top"}), frozenset({"mid", "top"})}, "controls"),
    "family of a controlling shareholder": (
        lambda: person(person(Story().entity("a").entity("b"), "p", ("a", "controlling_shareholder")),
                       "q", ("b", "holder_5pct"), family_of="p"),
        {frozenset("ab")}, "family of p"),
    # q holds a role in a as p's family, and one of its own in b: a and b share q (they did not
    # when a family role counted for p alone).
    "family role and own role of one person": (
        lambda: person(person(Story().entity("a").entity("b"), "p"), "q", ("a", "director"), family_of="p")
        .add(ev.RoleAssigned(person="q", entity="b", role="officer")),
        {frozenset("ab")}, "q ("),
    "unrelated entities": (
        lambda: person(person(Story().entity("a").entity("b"), "p", ("a", "director")), "q", ("b", "director")),
        set(), None),
}


@pytest.mark.parametrize("build, pairs, basis", RELATED.values(), ids=RELATED.keys())
def test_related_party_detection(build, pairs, basis):
    found = related_parties(build().state())
    assert set(found) == pairs
    if basis:
        assert all(basis in why for why in found.values()), found


def governed() -> Story:
    """a lends to its subsidiary b; i is a's independent director, j its audit committee member,
    k is on b's board too (interested); musk controls both."""
    story = two_party_fleet().entity("c")
    story.items[1] = (ev.EntityRegistered(entity="b", name="B", parent="a"), story.items[1][1])
    person(story, "i", ("a", "independent_director"))
    person(story, "j", ("a", "audit_committee"))
    person(story, "k", ("a", "independent_director"), ("b", "director"))
    person(story, "m", ("b", "officer"))
    person(story, "s", ("a", "independent_director"), family_of="m")
    person(story, "o", ("a", "officer"))
    return (story.po("p1", "a", {"l1": (100, "2024-02-01")}).on("2024-02-01").deliver("l1").install("a", "s1", 100)
            .add(ev.LoanProposed(loan="x1", lender="a", borrower="b", model="h100", site="s1", gpus=80,
                                 start=date(2024, 3, 1), end_date=date(2024, 9, 1), fee_usd_per_gpu_hour=4.9)))


@pytest.fixture
def fleet(sqlite_engine):
    service = FleetService(sqlite_engine)
    from gpufleet.ledger.store import Ledger

    with sqlite_engine.begin() as conn:
        Ledger(conn).append(governed().drafts())
    return service


POLICY = GovernancePolicy()


def status(service: FleetService, subject: str = "proposal:x1", on: date = date(2024, 2, 10)) -> str:
    rows = {r["subject"]: r for r in governance.approvals(service, POLICY, on)}
    return rows[subject]["status"]


def test_a_related_party_proposal_needs_approval_and_waits_for_a_quorum(fleet):
    assert status(fleet) == "proposed"
    governance.vote(fleet, "proposal:x1", "i", "approved", "", POLICY, date(2024, 2, 5))
    assert status(fleet) == "proposed", "one vote of a quorum of two"
    governance.vote(fleet, "proposal:x1", "j", "approved", "", POLICY, date(2024, 2, 6))
    assert status(fleet) == "approved"


VOTERS = {
    "interested: also on the receiver's board": ("k", "interested"),
    "interested: family of the receiver's officer": ("s", "interested"),
    "an officer of the receiver": ("m", "interested"),
    "an officer of the giver, not an approver": ("o", "not an independent director"),
    "unknown person": ("zz", "no person"),
}


@pytest.mark.parametrize("who, words", VOTERS.values(), ids=VOTERS.keys())
def test_ineligible_votes_are_refused_with_the_reason(fleet, who, words):
    before = fleet.head().seq
    with pytest.raises((InvariantViolation, InputError)) as info:
        governance.vote(fleet, "proposal:x1", who, "approved", "", POLICY, date(2024, 2, 5))
    assert words in str(info.value)
    assert fleet.head().seq == before, "a refused vote writes nothing"


def test_an_approval_at_a_stale_price_is_refused(fleet):
    later = GovernancePolicy(market=[{"since": "2023-01-01", "usd_per_gpu_hour": 4.92, "source": "t"},
                                     {"since": "2024-02-01", "usd_per_gpu_hour": 2.0, "source": "t"}])
    with pytest.raises(InvariantViolation, match="stale"):
        governance.vote(fleet, "proposal:x1", "i", "approved", "", later, date(2024, 2, 5))


def test_a_proposal_expires_and_a_rejection_rejects(fleet):
    assert status(fleet, on=date(2024, 4, 1)) == "expired"
    governance.vote(fleet, "proposal:x1", "i", "rejected", "too cheap", POLICY, date(2024, 2, 5))
    assert status(fleet) == "rejected"


def test_a_waiver_needs_a_reason_and_is_reported(fleet):
    with pytest.raises(InputError, match="written reason"):
        governance.vote(fleet, "proposal:x1", "i", "waived", " ", POLICY, date(2024, 2, 5))
    governance.vote(fleet, "proposal:x1", "i", "waived", "board resolution 12", POLICY, date(2024, 2, 5))
    assert status(fleet) == "waived"
    kinds = {f["kind"] for f in governance.audit(fleet, POLICY, date(2024, 2, 10))}
    assert "waiver" in kinds


def test_off_market_fees_are_flagged_with_the_value_they_move():
    story = (two_party_fleet().po("p1", "a", {"l1": (100, "2024-02-01")}).on("2024-02-01").deliver("l1")
             .install("a", "s1", 100).lend("ln", "a", "b", "s1", 10, "2024-02-11", fee=1.0))
    state = story.state()
    (loan,) = [t for t in transactions(state, POLICY, date(2024, 3, 1)) if t.kind == "loan"]
    market, moved = off_market(loan, POLICY)
    assert market == 4.92
    assert moved == pytest.approx((4.92 - 1.0) * 10 * 24 * 10)  # 10 GPUs for 10 days
    assert not needs_approval(loan, POLICY), "unrelated parties need no approval"


def test_an_unapproved_swap_recorded_after_the_fact_is_a_finding(sqlite_engine):
    story = person(two_party_fleet(), "p", ("a", "controlling_shareholder"), ("b", "controlling_shareholder"))
    story.po("pa", "a", {"x": (10, "2024-02-01")}).po("pb", "b", {"y": (10, "2024-06-01")})
    story.add(ev.DeliverySlotSwap(swap="w", lots_a=["x"], lots_b=["y"]))
    from gpufleet.ledger.store import Ledger

    with sqlite_engine.begin() as conn:
        written = Ledger(conn).append(story.drafts())
    service = FleetService(sqlite_engine)
    state = service.state()
    (swap,) = [t for t in transactions(state, POLICY, date(2024, 7, 1)) if t.kind == "slot_swap"]
    assert status_of(state, swap, POLICY, date(2024, 7, 1)).status == "executed_unapproved"
    findings = governance.audit(service, POLICY, date(2024, 7, 1))
    unapproved = [f for f in findings if f["kind"] == "unapproved_related_party_transaction"]
    assert unapproved and unapproved[0]["evidence_seqs"] == [written[-1].seq]
    assert unapproved[0]["value_usd"] == 10 * 30_000


def claim_story(stated_on: str) -> list[Draft]:
    """a claims 100 active GPUs by 2024-12-31; a lot of 60 is due in July, but in May it slips to 2025."""
    story = two_party_fleet().po("p1", "a", {"l1": (50, "2024-01-15"), "l2": (60, "2024-07-01")})
    story.on("2024-01-15").deliver("l1").install("a", "s1", 50)
    drafts = [Draft(p, d, "t", recorded_at=f"{d.isoformat()}T00:00:00.000000Z") for p, d in story.items]
    said = date.fromisoformat(stated_on)
    claim = ev.ClaimRecorded(claim="c", claimant="a", metric="active_gpus", model="h100", target=100,
                             deadline=date(2024, 12, 31))
    slip = ev.LotRescheduled(lot="l2", planned_date=date(2025, 3, 1))
    timeline = sorted([(said, claim), (date(2024, 5, 1), slip)], key=lambda x: x[0])
    return drafts + [Draft(p, d, "t", recorded_at=f"{d.isoformat()}T00:00:00.000000Z") for d, p in timeline]


@pytest.mark.parametrize("stated_on, supported, achievable", [
    ("2024-04-01", 110.0, True),   # before the slip: 50 active + 60 due by the deadline
    ("2024-06-01", 50.0, False),   # after it: only the 50 active
], ids=["claim-before-the-slip", "claim-after-the-slip"])
def test_a_claim_is_judged_on_what_the_ledger_knew_when_it_was_made(sqlite_engine, stated_on, supported, achievable):
    from gpufleet.ledger.store import Ledger

    with sqlite_engine.begin() as conn:
        Ledger(conn).append(claim_story(stated_on), now=None)
    service = FleetService(sqlite_engine)
    (row,) = claims.claim_forecasts(service, service.state(), date(2025, 1, 1))
    assert (row["supported_when_stated"], row["achievable_when_stated"]) == (supported, achievable)
    assert (row["actual"], row["status"]) == (50.0, "missed")


def _loan(loan: str = "x1") -> ev.LoanOpened:
    return ev.LoanOpened(loan=loan, lender="a", borrower="b", model="h100", site="s1", gpus=80,
                         end_date=date(2024, 9, 1), fee_usd_per_gpu_hour=4.9)


def test_a_related_party_loan_opens_only_once_approved(fleet):
    day = date(2024, 3, 1)
    with pytest.raises(InvariantViolation, match="without the approval"):
        governance.open_loan(fleet, _loan(), day, "t", None, POLICY)
    for voter in ("i", "j"):
        governance.vote(fleet, "proposal:x1", voter, "approved", "", POLICY, date(2024, 2, 20))
    governance.open_loan(fleet, _loan(), day, "t", None, POLICY)
    assert status(fleet, on=day) == "executed"
    assert status(fleet, "loan:x1", on=day) == "approved"


def test_history_recorded_after_the_fact_is_kept_and_flagged(fleet):
    governance.open_loan(fleet, _loan("y9"), date(2024, 3, 1), "t", None, POLICY, after_the_fact=True)
    titles = [f["title"] for f in governance.audit(fleet, POLICY, date(2024, 3, 2))
              if f["kind"] == "unapproved_related_party_transaction"]
    assert any("loan y9" in t for t in titles)


# -- one approval gate for every write, and series of transactions (SEC S-K Item 404(a)) -----------

FLAT = GovernancePolicy(market=[{"since": "2023-01-01", "usd_per_gpu_hour": 4.92, "source": "one price for all"}])
SMALL_USD = 25 * 24 * 14 * 4.92  # 25 GPUs for 14 days: USD 41,328, about a third of the threshold


def lending_fleet() -> Story:
    """a controls b (b's parent) and c is unrelated; a holds 800 H100 installed at s1 and b 100; i and j
    are a's independent director and audit committee member."""
    story = Story().entity("a").entity("b", parent="a").entity("c").model().site("s1", "a", 1000, 1.0)
    person(story, "i", ("a", "independent_director"))
    person(story, "j", ("a", "audit_committee"))
    story.add(ev.OpeningBalance(owner="b", model="h100", gpus=100, site="s1"))
    return story.po("p1", "a", {"l1": (800, "2024-02-01")}).on("2024-02-01").deliver("l1").install("a", "s1", 800)


def small_loan(n: int | str, lender: str = "a", borrower: str = "b", start: str = "2024-03-01", days: int = 14,
               gpus: int = 25) -> tuple[ev.LoanOpened, date]:
    """Loan ``n``: 25 GPUs for 14 days from ``start`` (USD 41,328 at USD 4.92/GPU-hour)."""
    day = date.fromisoformat(start)
    return ev.LoanOpened(loan=f"n{n:02}" if isinstance(n, int) else n, lender=lender, borrower=borrower,
                         model="h100", site="s1", gpus=gpus, end_date=date.fromordinal(day.toordinal() + days),
                         fee_usd_per_gpu_hour=4.9), day


@pytest.fixture
def lending(sqlite_engine) -> FleetService:
    from gpufleet.ledger.store import Ledger

    with sqlite_engine.begin() as conn:
        Ledger(conn).append(lending_fleet().drafts())
    return FleetService(sqlite_engine)


def test_thirty_two_small_loans_need_approval_from_the_one_that_crosses_the_threshold(lending):
    accepted, refusals = [], []
    for n in range(1, 33):
        payload, day = small_loan(n)
        before = lending.head().seq
        try:
            lending.record(payload, day, "t", policy=FLAT)
            accepted.append(n)
        except InvariantViolation as exc:
            refusals.append(str(exc))
            assert lending.head().seq == before, "a refused loan writes nothing"
    assert accepted == [1, 2], "USD 41,328 + 41,328 = 82,656 is under the threshold; the third makes 123,984"
    assert len(refusals) == 30
    assert "without the approval" in refusals[0] and "USD 123,984 together with 2 earlier" in refusals[0]
    assert "field 'loan'" in refusals[0]


def test_the_loan_that_crosses_opens_once_its_proposal_is_approved(lending):
    for n in (1, 2):
        lending.record(*small_loan(n), "t", policy=FLAT)
    third, day = small_loan(3)
    lending.record(ev.LoanProposed(loan="n03", lender="a", borrower="b", model="h100", site="s1", gpus=25,
                                   start=day, end_date=third.end_date, fee_usd_per_gpu_hour=4.9), date(2024, 2, 20))
    for voter in ("i", "j"):
        governance.vote(lending, "proposal:n03", voter, "approved", "", FLAT, date(2024, 2, 21))
    lending.record(third, day, "t", policy=FLAT)
    assert status(lending, "loan:n03", on=day) == "approved"
    kinds = {f["kind"] for f in governance.audit(lending, FLAT, date(2024, 4, 1))}
    assert "unapproved_related_party_transaction" not in kinds


# (earlier loans, the new loan: lender, borrower, start, days), the policy, whether the new one is refused
SERIES = {
    "same pair, same fiscal year: the third crosses": (
        [("a", "b", "2024-03-01", 14), ("a", "b", "2024-06-01", 14)], ("a", "b", "2024-12-01", 14), {}, True),
    "a new fiscal year starts a new series": (
        [("a", "b", "2024-11-01", 14), ("a", "b", "2024-12-01", 14)], ("a", "b", "2025-01-01", 14), {}, False),
    "the last day of the fiscal year still counts": (
        [("a", "b", "2024-11-01", 14), ("a", "b", "2024-12-01", 14)], ("a", "b", "2024-12-31", 14), {}, True),
    "fiscal year from July: June and July are two years": (
        [("a", "b", "2024-05-01", 14), ("a", "b", "2024-06-01", 14)], ("a", "b", "2024-07-01", 14),
        {"fiscal_year_start_month": 7}, False),
    "fiscal year from July: December and January are one year": (
        [("a", "b", "2024-11-01", 14), ("a", "b", "2024-12-01", 14)], ("a", "b", "2025-01-02", 14),
        {"fiscal_year_start_month": 7}, True),
    "the other direction is another series": (
        [("a", "b", "2024-03-01", 14), ("a", "b", "2024-04-01", 14)], ("b", "a", "2024-05-01", 14), {}, False),
    "unrelated parties are never a series": (
        [("a", "c", "2024-03-01", 14), ("a", "c", "2024-04-01", 14)], ("a", "c", "2024-05-01", 14), {}, False),
    "loans to an unrelated party do not count": (
        [("a", "c", "2024-03-01", 14), ("a", "b", "2024-04-01", 14)], ("a", "b", "2024-05-01", 14), {}, False),
    "one loan above the threshold alone": ([], ("a", "b", "2024-03-01", 60), {}, True),
    "a higher threshold in the policy": (
        [("a", "b", "2024-03-01", 14), ("a", "b", "2024-06-01", 14)], ("a", "b", "2024-12-01", 14),
        {"threshold_usd": 150_000}, False),
}


@pytest.mark.parametrize("earlier, new, overrides, is_refused", SERIES.values(), ids=SERIES.keys())
def test_related_party_transactions_aggregate_over_the_fiscal_year(earlier, new, overrides, is_refused):
    policy = FLAT.model_copy(update=overrides)
    state = lending_fleet().state()
    for i, (lender, borrower, start, days) in enumerate(earlier):
        payload, day = small_loan(f"e{i}", lender, borrower, start, days)
        approval_gate(state, payload, day, policy)
        state.apply(payload, day)
    payload, day = small_loan("new", *new)
    if is_refused:
        with pytest.raises(InvariantViolation, match="without the approval"):
            approval_gate(state, payload, day, policy)
    else:
        approval_gate(state, payload, day, policy)
        state.apply(payload, day)
        assert all(status_of(state, t, policy, day).status != "executed_unapproved"
                   for t in transactions(state, policy, day))


def _swap_story() -> Story:
    story = person(two_party_fleet(), "p", ("a", "controlling_shareholder"), ("b", "controlling_shareholder"))
    return story.po("pa", "a", {"x": (10, "2024-02-01")}).po("pb", "b", {"y": (10, "2024-06-01")})


def _write_three_small_loans_in_one_batch(service: FleetService, **kw):
    return service.record_many([(*small_loan(n), None) for n in (1, 2, 3)], "t", **kw)


# How each path that writes reaches the one gate: (write, story, the subject, its status or None if refused)
PATHS = {
    "record: refused": (lambda s: s.record(*small_loan(1, days=60), "t"), "loan:n01", None),
    "record after the fact: kept, unapproved": (
        lambda s: s.record(*small_loan(1, days=60), "t", after_the_fact=True), "loan:n01", "executed_unapproved"),
    "loan open: refused": (
        lambda s: governance.open_loan(s, *small_loan(1, days=60), "t", None, POLICY), "loan:n01", None),
    "loan open after the fact: kept, unapproved": (
        lambda s: governance.open_loan(s, *small_loan(1, days=60), "t", None, POLICY, after_the_fact=True),
        "loan:n01", "executed_unapproved"),
    "a batch that crosses within itself: refused whole": (
        lambda s: _write_three_small_loans_in_one_batch(s, policy=FLAT), "loan:n03", None),
    "a batch of history: kept, unapproved": (
        lambda s: _write_three_small_loans_in_one_batch(s, policy=FLAT, after_the_fact=True), "loan:n03",
        "executed_unapproved"),
    "a slot swap: refused": (
        lambda s: s.record(ev.DeliverySlotSwap(swap="w", lots_a=["x"], lots_b=["y"]), date(2024, 1, 10), "t"),
        "swap:w", None),
    "a slot swap after the fact: kept, unapproved": (
        lambda s: s.record(ev.DeliverySlotSwap(swap="w", lots_a=["x"], lots_b=["y"]), date(2024, 1, 10), "t",
                           after_the_fact=True), "swap:w", "executed_unapproved"),
}


@pytest.mark.parametrize("write, subject, outcome", PATHS.values(), ids=PATHS.keys())
def test_every_write_path_passes_the_same_gate(sqlite_engine, write, subject, outcome):
    from gpufleet.ledger.store import Ledger

    story = _swap_story() if subject.startswith("swap") else lending_fleet()
    with sqlite_engine.begin() as conn:
        Ledger(conn).append(story.drafts())
    service = FleetService(sqlite_engine)
    before = service.head().seq
    if outcome is None:
        with pytest.raises(InvariantViolation, match="without the approval") as info:
            write(service)
        assert info.value.field == subject.split(":")[0]
        assert service.head().seq == before, "nothing written"
    else:
        write(service)
        assert status(service, subject, on=date(2024, 12, 31)) == outcome


def test_load_records_history_after_the_fact(sqlite_engine, tmp_path):
    """``load`` passes the gate as history: the related-party loan above the threshold is kept."""
    scenario = tmp_path / "history.yaml"
    scenario.write_text(
        "gpufleet: 1\nname: history\nstart: 2024-01-01\n"
        "entities: [{entity: a, name: A}, {entity: b, name: B, parent: a}]\n"
        "gpu_models: [{model: h100, name: H100, watts: 700, memory_gb: 80}]\n"
        "sites: [{site: s1, name: S1, owner: a, capacity: [{step: s1-a, online_date: 2024-01-01, slots: 100, "
        "mw: 1.0}]}]\n"
        "events:\n"
        "  - {type: opening_balance, owner: a, model: h100, gpus: 100, site: s1}\n"
        "  - {type: loan_opened, loan: n01, lender: a, borrower: b, model: h100, site: s1, gpus: 80, "
        "end_date: 2024-09-01, on: 2024-03-01}\n")
    service = FleetService(sqlite_engine)
    service.load(scenario)
    assert status(service, "loan:n01", on=date(2024, 3, 2)) == "executed_unapproved"


def test_thirty_two_loans_just_under_the_threshold_recorded_as_history_are_structuring(lending):
    """25 GPUs for 30 days: USD 88,560 each, 74% of the threshold; the 32 together USD 2.8M."""
    written = lending.record_many([(*small_loan(n, days=30), None) for n in range(1, 33)], "t",
                                  after_the_fact=True)
    findings = governance.audit(lending, POLICY, date(2024, 4, 1))
    (found,) = [f for f in findings if f["kind"] == "structuring"]
    assert found["severity"] == "high"
    assert found["evidence_seqs"] == [e.seq for e in written]
    assert found["value_usd"] == pytest.approx(32 * 25 * 24 * 30 * 4.92)
    assert "32 transactions a -> b" in found["title"] and "a controls b" in found["detail"]
    unapproved = [f for f in findings if f["kind"] == "unapproved_related_party_transaction"]
    assert len(unapproved) == 31, "n02..n32: each crossed the aggregate with no approval"
    (last,) = [f for f in unapproved if f["title"].startswith("loan n32:")]
    assert "USD 2,833,920 with 31 earlier from a to b" in last["detail"]


def test_loans_far_under_the_threshold_are_a_series_but_not_structuring(lending):
    """25 GPUs for 14 days (34% of the threshold) is below the floor: the series still needs approval."""
    lending.record_many([(*small_loan(n), None) for n in range(1, 33)], "t", after_the_fact=True)
    kinds = [f["kind"] for f in governance.audit(lending, POLICY, date(2024, 4, 1))]
    assert "structuring" not in kinds
    assert kinds.count("unapproved_related_party_transaction") == 30


def _tx(value: float, on: str = "2024-03-01", giver: str = "a", receiver: str = "b", related: bool = True,
        ident: str = "") -> Transaction:
    ident = ident or f"t{value}{on}{giver}{receiver}"
    return Transaction("loan", ident, f"loan:{ident}", giver, receiver, date.fromisoformat(on), value,
                       "a controls b" if related else None)


# transactions (values as fractions of the threshold) -> the subjects reported as structuring
STRUCTURING = {
    "three at 70% of the threshold": ([_tx(0.7, ident="x"), _tx(0.7, ident="y"), _tx(0.7, ident="z")],
                                      [("loan:x", "loan:y", "loan:z")]),
    "two at 90%: not a pattern": ([_tx(0.9), _tx(0.9, "2024-04-01")], []),
    "ten at 10%: below the floor": ([_tx(0.1, f"2024-03-{d:02}") for d in range(1, 11)], []),
    "one above the threshold is not structuring": ([_tx(1.2, ident="x"), _tx(0.7, ident="y"), _tx(0.7, ident="z")],
                                                  []),
    "exactly at the threshold counts, as it needs no approval": (
        [_tx(1.0, ident="x"), _tx(0.5, ident="y"), _tx(0.6, ident="z")], [("loan:x", "loan:y", "loan:z")]),
    "three in two fiscal years": ([_tx(0.7, "2024-12-01"), _tx(0.7, "2024-12-02"), _tx(0.7, "2025-01-02")], []),
    "three to two receivers": ([_tx(0.7), _tx(0.7, "2024-04-01"), _tx(0.7, receiver="c")], []),
    "unrelated parties": ([_tx(0.7, related=False), _tx(0.7, "2024-04-01", related=False),
                           _tx(0.7, "2024-05-01", related=False)], []),
}


@pytest.mark.parametrize("fractions, expected", STRUCTURING.values(), ids=STRUCTURING.keys())
def test_structuring_is_many_transactions_just_under_the_threshold(fractions, expected):
    txs = [Transaction(t.kind, t.id, t.subject, t.giver, t.receiver, t.on, t.value_usd * POLICY.threshold_usd,
                       t.related_basis) for t in fractions]
    found = structuring(txs, POLICY)
    assert [s.subjects for s in found] == expected


@pytest.mark.parametrize("start_month", [1, 4, 7, 10, 12])
@given(day=st.dates(date(2000, 1, 1), date(2100, 12, 31)))
def test_the_fiscal_year_holds_the_date_and_starts_on_the_first_of_its_month(start_month, day):
    first, after = fiscal_year(day, GovernancePolicy(fiscal_year_start_month=start_month))
    assert first <= day < after
    assert (first.day, first.month, after.day, after.month) == (1, start_month, 1, start_month)
    assert after.year == first.year + 1


LOANS = st.lists(st.tuples(st.sampled_from([("a", "b"), ("b", "a"), ("a", "c")]), st.integers(1, 60),
                           st.integers(1, 90), st.integers(0, 20)), max_size=25)


@settings(max_examples=60)
@given(loans=LOANS)
def test_the_gate_and_the_audit_agree_on_any_series_of_loans(loans):
    """Loans recorded through the gate, none approved: no series of related-party loans between the
    same parties in a fiscal year goes over the threshold, and the audit finds none unapproved."""
    state, day = lending_fleet().state(), date(2024, 3, 1)
    for i, ((lender, borrower), gpus, days, gap) in enumerate(loans):
        day = date.fromordinal(day.toordinal() + gap * 7)
        payload, _ = small_loan(f"r{i}", lender, borrower, day.isoformat(), days, gpus)
        try:
            approval_gate(state, payload, day, FLAT)
            state.apply(payload, day)
        except InvariantViolation:
            continue
    txs = transactions(state, FLAT, day)
    assert all(status_of(state, t, FLAT, day).status == "not_required" for t in txs)
    series: dict[tuple, float] = {}
    for t in txs:
        if t.related_basis:
            key = (t.giver, t.receiver, fiscal_year(t.on, FLAT))
            series[key] = series.get(key, 0.0) + t.value_usd
    assert all(total <= FLAT.threshold_usd for total in series.values()), series
