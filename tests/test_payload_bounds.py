"""Every quantity of an event payload has a documented bound (docs/events.md, docs/scenario-format.md
"Bounds"), checked where it enters: numbers are strict and finite, dates within 1970-01-01 to
2199-12-31, and at the bounds every figure derived from them stays finite. Issue 12, item 5.
"""

from __future__ import annotations

import json
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cli_runner import invoke
from gpufleet.domain import events as ev
from gpufleet.domain.costs import CostPolicy, month_bounds
from gpufleet.domain.types import MAX_GPUS, MAX_SEQ, MAX_USD_PER_GPU_HOUR
from gpufleet.errors import InputError, InvariantViolation
from gpufleet.services.fleet import make_payload
from builders import two_party_fleet

# -- payload bounds, in bulk ---------------------------------------------------------------------------

INSTALLED = {"owner": "a", "model": "h100", "site": "s1"}
LOAN_FIELDS = {"loan": "l", "lender": "a", "borrower": "b", "model": "h100", "site": "s1", "gpus": 1,
               "end_date": "2024-09-01"}
MODEL = {"model": "m", "name": "M", "watts": 700, "memory_gb": 80}
SITE = {"site": "s", "name": "S", "owner": "a"}
CLAIM = {"claim": "c", "claimant": "a", "metric": "gpu_spend_usd", "target": 1, "deadline": "2024-12-31"}

# event type, the other fields, the field, its largest (or smallest) good value, bad values
EDGES = [
    ("gpus_installed", INSTALLED, "gpus", MAX_GPUS, [MAX_GPUS + 1, 10**12, 10**30, 2**63, 0, -1, True, 5.0, "5"]),
    ("loan_opened", LOAN_FIELDS, "fee_usd_per_gpu_hour", MAX_USD_PER_GPU_HOUR,
     [MAX_USD_PER_GPU_HOUR * 1.0001, 1e308, float("inf"), float("nan"), -0.01, True, "2"]),
    ("loan_opened", LOAN_FIELDS, "reclaim_notice_days", 3650, [3651, 10**30, 1.0, True]),
    ("gpu_model_registered", MODEL, "watts", 100_000, [100_000.5, float("nan"), float("inf"), 0, True]),
    ("site_registered", SITE, "pue", 5.0, [5.01, 0.99, True, float("nan"), "1.2"]),
    ("site_registered", SITE | {"capacity": [{"step": "k", "online_date": "2024-01-01", "mw": 1}]},
     "capacity.0.slots", MAX_GPUS, [MAX_GPUS + 1, -1, True, 1.5]),
    ("purchase_order_placed", {"po": "p", "buyer": "a", "vendor": "v", "model": "h100",
                               "lots": [{"lot": "l", "gpus": 1, "planned_date": "2024-01-01"}]},
     "unit_price_usd", 1e7, [1e7 + 1, 1e308, float("inf"), float("nan"), -1]),
    ("claim_recorded", CLAIM, "target", 1e15, [1.0000001e15, float("inf"), float("nan"), -1, True]),
    ("event_voided", {"reason": "r"}, "seq", MAX_SEQ, [MAX_SEQ + 1, 2**64, 0, True, 1.0]),
    ("demand_recorded", {"demand": "d", "entity": "a", "start": "2024-01-01", "end": "2024-02-01", "gpus": 1,
                         "value_usd_per_gpu_hour": 1}, "tier", 9, [10, -1, True, 1.0]),
    ("loan_reclaimed", {"loan": "l", "gpus": 1}, "notice_given_on", "2199-12-31",
     ["2200-01-01", "9999-12-31", "1969-12-31", "0001-01-01"]),
]


def _with(fields: dict, dotted: str, value) -> dict:
    out = json.loads(json.dumps(fields))
    *path, last = dotted.split(".")
    node = out
    for part in path:
        node = node[int(part)] if part.isdigit() else node[part]
    node[last] = value
    return out


@pytest.mark.parametrize(("event_type", "fields", "field", "good", "bad"), [
    pytest.param(*row, id=f"{row[0]}.{row[2]}") for row in EDGES])
def test_every_quantity_is_bounded_where_it_enters(event_type, fields, field, good, bad):
    make_payload(event_type, _with(fields, field, good))
    for value in bad:
        with pytest.raises(InputError) as err:
            make_payload(event_type, _with(fields, field, value))
        assert err.value.field == field, (value, err.value)


@given(gpus=st.integers())
def test_gpus_are_taken_exactly_within_their_bounds(gpus):
    fields = INSTALLED | {"gpus": gpus}
    if 1 <= gpus <= MAX_GPUS:
        assert make_payload("gpus_installed", fields).gpus == gpus
    else:
        with pytest.raises(InputError, match="Input should be"):
            make_payload("gpus_installed", fields)


@given(fee=st.floats(allow_nan=True, allow_infinity=True))
def test_a_fee_is_finite_and_within_its_bounds_or_refused(fee):
    fields = LOAN_FIELDS | {"fee_usd_per_gpu_hour": fee}
    if 0 <= fee <= MAX_USD_PER_GPU_HOUR:
        assert make_payload("loan_opened", fields).fee_usd_per_gpu_hour == fee
    else:
        with pytest.raises(InputError) as err:
            make_payload("loan_opened", fields)
        assert err.value.field == "fee_usd_per_gpu_hour"


