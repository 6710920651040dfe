"""Related parties, the approval state machine, arm's-length prices and claims against the record."""

from __future__ import annotations

from datetime import date

import pytest

from builders import Story, two_party_fleet
from gpufleet.domain import events as ev
from gpufleet.domain.governance import GovernancePolicy, needs_approval, off_market, status_of, transactions
from gpufleet.domain.parties import related_parties
from gpufleet.errors import InputError, InvariantViolation
from gpufleet.ledger.store import Draft
from gpufleet.services import governance
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
    (row,) = governance.claim_forecasts(service, service.state(), date(2025, 1, 1))
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
