"""The only module that imports highspy: solve a :class:`LinearModel` or raise a typed error."""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import highspy
import numpy as np

from gpufleet.errors import InputError, PlanInfeasible, PlanNotOptimal, PlanUnbounded
from gpufleet.planner.model import LinearModel


METHODS = ("choose", "simplex", "ipm", "pdlp")  # HiGHS' "solver" option for LPs
MAX_TIME_LIMIT_S = 1e6  # 11.6 days


@dataclass(frozen=True)
class SolveOptions:
    method: str = "choose"  # one of METHODS; HiGHS picks dual simplex for these LPs (bench/planner.py)
    crossover: bool = True
    time_limit_s: float = 600.0  # more than 0, at most MAX_TIME_LIMIT_S
    mip_rel_gap: float = 1e-4
    threads: int = 0  # 0: HiGHS decides
    log: bool = False

    def __post_init__(self):
        # HiGHS answers an unknown method or a time limit of -1 with an error status and goes on with its defaults
        if self.method not in METHODS:
            raise InputError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}", field="method")
        if not 0.0 < self.time_limit_s <= MAX_TIME_LIMIT_S:
            raise InputError(f"must be a finite number of seconds above 0 and at most {MAX_TIME_LIMIT_S:,.0f}, "
                             f"got {self.time_limit_s}", field="time_limit_s")
        if not 0.0 <= self.mip_rel_gap <= 1.0:
            raise InputError(f"must be from 0 to 1, got {self.mip_rel_gap}", field="mip_rel_gap")
        if self.threads < 0:
            raise InputError(f"must be at least 0, got {self.threads}", field="threads")


@dataclass(frozen=True)
class Solution:
    x: np.ndarray
    row_duals: np.ndarray  # d(min objective) / d(row bound)
    objective: float  # of the min problem
    status: str
    solve_s: float
    mip_gap: float | None
    duals_valid: bool = True


def solve(model: LinearModel, options: SolveOptions = SolveOptions(), start: np.ndarray | None = None) -> Solution:
    """Solve ``model``; ``start``, a point known to satisfy it, seeds a MILP's incumbent."""
    if model.A.shape[1] == 0:  # nothing to decide: the empty plan is optimal
        return Solution(np.zeros(0), np.zeros(model.A.shape[0]), model.objective_offset, "Optimal", 0.0, None)
    with _solver_output(options.log):
        h = highspy.Highs()
    h.setOptionValue("output_flag", options.log)
    h.setOptionValue("time_limit", float(options.time_limit_s))
    if options.threads:
        # HiGHS fixes its thread pool on the first solve of a process; a new count needs a fresh pool
        highspy.Highs.resetGlobalScheduler(True)
        h.setOptionValue("threads", int(options.threads))
    is_mip = bool(model.integer.any())
    if not is_mip:
        h.setOptionValue("solver", options.method)
        h.setOptionValue("run_crossover", "on" if options.crossover else "off")
    else:
        h.setOptionValue("mip_rel_gap", float(options.mip_rel_gap))
    h.passModel(_lp(model))
    if is_mip and start is not None:
        seed = highspy.HighsSolution()
        seed.col_value = np.asarray(start, dtype=float)
        seed.value_valid = True
        h.setSolution(seed)
    started = time.perf_counter()
    with _solver_output(options.log):
        run_status = h.run()
    elapsed = time.perf_counter() - started
    status = h.getModelStatus()
    info = h.getInfo()
    if status == highspy.HighsModelStatus.kUnknown and not options.crossover and not is_mip \
            and info.primal_solution_status == 2 and info.max_primal_infeasibility <= 1e-6:
        sol = h.getSolution()  # IPM without crossover: a feasible point, duals only approximate
        return Solution(np.asarray(sol.col_value), np.zeros(model.A.shape[0]), float(info.objective_function_value),
                        "Optimal (interior point, no crossover)", elapsed, None, duals_valid=False)
    if run_status == highspy.HighsStatus.kError and status == highspy.HighsModelStatus.kNotset:
        raise PlanNotOptimal("HiGHS refused to run (see its log with log=True); no plan is returned")
    if status == highspy.HighsModelStatus.kInfeasible:
        raise PlanInfeasible(_infeasible_families(h, model))
    if status in (highspy.HighsModelStatus.kUnbounded, highspy.HighsModelStatus.kUnboundedOrInfeasible):
        raise PlanUnbounded("the plan's objective is unbounded: a value or cost is missing a limit")
    if status != highspy.HighsModelStatus.kOptimal:
        raise PlanNotOptimal(f"HiGHS stopped with status '{h.modelStatusToString(status)}' after {elapsed:.1f} s; "
                             "no plan is returned (raise the time limit or use --method ipm)")
    sol = h.getSolution()
    gap = float(info.mip_gap) if is_mip else None
    duals = np.asarray(sol.row_dual) if sol.dual_valid else np.zeros(model.A.shape[0])
    return Solution(np.asarray(sol.col_value), duals, float(info.objective_function_value),
                    h.modelStatusToString(status), elapsed, gap)