@pytest.mark.parametrize(("text", "ok_"), [("1970-01", True), ("2199-12", True), ("1969-12", False),
                                           ("2200-01", False), ("9999-12", False), ("0001-01", False)],
                         ids=["first", "last", "before", "after", "year-9999", "year-1"])
def test_a_month_is_within_the_dates_taken(text, ok_):
    if ok_:
        first, last = month_bounds(text)
        assert first.day == 1 and (last.month, last.day) in ((1, 31), (12, 31))
    else:
        with pytest.raises(InputError, match="outside the dates"):
            month_bounds(text)


# -- the figures at the bounds stay finite ---------------------------------------------------------------

AT_THE_BOUNDS = """\
gpufleet: 1
name: at the bounds
start: 1970-01-01
entities:
  - {entity: a, name: A}
  - {entity: b, name: B}
gpu_models:
  - {model: g, name: G, watts: 1, memory_gb: 100000}
sites:
  - site: s
    name: S
    owner: a
    pue: 5
    capacity:
      - {step: s-1, online_date: 1970-01-01, slots: 10000000, mw: 100000}
purchase_orders:
  - {po: p, buyer: a, vendor: v, model: g, unit_price_usd: 10000000, lots: [{lot: l, gpus: 10000000, planned_date: 1970-01-01}]}
demand:
  - {demand: d, entity: b, start: 1970-01-01, end: 2199-12-31, gpus: 10000000, value_usd_per_gpu_hour: 10000}
claims:
  - {claim: c, claimant: a, metric: gpu_spend_usd, target: 1.0e+15, deadline: 2199-12-31, period_start: 1970-01-01}
events:
  - {type: lot_delivered, lot: l}
  - {type: gpus_installed, owner: a, model: g, site: s, gpus: 10000000}
  - {type: loan_opened, loan: n, lender: a, borrower: b, model: g, site: s, gpus: 10000000, end_date: 2199-12-31,
     fee_usd_per_gpu_hour: 10000, reclaim_notice_days: 3650}
"""


def _finite(text_: str):
    def refuse(constant):
        raise AssertionError(f"{constant} in the JSON output")
    return json.loads(text_, parse_constant=refuse)


def test_every_figure_is_finite_with_every_quantity_at_its_bound(tmp_path):
    scenario = tmp_path / "max.yaml"
    scenario.write_text(AT_THE_BOUNDS)
    db = tmp_path / "max.db"
    assert invoke("load", scenario, db=db).code == 0
    status = _finite(invoke("status", "--as-of", "2199-12-31", "-f", "json", db=db).stdout)
    [loan] = status["loans"]
    assert loan["fee_usd_to_date"] == pytest.approx(1e7 * 24 * (date(2199, 12, 31) - date(1970, 1, 1)).days * 1e4)
    for args in (("costs", "--month", "2199-12"), ("audit",), ("approvals", "list")):
        result = invoke(*args, "-f", "json", db=db)
        assert result.code == 0, result.stderr
        _finite(result.stdout)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"life_years": float("nan")}, "life_years"), ({"life_years": float("inf")}, "life_years"),
    ({"life_years": 1e-300}, "life_years"), ({"life_years": 101}, "life_years"),
    ({"usd_per_kwh": float("nan")}, "usd_per_kwh"), ({"usd_per_kwh": float("inf")}, "usd_per_kwh"),
    ({"usd_per_kwh": 1e308}, "usd_per_kwh"),
], ids=["life-nan", "life-inf", "life-1e-300", "life-101", "kwh-nan", "kwh-inf", "kwh-1e308"])
def test_the_cost_rates_are_finite_and_bounded(kwargs, field):
    with pytest.raises(InputError) as err:
        CostPolicy(**kwargs)
    assert err.value.field == field
    CostPolicy(life_years=1 / 365, usd_per_kwh=100)  # the edges are taken


@pytest.mark.parametrize(("payload", "field", "says"), [
    pytest.param(lambda: ev.GpusRetired(owner="a", model="h100", gpus=1, site="s1", from_failed=True), None,
                 "not both", id="retire-site-and-from-failed"),
    pytest.param(lambda: ev.ClaimRecorded(claim="c", claimant="a", metric="gpu_spend_usd", target=1,
                                          deadline=date(2024, 1, 1), period_start=date(2024, 1, 2)), None,
                 "after the deadline", id="claim-period-after-deadline"),
])
def test_a_payload_that_contradicts_itself_is_refused(payload, field, says):
    with pytest.raises(ValueError, match=says):
        payload()


def test_a_role_is_held_once():
    state = two_party_fleet().add(ev.PersonRegistered(person="p", name="P")) \
        .add(ev.RoleAssigned(person="p", entity="a", role="director")).state()
    for again in (ev.RoleAssigned(person="p", entity="a", role="director"),
                  ev.RoleAssigned(person="p", entity="a", role="director", family_of="p")):
        with pytest.raises(InvariantViolation, match="already holds the role director in 'a'"):
            state.apply(again, date(2024, 2, 1))
    state.apply(ev.RoleAssigned(person="p", entity="b", role="director"), date(2024, 2, 1))  # another entity
