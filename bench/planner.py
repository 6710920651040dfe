"""Planner benchmark: build and solve the planning LP on seeded synthetic fleets.

Run from the repository root, in the project's virtual environment::

    python bench/planner.py                                 # small, medium, large; PuLP+CBC on medium
    python bench/planner.py --sizes small,medium --skip-pulp
    python bench/planner.py --method ipm                    # interior point instead of HiGHS's choice
    python bench/planner.py --sweep                         # also: HiGHS options on the medium size

Every measurement runs in a fresh subprocess, so "peak RSS" is that process's own maximum
resident set (``ru_maxrss``; for PuLP the CBC child's peak is shown beside it). The fleets
come from :mod:`gpufleet.planner.generate` (no database: the planner only). Pipelines:

* ``monolithic``: the policy's model(s) for the whole fleet, as ``gpufleet plan`` builds them;
* ``by groups``: :func:`gpufleet.planner.decompose.solve_by_groups`, one LP per independent
  lending group (exact: the objectives must agree with ``monolithic`` within 1e-6 relative,
  which is checked on every size where both run);
* ``PuLP+CBC`` (medium): the same ``LinearModel`` (the max-value model) rebuilt row by row as a
  ``pulp.LpProblem`` from its CSR matrix and solved by PuLP's bundled CBC, with a time limit.
  CBC's point is checked for feasibility (PuLP may report "Optimal" for a time-limited LP).

On ``large`` the monolithic LP (628k columns, 305k rows) is attempted with a time limit
(``--mono-large-limit``, default 120 s, the goal) and the tail of the HiGHS log is printed.

Goals printed at the end: build time < 10% of solve time; medium >= 10x faster end to end than
PuLP+CBC; large optimal in < 2 minutes on 2 cores with peak memory < 8 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

RESULT = "RESULT "


# -- worker side (one measurement per process) ------------------------------------------


def _rss_mb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # KiB on Linux


def _solve_options(spec: dict):
    from gpufleet.planner.solver import SolveOptions

    return SolveOptions(method=spec["method"], crossover=spec["crossover"], threads=spec["threads"],
                        time_limit_s=spec["time_limit"], log=spec.get("log", False))


def _problem(spec: dict):
    from gpufleet.planner.generate import generate_problem

    started = time.perf_counter()
    problem = generate_problem(spec["size"], spec["seed"])
    return problem, time.perf_counter() - started


def worker_monolithic(spec: dict) -> dict:
    from gpufleet.errors import GpufleetError
    from gpufleet.planner.model import build
    from gpufleet.planner.policies import get_policy

    problem, prep = _problem(spec)
    options = _solve_options(spec)
    started = time.perf_counter()
    try:
        decision = get_policy(spec["policy"]).decide(problem, options, None)
    except GpufleetError as exc:  # e.g. PlanNotOptimal at the time limit
        wall = time.perf_counter() - started
        t = time.perf_counter()
        model = build(problem)
        return {"status": f"not optimal: {type(exc).__name__}", "detail": str(exc), "rows": model.A.shape[0],
                "columns": model.A.shape[1], "nonzeros": int(model.A.nnz), "parts": 1, "prep_s": prep,
                "build_s": time.perf_counter() - t, "solve_s": wall, "e2e_s": wall, "objective": None,
                "rss_mb": _rss_mb()}
    wall = time.perf_counter() - started
    model = decision.model
    return {"status": decision.solution.status, "rows": model.A.shape[0], "columns": model.A.shape[1],
            "nonzeros": int(model.A.nnz), "parts": 1, "prep_s": prep, "build_s": decision.build_s,
            "solve_s": decision.solve_s, "e2e_s": wall, "objective": decision.solution.objective,
            "stages": decision.stages, "rss_mb": _rss_mb()}


def worker_split(spec: dict) -> dict:
    from gpufleet.planner.decompose import solve_by_groups

    problem, prep = _problem(spec)
    started = time.perf_counter()
    result = solve_by_groups(problem, spec["policy"], _solve_options(spec))
    wall = time.perf_counter() - started
    sizes = sorted(((len(p.entities), len(p.sites)) for p in result.parts), reverse=True)
    return {"status": "Optimal", "rows": result.rows, "columns": result.columns, "nonzeros": result.nonzeros,
            "parts": len(result.parts), "largest_part": sizes[0] if sizes else None, "prep_s": prep,
            "build_s": result.build_s, "solve_s": result.solve_s, "split_s": result.split_s, "e2e_s": wall,
            "objective": result.objective, "max_part_solve_s": max(d.solve_s for d in result.decisions),
            "rss_mb": _rss_mb()}


def pulp_problem(model):
    """The LinearModel as a PuLP problem: one variable per column, one constraint per finite row side."""
    import numpy as np
    import pulp

    prob = pulp.LpProblem("planner", pulp.LpMinimize)
    lo, hi = model.col_lo, model.col_hi
    x = [pulp.LpVariable(f"x{j}", lowBound=float(lo[j]) if np.isfinite(lo[j]) else None,
                         upBound=float(hi[j]) if np.isfinite(hi[j]) else None) for j in range(model.A.shape[1])]
    prob += pulp.LpAffineExpression([(x[j], float(model.c[j])) for j in np.flatnonzero(model.c)],
                                    constant=float(model.objective_offset))
    A = model.A.tocsr()
    for i in range(A.shape[0]):
        a, b = A.indptr[i], A.indptr[i + 1]
        expr = pulp.LpAffineExpression([(x[j], float(v)) for j, v in zip(A.indices[a:b].tolist(), A.data[a:b].tolist(),
                                                                          strict=True)])
        rlo, rhi = model.row_lo[i], model.row_hi[i]
        if rlo == rhi:
            prob += pulp.LpConstraint(expr, pulp.LpConstraintEQ, f"r{i}", float(rlo))
            continue
        if np.isfinite(rlo):
            prob += pulp.LpConstraint(expr, pulp.LpConstraintGE, f"r{i}", float(rlo))
        if np.isfinite(rhi):
            prob += pulp.LpConstraint(expr, pulp.LpConstraintLE, f"u{i}", float(rhi))
    return prob, x


def max_violation(model, x) -> tuple[float, float]:
    """(absolute, relative) worst violation of a row or column bound.

    Relative is over ``max(1, |bound|, sum_j |a_ij x_j|)``: CBC's solution file has about eight
    significant digits, so a row of terms near 1e5 is off by ~1e-3 GPUs even at an exact optimum.
    """
    import numpy as np

    act = model.A @ x
    mag = abs(model.A) @ np.abs(x)
    worst_abs = worst_rel = 0.0
    for value, lo, hi, size in ((act, model.row_lo, model.row_hi, mag), (x, model.col_lo, model.col_hi, np.abs(x))):
        for gap, bound in ((lo - value, lo), (value - hi, hi)):
            gap = np.nan_to_num(np.maximum(gap, 0.0), posinf=0.0)
            scale = np.maximum.reduce([np.ones_like(size), np.abs(np.nan_to_num(bound, posinf=0.0, neginf=0.0)),
                                       size])
            worst_abs = max(worst_abs, float(gap.max(initial=0.0)))
            worst_rel = max(worst_rel, float((gap / scale).max(initial=0.0)))
    return worst_abs, worst_rel


def worker_pulp(spec: dict) -> dict:
    """PuLP+CBC against HiGHS on the same max-value LinearModel, end to end (build + solve)."""
    import numpy as np
    import pulp

    from gpufleet.planner.model import build
    from gpufleet.planner.solver import solve

    problem, prep = _problem(spec)
    t = time.perf_counter()
    model = build(problem)
    model_s = time.perf_counter() - t
    t = time.perf_counter()
    prob, x = pulp_problem(model)
    pulp_build_s = time.perf_counter() - t
    rss_after_build = _rss_mb()
    t = time.perf_counter()
    code = prob.solve(pulp.PULP_CBC_CMD(msg=False, timeLimit=spec["cbc_time_limit"]))
    cbc_s = time.perf_counter() - t
    values = np.array([np.nan if v.varValue is None else v.varValue for v in x])
    missing = int(np.isnan(values).sum())
    values = np.nan_to_num(values)
    viol_abs, viol_rel = max_violation(model, values)
    cbc_obj = float(model.c @ values + model.objective_offset)
    out = {"pulp_status": pulp.LpStatus[code], "pulp_sol_status": pulp.LpSolution.get(prob.sol_status, "?"),
           "model_s": model_s, "pulp_build_s": pulp_build_s, "cbc_s": cbc_s, "cbc_objective": cbc_obj,
           "cbc_missing_values": missing, "cbc_violation_abs": viol_abs, "cbc_violation_rel": viol_rel,
           "cbc_time_limit": spec["cbc_time_limit"], "prep_s": prep, "rows": model.A.shape[0],
           "columns": model.A.shape[1], "nonzeros": int(model.A.nnz), "rss_mb_after_pulp_build": rss_after_build,
           "cbc_rss_mb": _rss_mb(resource.RUSAGE_CHILDREN)}
    t = time.perf_counter()
    sol = solve(model, _solve_options(spec))
    out |= {"highs_s": time.perf_counter() - t, "highs_objective": sol.objective, "highs_status": sol.status,
            "highs_violation": max_violation(model, sol.x), "rss_mb": _rss_mb()}
    return out


def worker_sweep(spec: dict) -> dict:
    """HiGHS options on one model, via highspy directly (so a status the planner refuses still shows)."""
    import highspy

    from gpufleet.planner.model import build
    from gpufleet.planner.solver import _lp

    problem, _ = _problem(spec)
    model = build(problem)
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", spec["threads"])
    h.setOptionValue("time_limit", float(spec["time_limit"]))
    for k, v in spec["highs"].items():
        h.setOptionValue(k, v)
    h.passModel(_lp(model))
    t = time.perf_counter()
    h.run()
    wall = time.perf_counter() - t
    info = h.getInfo()
    return {"status": h.modelStatusToString(h.getModelStatus()), "solve_s": wall,
            "objective": float(info.objective_function_value), "ipm_iterations": int(info.ipm_iteration_count),
            "crossover_iterations": int(info.crossover_iteration_count),
            "simplex_iterations": int(info.simplex_iteration_count),
            "max_primal_infeasibility": float(info.max_primal_infeasibility),
            "max_dual_infeasibility": float(info.max_dual_infeasibility), "rss_mb": _rss_mb()}


WORKERS = {"monolithic": worker_monolithic, "split": worker_split, "pulp": worker_pulp, "sweep": worker_sweep}


# -- driver side ----------------------------------------------------------------------------


def run_worker(spec: dict, timeout: float) -> tuple[dict, str]:
    """Run one measurement in a fresh interpreter; return its result and its output (HiGHS log)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode(errors="replace")
        return {"status": f"killed after {timeout:.0f} s", "error": True}, out
    output = proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        return {"status": f"worker failed (exit {proc.returncode})", "error": True}, output
    result = json.loads(lines[-1][len(RESULT):])
    result["process_s"] = time.perf_counter() - started
    return result, output


