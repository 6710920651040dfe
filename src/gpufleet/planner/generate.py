"""Seeded synthetic fleets for benchmarks and tests: a scenario document, or the planning problem.

Three sizes (:data:`SIZES`)::

    size     weeks  sites  entities  lots
    small       52      3         4    20
    medium     104     20        30   300
    large      156    100       200  3000

What a generated fleet looks like (every number is drawn from ``random.Random(seed)``,
so the same ``(size, seed)`` always gives the same document):

* **Groups of related entities** of about 4-6 (one group for ``small``). Each group has a
  holding company that is the ``parent`` of some members, a founder who holds a
  controlling stake in several members, and a director or two that tie in the others, so
  the group's related-party graph is connected (but not every pair is related: only
  directly related pairs may lend). A few directors also sit on the board of a second
  group, which joins the two groups into one lending component (``medium``/``large``).
* **Builders and consumers**: inside a group some entities buy most of the GPUs and own
  the sites (surplus), while related ones have most of the demand (short), so loans pay.
* **One GPU model**, the H100 SXM at 700 W.
* **Sites** owned by the group's builders, with capacity steps: some online at the start,
  some coming online over the horizon, several *after* the lots they are meant for are
  delivered, so GPUs wait in the warehouse (the 2023 story). A few steps slip, recorded
  as ``site_capacity_slipped`` events during the history.
* **History**: the scenario starts :data:`HISTORY_WEEKS` weeks before :data:`PLAN_START`
  with opening balances (installed and in the warehouse); lots planned in the history are
  shipped, delivered and, where capacity is online, installed; some late lots are
  rescheduled. Purchase orders with lots planned over the whole horizon are placed at the
  start.
* **Demand** per entity: 2-5 records with tiers 0-3 and values of USD 1-6 per GPU-hour
  (higher tiers are worth less).

Public API::

    SIZES: dict[str, FleetSize]
    PLAN_START: date
    generate_scenario(size: str, seed: int = 0) -> dict
    group_access(doc: dict) -> dict[str, list[str]]
    scenario_state(doc: dict, as_of: date | None = None) -> FleetState
    generate_problem(size: str, seed: int = 0, options: PlanOptions | None = None) -> PlanningProblem

The document is the scenario YAML format (``docs/scenario-format.md``) as plain Python data
(dates as ISO strings): ``yaml.safe_dump(doc, sort_keys=False)`` writes a file that
``gpufleet load`` accepts. :func:`generate_problem` does not touch a database: it folds the
scenario's events into a :class:`FleetState` in ``(effective date, recorded order)`` order,
as the ledger does, so a benchmark measures the planner only. The module does no I/O.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from gpufleet.domain.scenario import Scenario, scenario_events
from gpufleet.domain.state import FleetState
from gpufleet.errors import InputError
from gpufleet.planner.problem import PlanningProblem, PlanOptions, problem_from_state


@dataclass(frozen=True)
class FleetSize:
    weeks: int
    sites: int
    entities: int
    lots: int


SIZES: dict[str, FleetSize] = {
    "small": FleetSize(weeks=52, sites=3, entities=4, lots=20),
    "medium": FleetSize(weeks=104, sites=20, entities=30, lots=300),
    "large": FleetSize(weeks=156, sites=100, entities=200, lots=3000),
}

HISTORY_WEEKS = 13
PLAN_START = date(2024, 1, 1)  # a Monday: the planning problem's week 0
SCENARIO_START = PLAN_START - timedelta(weeks=HISTORY_WEEKS)
MODEL = "h100"
WATTS = 700.0
UNIT_PRICE_USD = 30_000.0
SUFFIXES = ["holdco", "cloud", "lab", "robotics", "auto", "social", "search", "energy", "bio", "media"]
TIER_VALUES = {0: (4.5, 6.0), 1: (3.0, 4.5), 2: (2.0, 3.0), 3: (1.0, 2.0)}  # USD per GPU-hour
TIER_WEIGHTS = [0.2, 0.35, 0.3, 0.15]
SLIP_RECORDED_LAG_DAYS = 21


def _d(day: date) -> str:
    return day.isoformat()


@dataclass
class _Entity:
    id: str
    group: int
    kind: str  # builder | consumer | balanced
    supply: float  # relative share of the group's GPUs
    need: float  # relative share of the group's demand


@dataclass
class _Step:
    step: str
    planned: date  # the online date registered with the site
    slots: int
    mw: float
    online: date | None = None  # after any slip

    def __post_init__(self):
        self.online = self.online or self.planned


@dataclass
class _Site:
    id: str
    owner: str
    group: int
    pue: float
    steps: list[_Step]

    def online(self, on: date) -> tuple[int, float]:
        live = [s for s in self.steps if s.online <= on]
        return sum(s.slots for s in live), sum(s.mw for s in live)


class _Generator:
    def __init__(self, size: str, seed: int):
        if size not in SIZES:
            raise InputError(f"unknown size '{size}' (known: {', '.join(SIZES)})", field="size")
        self.size, self.spec, self.seed = size, SIZES[size], seed
        self.r = random.Random(f"gpufleet-generate:{size}:{seed}")
        self.end = PLAN_START + timedelta(weeks=self.spec.weeks)
        self.entities: list[_Entity] = []
        self.groups: list[list[_Entity]] = []
        self.sites: list[_Site] = []

    # -- parties ----------------------------------------------------------------------

    def _group_sizes(self) -> list[int]:
        left, sizes = self.spec.entities, []
        while left > 0:
            k = min(self.r.randint(4, 6), left)
            if 0 < left - k < 4:  # no group smaller than 4 unless the whole fleet is
                k = left if left <= 6 else left - 4
            sizes.append(k)
            left -= k
        return sizes

    def parties(self) -> tuple[list[dict], list[dict]]:
        r = self.r
        entities, persons = [], []
        for g, k in enumerate(self._group_sizes()):
            kinds = ["builder", "consumer"] + [r.choices(["builder", "consumer", "balanced"], [0.35, 0.35, 0.3])[0]
                                               for _ in range(k - 2)]
            r.shuffle(kinds)
            suffixes = ["holdco"] + r.sample(SUFFIXES[1:], k - 1)
            members = []
            for kind, suffix in zip(kinds, suffixes, strict=True):
                supply = {"builder": 3.0, "balanced": 1.0, "consumer": 0.15}[kind] * r.lognormvariate(0, 0.35)
                need = {"builder": 0.4, "balanced": 1.0, "consumer": 2.5}[kind] * r.lognormvariate(0, 0.35)
                members.append(_Entity(f"g{g:02d}-{suffix}", g, kind, supply, need))
            self.groups.append(members)
            self.entities += members
            holdco = members[0]
            controlled = {m.id for m in members[1:] if r.random() < 0.3}
            entities.append({"entity": holdco.id, "name": f"Group {g:02d} Holdings",
                             "assumption": f"synthetic: holding company of group {g:02d} ({holdco.kind})"})
            for m in members[1:]:
                item = {"entity": m.id, "name": f"Group {g:02d} {m.id.split('-', 1)[1].title()}",
                        "assumption": f"synthetic: member of group {g:02d} ({m.kind})"}
                if m.id in controlled:
                    item["parent"] = holdco.id
                entities.append(item)
            # the founder controls the holdco and some members; directors tie in the rest
            ids = [m.id for m in members]
            founder_in = [ids[0]] + [i for i in ids[1:] if i not in controlled and r.random() < 0.5]
            if len(founder_in) < 2:
                founder_in.append(next(i for i in ids[1:] if i not in founder_in))
            persons.append(self._person(f"p{g:02d}-founder", f"Founder {g:02d}",
                                        [(e, "controlling_shareholder") for e in founder_in]))
            linked = set(founder_in) | controlled | {ids[0]}
            loose = [i for i in ids if i not in linked]
            for j in range(0, len(loose), 2):
                seat = r.choice(sorted(linked))
                roles = [(e, "director") for e in [seat, *loose[j:j + 2]]]
                persons.append(self._person(f"p{g:02d}-dir{j // 2}", f"Director {g:02d}-{j // 2}", roles))
                linked |= set(loose[j:j + 2])
        # a few directors sit on two groups' boards: those groups become one lending component
        n_groups = len(self.groups)
        for k in range(round(n_groups / 8) if n_groups > 1 else 0):
            a, b = r.sample(range(n_groups), 2)
            ea, eb = r.choice(self.groups[a]).id, r.choice(self.groups[b]).id
            persons.append(self._person(f"px{k:02d}-director", f"Cross director {k:02d}",
                                        [(ea, "independent_director"), (eb, "independent_director")]))
        return entities, persons

    @staticmethod
    def _person(pid: str, name: str, roles: list[tuple[str, str]]) -> dict:
        return {"person": pid, "name": name, "assumption": "synthetic person",
                "roles": [{"person": pid, "entity": e, "role": role} for e, role in roles]}

    # -- supply -----------------------------------------------------------------------

    def lots(self) -> tuple[dict[str, int], list[tuple[_Entity, int, date]]]:
        """Opening GPUs per entity and every lot (buyer, GPUs, planned date), by date."""
        r = self.r
        weights = [e.supply for e in self.entities]
        span = (self.end - timedelta(days=14) - SCENARIO_START).days
        lots = []
        for _ in range(self.spec.lots):
            buyer = r.choices(self.entities, weights)[0]
            lots.append((buyer, 8 * r.randint(32, 256), SCENARIO_START + timedelta(days=r.randrange(span))))
        per_entity = {e.id: 0 for e in self.entities}
        for buyer, gpus, _ in lots:
            per_entity[buyer.id] += gpus
        opening = {e.id: 8 * round(0.5 * per_entity[e.id] * r.uniform(0.2, 0.6) / 8) for e in self.entities}
        return opening, lots

    def make_sites(self, opening: dict[str, int], lots: list[tuple[_Entity, int, date]]) -> None:
        """Sites per group, sized to the group's GPUs, with capacity lagging the deliveries."""
        r = self.r
        n_groups = len(self.groups)
        counts = [1] * min(n_groups, self.spec.sites)
        while sum(counts) < self.spec.sites:
            counts[r.choices(range(n_groups), [len(g) for g in self.groups])[0]] += 1
        for g, members in enumerate(self.groups):
            if g >= len(counts):
                break
            builders = [m for m in members if m.kind == "builder"] or members
            owners = [r.choices(builders, [m.supply for m in builders])[0] for _ in range(counts[g])]
            group_lots = sorted(d for buyer, _, d in lots if buyer.group == g)
            group_new = sum(n for buyer, n, _ in lots if buyer.group == g)
            group_open = sum(opening[m.id] for m in members)
            lag_weeks = r.choice([0, 4, 8, 12, 20])  # how far the new capacity trails the lots
            new_total = group_new * r.uniform(0.65, 1.0)
            sites = []
            for k, owner in enumerate(owners):
                pue = round(r.uniform(1.1, 1.5), 2)
                sites.append(_Site(f"s{g:02d}-{k}-{owner.id.split('-', 1)[1]}", owner.id, g, pue, []))
            # existing capacity: room for most of the opening GPUs, spread over the older sites
            existing = [s for i, s in enumerate(sites) if i == 0 or r.random() < 0.5]
            for s in existing:
                slots = 8 * round(group_open * r.uniform(0.6, 0.9) / len(existing) / 8) + 256
                s.steps.append(self._step(s, "existing", SCENARIO_START, slots, r.uniform(1.0, 1.1)))
            n_new = max(1, round(len(sites) * r.uniform(1.0, 2.5)))
            for j in range(n_new):
                anchor = group_lots[min(len(group_lots) - 1, int((j + r.random()) / n_new * len(group_lots)))] \
                    if group_lots else PLAN_START
                online = max(SCENARIO_START + timedelta(days=7),
                             anchor + timedelta(weeks=lag_weeks + r.randint(-3, 6)))
                slots = 8 * max(32, round(new_total / n_new * r.uniform(0.6, 1.4) / 8))
                site = r.choice(sites)
                site.steps.append(self._step(site, f"phase-{len(site.steps) + 1}", online, slots,
                                             r.uniform(0.85, 1.15)))
            self.sites += sites

    def _step(self, site: _Site, name: str, online: date, slots: int, power_factor: float) -> _Step:
        mw = round(slots * WATTS * site.pue / 1e6 * power_factor + 0.05, 1)
        return _Step(f"{site.id}-{name}", online, slots, mw)

    # -- the document -----------------------------------------------------------------

    def document(self) -> dict:
        r = self.r
        entities, persons = self.parties()
        opening, lots = self.lots()
        self.make_sites(opening, lots)
        sites_of_group: dict[int, list[_Site]] = {}
        for s in self.sites:
            sites_of_group.setdefault(s.group, []).append(s)
        installed: dict[str, int] = {s.id: 0 for s in self.sites}  # GPUs installed per site, as we go
        events: list[dict] = []

        def room(site: _Site, on: date) -> int:
            slots, mw = site.online(on)
            by_power = int(mw * 1e6 / (WATTS * site.pue) + 1e-9)
            return max(0, min(slots, by_power) - installed[site.id])

        def install(owner: _Entity, gpus: int, on: date, *, opening_balance: bool) -> int:
            """Install up to ``gpus`` at the group's sites (own sites first); return how many."""
            placed = 0
            group_sites = sorted(sites_of_group.get(owner.group, []), key=lambda s: (s.owner != owner.id, s.id))
            for site in group_sites:
                n = min(gpus - placed, room(site, on))
                if n <= 0:
                    continue
                installed[site.id] += n
                placed += n
                if opening_balance:
                    events.append({"type": "opening_balance", "on": _d(on), "owner": owner.id, "model": MODEL,
                                   "gpus": n, "site": site.id, "unit_price_usd": UNIT_PRICE_USD,
                                   "assumption": "synthetic opening balance, installed"})
                else:
                    events.append({"type": "gpus_installed", "on": _d(on), "owner": owner.id, "model": MODEL,
                                   "site": site.id, "gpus": n})
                if placed == gpus:
                    break
            return placed

        # opening balances: installed where the existing capacity allows, the rest in the warehouse
        for e in self.entities:
            if opening[e.id] > 0:
                left = opening[e.id] - install(e, opening[e.id], SCENARIO_START, opening_balance=True)
                if left > 0:
                    events.append({"type": "opening_balance", "on": _d(SCENARIO_START), "owner": e.id,
                                   "model": MODEL, "gpus": left, "unit_price_usd": UNIT_PRICE_USD,
                                   "assumption": "synthetic opening balance, in the warehouse"})

        # purchase orders: each buyer's lots in date order, 1-6 lots per order
        by_buyer: dict[str, list[tuple[int, date]]] = {}
        for buyer, gpus, planned in lots:
            by_buyer.setdefault(buyer.id, []).append((gpus, planned))
        pos, lot_rows = [], []
        for buyer in sorted(by_buyer):
            mine = sorted(by_buyer[buyer], key=lambda x: x[1])
            i = 0
            while i < len(mine):
                k = r.randint(1, 6)
                po = f"po-{buyer}-{len(pos):04d}"
                items = [{"lot": f"{po}-l{j}", "gpus": gpus, "planned_date": _d(planned)}
                         for j, (gpus, planned) in enumerate(mine[i:i + k])]
                pos.append({"po": po, "buyer": buyer, "vendor": "NVIDIA", "model": MODEL,
                            "unit_price_usd": UNIT_PRICE_USD, "lots": items})
                lot_rows += [(buyer, it["lot"], it["gpus"], date.fromisoformat(it["planned_date"])) for it in items]
                i += k

        # the history: lots planned before the plan start ship and arrive (a few late), then install
        by_id = {e.id: e for e in self.entities}
        arrivals = []
        for buyer, lot, gpus, planned in sorted(lot_rows, key=lambda x: (x[3], x[1])):
            if planned >= PLAN_START - timedelta(days=7):
                if r.random() < 0.05:  # the vendor announces a slip of a future lot
                    on = SCENARIO_START + timedelta(days=r.randrange(HISTORY_WEEKS * 7))
                    events.append({"type": "lot_rescheduled", "on": _d(on), "lot": lot,
                                   "planned_date": _d(planned + timedelta(weeks=r.randint(2, 8))),
                                   "reason": "vendor allocation moved (synthetic)"})
                continue
            if r.random() < 0.15:  # late: not delivered by the plan start
                events.append({"type": "lot_rescheduled", "on": _d(max(planned, SCENARIO_START)), "lot": lot,
                               "planned_date": _d(PLAN_START + timedelta(weeks=r.randint(1, 10))),
                               "reason": "vendor slip (synthetic)"})
                continue
            delivered = max(planned + timedelta(days=r.randint(0, 6)), SCENARIO_START + timedelta(days=1))
            shipped = delivered - timedelta(days=r.randint(2, 10))
            if shipped > SCENARIO_START:
                events.append({"type": "lot_shipped", "on": _d(shipped), "lot": lot})
            events.append({"type": "lot_delivered", "on": _d(delivered), "lot": lot})
            arrivals.append((delivered + timedelta(days=r.randint(3, 14)), buyer, gpus))
        for on, buyer, gpus in sorted(arrivals):
            if on < PLAN_START:
                install(by_id[buyer], gpus, on, opening_balance=False)

        # capacity slips, recorded during the history, of steps still in the future at the plan start
        for site in self.sites:
            for step in site.steps:
                if step.planned > PLAN_START + timedelta(weeks=4) and r.random() < 0.12:
                    on = SCENARIO_START + timedelta(days=r.randrange(HISTORY_WEEKS * 7 - SLIP_RECORDED_LAG_DAYS))
                    step.online = step.planned + timedelta(weeks=r.randint(4, 16))
                    recorded = on + timedelta(days=SLIP_RECORDED_LAG_DAYS)
                    events.append({"type": "site_capacity_slipped", "on": _d(on),
                                   "recorded": f"{_d(recorded)}T00:00:00.000000Z", "site": site.id,
                                   "step": step.step, "online_date": _d(step.online),
                                   "reason": "construction delay (synthetic)",
                                   "assumption": "known three weeks after it took effect"})
        site_items = [{"site": s.id, "name": f"Site {s.id}", "owner": s.owner, "pue": s.pue,
                       "capacity": [{"step": st.step, "online_date": _d(st.planned), "slots": st.slots, "mw": st.mw}
                                    for st in s.steps],
                       "assumption": "synthetic site"} for s in self.sites]

        demand = self.demand()
        events.sort(key=lambda e: (e["on"], e.get("recorded", ""), e["type"]))
        return {
            "gpufleet": 1,
            "name": f"generated-{self.size}-seed{self.seed}",
            "description": (f"Synthetic fleet ({self.size}, seed {self.seed}): {self.spec.entities} entities in "
                            f"{len(self.groups)} group{'s' if len(self.groups) != 1 else ''}, {self.spec.sites} sites, "
                            f"{self.spec.lots} lots; plan from {PLAN_START} for {self.spec.weeks} weeks."),
            "start": _d(SCENARIO_START),
            "actor": f"generator:{self.size}:{self.seed}",
            "entities": entities,
            "persons": persons,
            "gpu_models": [{"model": MODEL, "name": "NVIDIA H100 SXM", "watts": WATTS, "memory_gb": 80,
                            "assumption": "700 W board power, 80 GB (H100 SXM)"}],
            "sites": site_items,
            "purchase_orders": pos,
            "demand": demand,
            "events": events,
        }

    def demand(self) -> list[dict]:
        r = self.r
        weeks = self.spec.weeks
        out = []
        for g, members in enumerate(self.groups):
            total_need = sum(m.need for m in members)
            group_gpus = sum(s.slots for site in self.sites if site.group == g for s in site.steps)
            for m in members:
                level = group_gpus * m.need / total_need * r.uniform(0.8, 1.3)
                n_rec = r.randint(2, 5)
                for k in range(n_rec):
                    length = r.randint(8, min(52, weeks))
                    if k == 0:  # the workload already running at the plan start
                        start = PLAN_START - timedelta(weeks=r.randint(1, HISTORY_WEEKS))
                    else:
                        start = PLAN_START + timedelta(weeks=r.randint(-4, weeks - 4))
                    mid = min(1.0, max(0.0, ((start - PLAN_START).days / 7 + length / 2) / weeks))
                    gpus = level * (0.35 + 0.65 * mid) * weeks / (n_rec * 30) * r.uniform(0.6, 1.4)
                    tier = r.choices(range(4), TIER_WEIGHTS)[0]
                    lo, hi = TIER_VALUES[tier]
                    out.append({"demand": f"d-{m.id}-{k}", "entity": m.id, "start": _d(start),
                                "end": _d(start + timedelta(weeks=length)), "gpus": max(8, 8 * round(gpus / 8)),
                                "value_usd_per_gpu_hour": round(r.uniform(lo, hi), 2),
                                "workload": r.choice(["training", "inference"]), "tier": tier,
                                "assumption": "synthetic demand"})
        return out


