"""Property tests: random event sequences never leave a broken state or a broken chain."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from builders import Story
from gpufleet.domain import events as ev
from gpufleet.domain.state import FleetState
from gpufleet.errors import GpufleetError
from gpufleet.ledger import db
from gpufleet.ledger.store import Draft, Ledger

START = date(2024, 1, 1)
OWNERS = ["a", "b", "c"]
SITES = ["s1", "s2"]


def base() -> Story:
    """Three entities; s1 (a) binds on power before slots; s2 (b) comes online on day 20."""
    story = Story("2024-01-01").entity("a").entity("b").entity("c", parent="a").model()
    story.site("s1", "a", slots=120, mw=0.1, pue=1.2)
    story.site("s2", "b", slots=60, mw=1.0, online="2024-01-21")
    for holder, where, n in [("a", "s1", 60), ("a", None, 40), ("b", None, 30), ("c", None, 20)]:
        story.add(ev.OpeningBalance(owner=holder, model="h100", gpus=n, site=where))
    story.po("pa", "a", {"la": (12, "2024-01-10")}).po("pb", "b", {"lb": (12, "2024-02-01")})
    return story.lend("n0", "a", "b", "s1", 20, "2024-06-01", notice_days=2)


gpus = st.integers(1, 30)
owner = st.sampled_from(OWNERS)
site = st.sampled_from(SITES)
index = st.integers(0, 7)
OPS = st.one_of(
    st.tuples(st.just("po"), owner, gpus, st.integers(0, 30)),
    st.tuples(st.just("ship"), index),
    st.tuples(st.just("deliver"), index),
    st.tuples(st.just("install"), owner, site, gpus),
    st.tuples(st.just("uninstall"), owner, site, gpus),
    st.tuples(st.just("fail"), owner, st.one_of(st.none(), site), gpus),
    st.tuples(st.just("repair"), owner, gpus),
    st.tuples(st.just("retire"), owner, st.one_of(st.none(), site), st.booleans(), gpus),
    st.tuples(st.just("lend"), owner, owner, site, gpus, st.integers(1, 40), st.integers(0, 3)),
    st.tuples(st.just("reclaim"), index, gpus, st.integers(-10, 0)),
    st.tuples(st.just("close"), index),
    st.tuples(st.just("swap"), index, index),
    st.tuples(st.just("slip"), site, st.integers(-10, 30)),
)
# each step: an op and how many days it moves the clock (negative: a late record)
STEPS = st.lists(st.tuples(OPS, st.integers(-3, 3)), min_size=1, max_size=40)


class Namer:
    """Turns index-based ops into payloads with the ids created so far."""

    def __init__(self):
        self.lots: list[str] = ["la", "lb"]
        self.loans: list[str] = ["n0"]
        self.made = 0  # a counter for fresh ids

    def accepted(self, payload: ev.Payload) -> None:
        """Remember the ids an accepted event created, so later ops can refer to them."""
        if isinstance(payload, ev.PurchaseOrderPlaced):
            self.lots += [x.lot for x in payload.lots]
        elif isinstance(payload, ev.LoanOpened):
            self.loans.append(payload.loan)

    def payload(self, op: tuple, day: date) -> ev.Payload:
        kind, *a = op
        pick = (lambda items, i: items[i % len(items)] if items else "none")
        match kind:
            case "po":
                self.made += 1
                lot = f"l{self.made}"
                return ev.PurchaseOrderPlaced(po=f"p{lot}", buyer=a[0], vendor="v", model="h100", unit_price_usd=1,
                                              lots=[ev.LotSpec(lot=lot, gpus=a[1],
                                                               planned_date=day + timedelta(a[2]))])
            case "ship":
                return ev.LotShipped(lot=pick(self.lots, a[0]))
            case "deliver":
                return ev.LotDelivered(lot=pick(self.lots, a[0]))
            case "install":
                return ev.GpusInstalled(owner=a[0], model="h100", site=a[1], gpus=a[2])
            case "uninstall":
                return ev.GpusUninstalled(owner=a[0], model="h100", site=a[1], gpus=a[2])
            case "fail":
                return ev.GpusFailed(owner=a[0], model="h100", site=a[1], gpus=a[2])
            case "repair":
                return ev.GpusRepaired(owner=a[0], model="h100", gpus=a[1])
            case "retire":
                return ev.GpusRetired(owner=a[0], model="h100", site=a[1], from_failed=a[2] and a[1] is None,
                                      gpus=a[3])
            case "lend":
                self.made += 1
                loan = f"n{self.made}"
                return ev.LoanOpened(loan=loan, lender=a[0], borrower=_other(a[0], a[1]), model="h100",
                                     site=a[2], gpus=a[3], end_date=day + timedelta(a[4]), reclaim_notice_days=a[5],
                                     fee_usd_per_gpu_hour=1.5)
            case "reclaim":
                return ev.LoanReclaimed(loan=pick(self.loans, a[0]), gpus=a[1], notice_given_on=day + timedelta(a[2]))
            case "close":
                return ev.LoanClosed(loan=pick(self.loans, a[0]))
            case "swap":
                first, second = pick(self.lots, a[0]), pick(self.lots, a[1])
                if first == second:
                    second = pick(self.lots, a[0] + 1) if len(self.lots) > 1 else "none2"
                self.made += 1
                return ev.DeliverySlotSwap(swap=f"w{self.made}", lots_a=[first], lots_b=[second])
            case "slip":
                return ev.SiteCapacitySlipped(site=a[0], step=f"{a[0]}-1", online_date=date(2024, 1, 21) +
                                              timedelta(a[1]))
        raise AssertionError(kind)


def _other(lender: str, borrower: str) -> str:
    """The borrower, or the next entity when the draw picked the lender twice."""
    return borrower if borrower != lender else OWNERS[(OWNERS.index(lender) + 1) % len(OWNERS)]


@given(steps=STEPS)
def test_random_events_never_break_the_state(steps):
    """Pure fold: refused events change nothing; accepted ones keep every invariant."""
    state = FleetState()
    for payload, day in base().items:
        state.apply(payload, day)
    namer, day = Namer(), START
    for op, move in steps:
        day = max(day, day + timedelta(move))  # the pure state only moves forward
        payload = namer.payload(op, day)
        image = state.to_dict()
        try:
            state.apply(payload, day)
            namer.accepted(payload)
        except GpufleetError:
            assert state.to_dict() == image
        assert state.conservation_errors() == []


@given(steps=STEPS)
def test_random_appends_keep_the_chain_and_replay_equal(steps, tmp_path_factory):
    """Through the ledger, with late records and snapshots every two events."""
    engine = db.make_engine(str(tmp_path_factory.mktemp("prop") / "l.db"))
    db.upgrade(engine)
    with engine.begin() as conn:
        Ledger(conn).append(base().drafts())
    namer, day, incremental = Namer(), START, None
    for op, move in steps:
        day = day + timedelta(move)
        draft = Draft(namer.payload(op, day), day, "prop")
        with engine.connect() as conn:
            before = Ledger(conn).head()
        try:
            with engine.begin() as conn:
                ledger = Ledger(conn, snapshot_every=2)
                ledger.append([draft])
                incremental = ledger.last_state
            namer.accepted(draft.payload)
        except GpufleetError:
            with engine.connect() as conn:
                assert Ledger(conn).head() == before, "a refused append must write nothing"
    with engine.connect() as conn:
        ledger = Ledger(conn)
        assert ledger.verify().ok
        scratch = ledger.state(use_snapshots=False)
        assert scratch.conservation_errors() == []
        if incremental is not None:
            assert incremental.to_dict() == scratch.to_dict()
        for probe in (START + timedelta(d) for d in (0, 5, 15, 30, 60)):
            assert ledger.state(probe).to_dict() == ledger.state(probe, use_snapshots=False).to_dict()
    engine.dispose()
