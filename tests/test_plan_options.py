"""The planner's options are finite and within documented bounds (docs/planning-model.md): a cost of
``inf``, a failure rate of ``nan``, ``--method magic`` or ``--time-limit -1`` is refused before any
work, naming the option, and never reaches HiGHS or the JSON plan."""

from __future__ import annotations

import math

import pytest

from cli_runner import invoke, refused
from gpufleet.cli.app import MAX_TIME_LIMIT_S, Method
from gpufleet.errors import InputError
from gpufleet.planner import solver
from gpufleet.planner.problem import MAX_COST_USD, MAX_FEE_USD_PER_GPU_HOUR, PlanOptions
from gpufleet.planner.solver import SolveOptions


@pytest.mark.parametrize(("args", "option"), [
    pytest.param(["--move-cost", "inf"], "--move-cost", id="move-cost-inf"),
    pytest.param(["--move-cost", "-1"], "--move-cost", id="move-cost-negative"),
    pytest.param(["--move-cost", "1e8"], "--move-cost", id="move-cost-past-bound"),
    pytest.param(["--reclaim-cost", "nan"], "--reclaim-cost", id="reclaim-cost-nan"),
    pytest.param(["--reclaim-cost", "-inf"], "--reclaim-cost", id="reclaim-cost-minus-inf"),
    pytest.param(["--fee", "inf"], "--fee", id="fee-inf"),
    pytest.param(["--fee", "nan"], "--fee", id="fee-nan"),
    pytest.param(["--fee", "20000"], "--fee", id="fee-past-bound"),
    pytest.param(["--failure-rate", "nan"], "--failure-rate", id="failure-rate-nan"),
    pytest.param(["--failure-rate", "1"], "--failure-rate", id="failure-rate-1"),
    pytest.param(["--failure-rate", "-0.1"], "--failure-rate", id="failure-rate-negative"),
    pytest.param(["--method", "magic"], "--method", id="method-magic"),
    pytest.param(["--time-limit", "-1"], "--time-limit", id="time-limit-negative"),
    pytest.param(["--time-limit", "0"], "--time-limit", id="time-limit-0"),
    pytest.param(["--time-limit", "inf"], "--time-limit", id="time-limit-inf"),
    pytest.param(["--time-limit", "nan"], "--time-limit", id="time-limit-nan"),
    pytest.param(["--horizon", "0"], "--horizon", id="horizon-0"),
    pytest.param(["--horizon", "521"], "--horizon", id="horizon-past-bound"),
    pytest.param(["--lead-weeks", "-1"], "--lead-weeks", id="lead-weeks-negative"),
    pytest.param(["--lead-weeks", "105"], "--lead-weeks", id="lead-weeks-past-bound"),
])
def test_plan_refuses_an_option_past_its_bounds(tmp_path, args, option):
    out = tmp_path / "plan.json"
    result = invoke("plan", "--scenario", tmp_path / "never-read.yaml", *args, "--out", out, "--format", "json",
                    db=tmp_path / "never-opened.db")
    refused(result, 2, option, "Usage:")
    assert not out.exists() and not (tmp_path / "never-opened.db").exists()


def test_the_method_choices_say_which_are_valid():
    result = invoke("plan", "--method", "magic")
    refused(result, 2, "magic", *solver.METHODS)


def test_the_command_line_and_the_solver_agree_on_the_bounds():
    assert tuple(m.value for m in Method) == solver.METHODS
    assert MAX_TIME_LIMIT_S == solver.MAX_TIME_LIMIT_S


@pytest.mark.parametrize(("options", "field"), [
    pytest.param({"move_cost_usd": math.inf}, "move_cost_usd", id="move-cost-inf"),
    pytest.param({"move_cost_usd": MAX_COST_USD * 2}, "move_cost_usd", id="move-cost-past-bound"),
    pytest.param({"reclaim_cost_usd": math.nan}, "reclaim_cost_usd", id="reclaim-cost-nan"),
    pytest.param({"loan_fee_usd_per_gpu_hour": math.inf}, "loan_fee_usd_per_gpu_hour", id="fee-inf"),
    pytest.param({"loan_fee_usd_per_gpu_hour": MAX_FEE_USD_PER_GPU_HOUR + 1}, "loan_fee_usd_per_gpu_hour",
                 id="fee-past-bound"),
    pytest.param({"failure_rate_per_gpu_week": math.nan}, "failure_rate_per_gpu_week", id="failure-rate-nan"),
])
def test_plan_options_refuse_non_finite_and_huge_costs(options, field):
    with pytest.raises(InputError) as exc:
        PlanOptions(**options)
    assert exc.value.field == field


def test_plan_options_at_the_bounds_are_accepted():
    PlanOptions(move_cost_usd=MAX_COST_USD, reclaim_cost_usd=0.0, loan_fee_usd_per_gpu_hour=MAX_FEE_USD_PER_GPU_HOUR)


@pytest.mark.parametrize(("options", "field"), [
    pytest.param({"method": "magic"}, "method", id="method-magic"),
    pytest.param({"time_limit_s": -1}, "time_limit_s", id="time-limit-negative"),
    pytest.param({"time_limit_s": 0}, "time_limit_s", id="time-limit-0"),
    pytest.param({"time_limit_s": math.inf}, "time_limit_s", id="time-limit-inf"),
    pytest.param({"time_limit_s": math.nan}, "time_limit_s", id="time-limit-nan"),
    pytest.param({"mip_rel_gap": math.nan}, "mip_rel_gap", id="gap-nan"),
    pytest.param({"threads": -2}, "threads", id="threads-negative"),
])
def test_solve_options_refuse_what_highs_would_take_without_a_word(options, field):
    with pytest.raises(InputError) as exc:
        SolveOptions(**options)
    assert exc.value.field == field