# -- public API ---------------------------------------------------------------------------


def generate_scenario(size: str, seed: int = 0) -> dict:
    """A scenario document (plain data, dates as ISO strings) for a fleet of ``size``; seeded."""
    return _Generator(size, seed).document()


def group_access(doc: dict) -> dict[str, list[str]]:
    """Every entity may run at the sites owned by its group (``gNN-`` prefix of the ids)."""
    by_group: dict[str, list[str]] = {}
    for site in doc.get("sites", []):
        by_group.setdefault(site["owner"].split("-", 1)[0], []).append(site["site"])
    return {e["entity"]: sorted(by_group.get(e["entity"].split("-", 1)[0], [])) for e in doc.get("entities", [])}


def scenario_state(doc: dict, as_of: date | None = None) -> FleetState:
    """Fold a scenario's events into a state, as the ledger would, with no database.

    Events are ordered as the ledger orders them: sequence by recorded time (file order
    breaks ties), then folded by ``(effective date, sequence)``. Events effective after
    ``as_of`` (default: all) are left out. Raises the ledger's errors on a broken invariant.
    """
    scenario = Scenario.model_validate(doc)
    items = scenario_events(scenario)
    seq = sorted(range(len(items)), key=lambda i: (_recorded(items[i]), i))  # the ledger's append order
    rank = {i: k for k, i in enumerate(seq)}
    state = FleetState()
    for i in sorted(range(len(items)), key=lambda i: (items[i].effective_date, rank[i])):
        if as_of is None or items[i].effective_date <= as_of:
            state.apply(items[i].payload, items[i].effective_date)
    return state


def _recorded(item) -> datetime:
    """The recorded instant of a scenario event (default: 00:00 UTC on its effective date), naive UTC."""
    rec = item.recorded
    if rec is None:
        rec = item.effective_date
    if not isinstance(rec, datetime):
        return datetime(rec.year, rec.month, rec.day)
    return rec.astimezone(UTC).replace(tzinfo=None) if rec.tzinfo else rec


def generate_problem(size: str, seed: int = 0, options: PlanOptions | None = None) -> PlanningProblem:
    """The planning problem of ``generate_scenario(size, seed)`` from :data:`PLAN_START`.

    ``options`` defaults to ``PlanOptions(horizon_weeks=SIZES[size].weeks)``; entities may run
    at the sites of their group (:func:`group_access`), so lending within a group is possible.
    """
    doc = generate_scenario(size, seed)
    options = options or PlanOptions(horizon_weeks=SIZES[size].weeks)
    state = scenario_state(doc, PLAN_START)
    return problem_from_state(state, PLAN_START, options, access=group_access(doc))