def fmt_s(x) -> str:
    return "-" if x is None else (f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}")


def fmt_n(x) -> str:
    return "-" if x is None else f"{x:,}"


def rel(a, b) -> float | None:
    if a is None or b is None:
        return None
    return abs(a - b) / max(1.0, abs(a), abs(b))


def log_tail(output: str, lines: int = 18) -> str:
    kept = [ln for ln in output.splitlines() if ln.strip() and not ln.startswith(RESULT)]
    return "\n".join(kept[-lines:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="small,medium,large")
    ap.add_argument("--policy", default="max-value")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", default=None, choices=["ipm", "simplex", "choose", "pdlp"],
                    help="HiGHS LP method (default: the planner's SolveOptions default)")
    ap.add_argument("--no-crossover", action="store_true", help="IPM without crossover (see the report)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time-limit", type=float, default=600.0, help="HiGHS limit per solve, s")
    ap.add_argument("--skip-pulp", action="store_true")
    ap.add_argument("--cbc-time-limit", type=int, default=600)
    ap.add_argument("--mono-large-limit", type=float, default=120.0,
                    help="time limit of the monolithic attempt on large; 0 skips it")
    ap.add_argument("--sweep", action="store_true", help="also time HiGHS options on the medium size")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.method is None:
        from gpufleet.planner.solver import SolveOptions

        args.method = SolveOptions().method

    if args.worker:
        spec = json.loads(args.worker)
        result = WORKERS[spec["kind"]](spec)
        print(RESULT + json.dumps(result), flush=True)
        return 0

    from rich.console import Console
    from rich.table import Table

    from gpufleet.planner.generate import SIZES

    console = Console(width=None if sys.stdout.isatty() else 200)
    wall_started = time.perf_counter()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for s in sizes:
        if s not in SIZES:
            ap.error(f"unknown size '{s}' (known: {', '.join(SIZES)})")
    load0 = os.getloadavg()
    console.print(f"[bold]gpufleet planner benchmark[/]  python {platform.python_version()}  "
                  f"cpus={os.cpu_count()}  threads={args.threads}  method={args.method}"
                  f"{' (no crossover)' if args.no_crossover else ''}  policy={args.policy}  seed={args.seed}  "
                  f"load average at start {load0[0]:.2f}")
    base = {"seed": args.seed, "policy": args.policy, "method": args.method, "crossover": not args.no_crossover,
            "threads": args.threads, "time_limit": args.time_limit}
    rows: list[tuple[str, str, dict]] = []
    logs: list[tuple[str, str]] = []
    pulp_result = None
    for size in sizes:
        plans = ["monolithic", "split"] if size != "large" else ["split"]
        if size == "large" and args.mono_large_limit > 0:
            plans.append("monolithic-limited")
        for plan in plans:
            spec = base | {"size": size, "kind": "split" if plan == "split" else "monolithic"}
            timeout = args.time_limit * 4 + 120
            if plan == "monolithic-limited":
                spec |= {"time_limit": args.mono_large_limit, "log": True}
                timeout = args.mono_large_limit + 180
            console.print(f"  {size:<7} {plan} ...", end="")
            result, output = run_worker(spec, timeout)
            console.print(f" {fmt_s(result.get('process_s'))} s  {result.get('status')}")
            rows.append((size, plan, result))
            if plan == "monolithic-limited" or result.get("error"):
                logs.append((f"{size} {plan}", log_tail(output)))
        if size == "medium" and not args.skip_pulp:
            spec = base | {"size": size, "kind": "pulp", "cbc_time_limit": args.cbc_time_limit}
            console.print(f"  {size:<7} PuLP+CBC (limit {args.cbc_time_limit} s) and HiGHS on the same model ...",
                          end="")
            pulp_result, output = run_worker(spec, args.cbc_time_limit * 2 + 300)
            console.print(f" {fmt_s(pulp_result.get('process_s'))} s  {pulp_result.get('pulp_status', '')}")
            if pulp_result.get("error"):
                logs.append(("medium PuLP", log_tail(output)))

    # -- the main table --------------------------------------------------------------------
    table = Table(title=f"Planner LP: build and solve ({args.policy}, HiGHS {args.method}"
                        f"{', no crossover' if args.no_crossover else ''}, {args.threads} threads)")
    for col, just in [("size", "left"), ("pipeline", "left"), ("rows", "right"), ("columns", "right"),
                      ("non-zeros", "right"), ("parts", "right"), ("prep s", "right"), ("build s", "right"),
                      ("solve s", "right"), ("build/solve", "right"), ("end-to-end s", "right"),
                      ("peak RSS MB", "right"), ("objective (min)", "right"), ("status", "left")]:
        table.add_column(col, justify=just)
    by_key = {(s, p): r for s, p, r in rows}
    for size, plan, r in rows:
        ratio = (r["build_s"] / r["solve_s"]) if r.get("solve_s") else None
        status = r.get("status", "?")
        ref = by_key.get((size, "monolithic")) or by_key.get((size, "monolithic-limited"))
        if plan == "split" and ref and ref.get("objective") is not None:
            d = rel(r.get("objective"), ref.get("objective"))
            status += f"; = monolithic (rel {d:.1e})" if d is not None and d <= 1e-6 else \
                f"; DIFFERS from monolithic (rel {d})"
        table.add_row(size, {"split": "by groups"}.get(plan, plan), fmt_n(r.get("rows")), fmt_n(r.get("columns")),
                      fmt_n(r.get("nonzeros")), fmt_n(r.get("parts")), fmt_s(r.get("prep_s")),
                      fmt_s(r.get("build_s")), fmt_s(r.get("solve_s")),
                      "-" if ratio is None else f"{100 * ratio:.1f}%", fmt_s(r.get("e2e_s")),
                      "-" if r.get("rss_mb") is None else f"{r['rss_mb']:.0f}",
                      "-" if r.get("objective") is None else f"{r['objective']:.6e}", status)
    if pulp_result and not pulp_result.get("error"):
        p = pulp_result
        e2e = p["model_s"] + p["pulp_build_s"] + p["cbc_s"]
        table.add_row("medium", "PuLP+CBC", fmt_n(p["rows"]), fmt_n(p["columns"]), fmt_n(p["nonzeros"]), "1",
                      fmt_s(p["prep_s"]), fmt_s(p["model_s"] + p["pulp_build_s"]), fmt_s(p["cbc_s"]),
                      f"{100 * (p['model_s'] + p['pulp_build_s']) / p['cbc_s']:.1f}%", fmt_s(e2e),
                      f"{p['rss_mb_after_pulp_build']:.0f} (+CBC {p['cbc_rss_mb']:.0f})",
                      f"{p['cbc_objective']:.6e}", f"PuLP '{p['pulp_status']}'")
    console.print(table)

    # -- PuLP details ----------------------------------------------------------------------
    goals = []
    if pulp_result and not pulp_result.get("error"):
        p = pulp_result
        pulp_e2e = p["model_s"] + p["pulp_build_s"] + p["cbc_s"]
        highs_e2e = p["model_s"] + p["highs_s"]
        timed_out = p["cbc_s"] >= 0.97 * p["cbc_time_limit"] or p["pulp_status"] != "Optimal"
        feasible = p["cbc_missing_values"] == 0 and p["cbc_violation_rel"] <= 1e-6
        d = rel(p["cbc_objective"], p["highs_objective"])
        console.print(
            f"PuLP+CBC on the medium max-value model: PuLP status '{p['pulp_status']}' "
            f"(solution: {p['pulp_sol_status']}), {p['pulp_build_s']:.2f} s to build the PuLP model, "
            f"{p['cbc_s']:.2f} s in CBC (limit {p['cbc_time_limit']} s).\n"
            f"  CBC point: {p['cbc_missing_values']} missing values, worst violation {p['cbc_violation_abs']:.2e} "
            f"absolute / {p['cbc_violation_rel']:.2e} relative -> {'feasible' if feasible else 'NOT feasible'}.\n"
            f"  objective: CBC {p['cbc_objective']:.10e}  HiGHS {p['highs_objective']:.10e}  (rel diff {d:.1e}: "
            f"{'match' if d is not None and d <= 1e-6 else 'MISMATCH'} at 1e-6)\n"
            f"  end to end (LinearModel build + modelling layer + solve): PuLP+CBC {pulp_e2e:.2f} s, "
            f"HiGHS on the same model {highs_e2e:.2f} s (build {p['model_s']:.3f} + solve {p['highs_s']:.2f})")
        trusted = not timed_out and feasible and d is not None and d <= 1e-6
        same = pulp_e2e / highs_e2e
        label = f"> {same:.1f}x (CBC timed out)" if timed_out else \
            f"{same:.1f}x" if trusted else f"{same:.1f}x (CBC's point not verified)"
        goals.append(("medium: >= 10x faster end to end than PuLP+CBC (same monolithic model)", label,
                      (same >= 10) if trusted else (True if same >= 10 else None)))
        split = by_key.get(("medium", "split"))
        if split and split.get("e2e_s"):
            best = pulp_e2e / split["e2e_s"]
            goals.append(("medium: same, gpufleet by groups vs PuLP+CBC monolithic",
                          (">" if timed_out else "") + f" {best:.1f}x", best >= 10))
    for size, plan, r in rows:
        if r.get("solve_s") and plan != "monolithic-limited":
            ratio = r["build_s"] / r["solve_s"]
            goals.append((f"{size} {plan}: build < 10% of solve", f"{100 * ratio:.2f}%", ratio < 0.10))
    large = by_key.get(("large", "split"))
    if large and not large.get("error"):
        ok = large["status"] == "Optimal" and large["e2e_s"] < 120 and large["rss_mb"] < 8192
        goals.append(("large: optimal in < 120 s on 2 cores, peak < 8 GiB",
                      f"{large['status']}, {large['e2e_s']:.1f} s (+{large['prep_s']:.1f} s to make the problem), "
                      f"{large['rss_mb']:.0f} MB", ok))
    mono_large = by_key.get(("large", "monolithic-limited"))
    if mono_large:
        goals.append((f"large monolithic within {args.mono_large_limit:.0f} s", mono_large.get("status", "?"),
                      mono_large.get("status") == "Optimal"))
    gt = Table(title="Goals")
    gt.add_column("goal")
    gt.add_column("measured", justify="right")
    gt.add_column("met")
    for goal, measured, met in goals:
        gt.add_row(goal, measured, "?" if met is None else ("yes" if met else "NO"))
    console.print(gt)

    if args.sweep and "medium" in sizes:
        st = Table(title="HiGHS options on the medium monolithic max-value LP (highspy directly)")
        for col in ("options", "solve s", "status", "objective", "iterations (ipm/crossover/simplex)",
                    "max primal/dual infeasibility"):
            st.add_column(col)
        for name, opts in [("ipm + crossover", {"solver": "ipm", "run_crossover": "on"}),
                           ("ipm, no crossover", {"solver": "ipm", "run_crossover": "off"}),
                           ("ipm, no crossover, no presolve", {"solver": "ipm", "run_crossover": "off",
                                                               "presolve": "off"}),
                           ("dual simplex (serial)", {"solver": "simplex"}),
                           ("choose", {"solver": "choose"})]:
            spec = base | {"size": "medium", "kind": "sweep", "highs": opts}
            r, _ = run_worker(spec, args.time_limit + 120)
            if r.get("error"):
                st.add_row(name, "-", r["status"], "-", "-", "-")
                continue
            st.add_row(name, fmt_s(r["solve_s"]), r["status"], f"{r['objective']:.10e}",
                       f"{r['ipm_iterations']}/{r['crossover_iterations']}/{r['simplex_iterations']}",
                       f"{r['max_primal_infeasibility']:.1e} / {r['max_dual_infeasibility']:.1e}")
        console.print(st)

    for title, text in logs:
        console.print(f"[bold]{title}: tail of the HiGHS log[/]")
        console.print(text, markup=False, highlight=False)
    load1 = os.getloadavg()
    console.print(f"total wall time {time.perf_counter() - wall_started:.1f} s; load average at the end "
                  f"{load1[0]:.2f} (other processes on this machine share its {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