_STDOUT_LOCK = threading.Lock()
try:  # C's stdio, to flush what HiGHS buffered before descriptor 1 is restored
    _c_fflush = ctypes.CDLL(None).fflush
except (OSError, TypeError, AttributeError):  # no C library reachable this way (Windows): nothing to flush
    def _c_fflush(_stream) -> int:
        return 0


@contextmanager
def _solver_output(log: bool) -> Iterator[None]:
    """Keep what HiGHS's C++ core writes on file descriptor 1 off the user's standard output.

    HiGHS prints a banner when the first ``Highs()`` of a process is created (1.16: before any
    option can be set) and its log while it runs. Standard output is the user's data (``--format
    json``), so for the duration of the block descriptor 1 points at standard error when ``log``
    is asked for, else at the null device. C's stdio buffer is flushed before descriptor 1 is
    restored so that nothing written inside leaks out later. Descriptor 1 is process-wide: the
    lock keeps two solves in threads from restoring each other's descriptor.
    """
    with _STDOUT_LOCK:
        sys.stdout.flush()
        _c_fflush(None)
        saved = os.dup(1)
        target = os.dup(2) if log else os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(target, 1)
            yield
        finally:
            _c_fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
            os.close(target)


def _lp(model: LinearModel) -> highspy.HighsLp:
    lp = highspy.HighsLp()
    A = model.A.tocsc()
    lp.num_col_, lp.num_row_ = A.shape[1], A.shape[0]
    lp.col_cost_ = model.c
    lp.col_lower_, lp.col_upper_ = model.col_lo, model.col_hi
    lp.row_lower_, lp.row_upper_ = model.row_lo, model.row_hi
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = A.indptr
    lp.a_matrix_.index_ = A.indices
    lp.a_matrix_.value_ = A.data
    lp.offset_ = model.objective_offset
    if model.integer.any():
        lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
                           for i in model.integer]
    return lp


def _infeasible_families(h: highspy.Highs, model: LinearModel) -> str:
    """Name the constraint families in HiGHS's irreducible infeasible subset, where it finds one."""
    try:
        status, iis = h.getIis()
        rows = list(iis.row_index_)
    except Exception:  # noqa: BLE001 - an IIS is a diagnosis, not a requirement
        rows = []
    names = sorted({name for name, (a, b) in model.families.items() for r in rows if a <= r < b})
    if names:
        return "the plan is infeasible; the conflict involves: " + ", ".join(names)
    return "the plan is infeasible (HiGHS found no smaller conflicting set); check " + ", ".join(model.families)


class Resolver:
    """A model passed to HiGHS once, then re-solved after changing only its bounds (``changeRowsBounds``,
    ``changeColsBounds``): no rebuild, no new ``passModel``, for the many samples of a sweep.

    Every :meth:`solve` restarts dual simplex from the basis of the first solve, not the previous
    sample's: a sample's answer then depends on its bounds alone, whatever ran before it in the same
    process (a sweep's results are the same on any number of workers). LPs only.
    """

    def __init__(self, model: LinearModel, options: SolveOptions = SolveOptions()):
        if model.integer.any():
            raise InputError("a sweep re-solves LPs only; leave out --integral", field="integral")
        with _solver_output(False):
            self.h = highspy.Highs()
        self.h.setOptionValue("output_flag", False)
        self.h.setOptionValue("time_limit", float(options.time_limit_s))
        self.h.setOptionValue("solver", options.method)
        self.h.passModel(_lp(model))
        self.model = model
        self.rows = np.arange(model.A.shape[0], dtype=np.int32)
        self.cols = np.arange(model.A.shape[1], dtype=np.int32)
        self.first = self._run()
        self.basis = self.h.getBasis()

    def solve(self, row_lo: np.ndarray, row_hi: np.ndarray, col_lo: np.ndarray, col_hi: np.ndarray) -> Solution:
        """The optimum with these bounds (same lengths as the model's); typed errors as :func:`solve`."""
        self.h.changeRowsBounds(len(self.rows), self.rows, np.asarray(row_lo, float), np.asarray(row_hi, float))
        self.h.changeColsBounds(len(self.cols), self.cols, np.asarray(col_lo, float), np.asarray(col_hi, float))
        self.h.clearSolver()  # no edge weights, factorization or solution from the previous sample
        self.h.setBasis(self.basis)
        return self._run()

    def _run(self) -> Solution:
        started = time.perf_counter()
        with _solver_output(False):
            self.h.run()
        elapsed = time.perf_counter() - started
        status = self.h.getModelStatus()
        if status == highspy.HighsModelStatus.kInfeasible:
            raise PlanInfeasible(_infeasible_families(self.h, self.model))
        if status != highspy.HighsModelStatus.kOptimal:
            raise PlanNotOptimal(f"HiGHS stopped with status '{self.h.modelStatusToString(status)}'")
        sol = self.h.getSolution()
        info = self.h.getInfo()
        duals = np.asarray(sol.row_dual) if sol.dual_valid else np.zeros(len(self.rows))
        return Solution(np.asarray(sol.col_value), duals, float(info.objective_function_value), "Optimal", elapsed,
                        None)
