"""The planning LP, built as whole arrays: one function per constraint family.

Variables (all >= 0, per week t; the maths is in ``docs/planning-model.md``):

* ``inst[p,t]``  GPUs of cohort c(p) installed at site s(p)   (p: an allowed cohort-site pair)
* ``add[p,t]``, ``rem[p,t]``  GPUs installed / removed in week t
* ``serve[q,t]`` GPUs of pair p(q) serving entity u(q)          (q: permitted and accessible)
* ``sv[d,t]``    GPUs serving demand record d, at most its demand
* ``recl[l,t]``  GPUs taken back from loan pair l (cohort c(l) lent to u(l)) in week t
* ``ret[l,t]``   lent GPUs returned because the borrower's demand fell (no work lost)
* ``out[p,t]``   installed GPUs leaving site s(p) because they failed (expected failures)

No Python loop runs per variable: every family is a few numpy operations over index
arrays, assembled once into a CSR matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from gpufleet.planner.problem import PlanningProblem

TIE_BREAK_USD = 0.01  # per GPU-week: prefer own use to a loan, and no needless installs
# A lexicographic stage keeps an earlier stage's value v (GPUs or GPU-weeks) as ">= v - slack(v)",
# the slack 10x (LP) or 100x (MILP) the solver's feasibility tolerance (HiGHS: 1e-7 primal, 1e-6
# for a MIP), and growing with v: the earlier stage's own point satisfies its rows only within
# those tolerances, and a slack equal to the MIP tolerance made HiGHS's presolve call feasible
# models infeasible (owner-first --integral on the bundled example from 2023-12-01). The LP's
# smaller slack keeps what the optimizer can gain from it (slack x value) below a cent.
STAGE_SLACK = {False: (1e-6, 1e-9), True: (1e-4, 1e-7)}  # integral -> (absolute, relative)


def stage_slack(value: np.ndarray | float, integral: bool = False) -> np.ndarray:
    """How far below an earlier stage's value a later stage may go: ``abs + rel * |value|``."""
    absolute, relative = STAGE_SLACK[integral]
    return absolute + relative * np.abs(value)


@dataclass
class Layout:
    """Where each variable block sits in the column vector, and the index arrays behind it."""

    T: int
    pc: np.ndarray  # [P] cohort of each install pair
    ps: np.ndarray  # [P] site of each install pair
    qp: np.ndarray  # [Q] pair of each serve triple
    qu: np.ndarray  # [Q] user of each serve triple
    ql: np.ndarray  # [Q] loan pair of each triple, -1 for own use
    lc: np.ndarray  # [L] cohort of each loan pair
    lu: np.ndarray  # [L] borrower of each loan pair
    offsets: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    def cols(self, block: str, items: np.ndarray, t: np.ndarray) -> np.ndarray:
        return self.offsets[block] + np.asarray(items) * self.T + np.asarray(t)

    @property
    def n(self) -> int:
        return sum(self.sizes.values())


@dataclass
class LinearModel:
    """``min c @ x`` subject to ``row_lo <= A @ x <= row_hi`` and ``col_lo <= x <= col_hi``."""

    layout: Layout
    c: np.ndarray
    A: sp.csr_matrix
    row_lo: np.ndarray
    row_hi: np.ndarray
    col_lo: np.ndarray
    col_hi: np.ndarray
    integer: np.ndarray  # bool per column
    families: dict[str, tuple[int, int]]  # name -> [first row, last row + 1)
    objective_offset: float = 0.0


def layout_for(problem: PlanningProblem) -> Layout:
    owner = problem.cohort_owner
    reach = problem.permit.astype(int) @ problem.access.astype(int) > 0  # [E, S]: owner can use the site
    allowed = reach[owner] | (problem.installed0 > 0)  # [C, S]
    pc, ps = np.nonzero(allowed)
    pair_user = problem.permit[owner[pc]] & problem.access[:, ps].T  # [P, E]
    qp, qu = np.nonzero(pair_user)
    lent = qu != owner[pc[qp]]
    loan_keys = pc[qp] * len(problem.entities) + qu
    keys, inverse = np.unique(loan_keys[lent], return_inverse=True)
    ql = np.full(len(qp), -1)
    ql[lent] = inverse
    T = problem.weeks
    lay = Layout(T, pc, ps, qp, qu, ql, keys // len(problem.entities), keys % len(problem.entities))
    offset = 0
    for block, count in [("inst", len(pc)), ("add", len(pc)), ("rem", len(pc)), ("serve", len(qp)),
                         ("sv", len(problem.demand_ids)), ("recl", len(keys)), ("ret", len(keys)),
                         ("out", len(pc))]:
        lay.offsets[block], lay.sizes[block] = offset, count * T
        offset += count * T
    return lay


def _grid(n: int, T: int, t0: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """All (item, week) pairs for weeks t0..T-1, flattened item-major."""
    items, weeks = np.meshgrid(np.arange(n), np.arange(t0, T), indexing="ij")
    return items.ravel(), weeks.ravel()


class _Rows:
    """Collects constraint families as COO triplets with their bounds."""

    def __init__(self):
        self.r, self.c, self.v, self.lo, self.hi = [], [], [], [], []
        self.count = 0
        self.families: dict[str, tuple[int, int]] = {}

    def family(self, name: str, rows: np.ndarray, cols: np.ndarray, vals, n_rows: int, lo, hi) -> None:
        self.r.append(rows + self.count)
        self.c.append(cols)
        self.v.append(np.broadcast_to(np.asarray(vals, dtype=float), rows.shape))
        self.lo.append(np.broadcast_to(np.asarray(lo, dtype=float), (n_rows,)))
        self.hi.append(np.broadcast_to(np.asarray(hi, dtype=float), (n_rows,)))
        self.families[name] = (self.count, self.count + n_rows)
        self.count += n_rows


def define_install_chain(rows: _Rows, p: PlanningProblem, lay: Layout) -> None:
    """inst[p,t] - inst[p,t-1] - add[p,t] + rem[p,t] + out[p,t] = installed0[p] if t = 0 else 0."""
    P, T = len(lay.pc), lay.T
    i, t = _grid(P, T)
    r = i * T + t
    later = t > 0
    cols = [lay.cols("inst", i, t), lay.cols("inst", i[later], t[later] - 1), lay.cols("add", i, t),
            lay.cols("rem", i, t), lay.cols("out", i, t)]
    vals = [np.ones(len(r)), -np.ones(later.sum()), -np.ones(len(r)), np.ones(len(r)), np.ones(len(r))]
    rhs = np.where(t == 0, p.installed0[lay.pc[i], lay.ps[i]], 0.0)
    rows.family("install_chain", np.concatenate([r, r[later], r, r, r]), np.concatenate(cols),
                np.concatenate(vals), P * T, rhs, rhs)


def expected_failures(p: PlanningProblem) -> np.ndarray:
    """[C, T]: GPUs of each cohort expected to fail in week t, f * A[c,t-1] (A[c,0] for t = 0)."""
    return p.options.failure_rate_per_gpu_week * np.concatenate([p.avail[:, :1], p.avail[:, :-1]], axis=1)


def define_failures(rows: _Rows, p: PlanningProblem, lay: Layout) -> None:
    """sum_{p of c} out[p,t] <= expected_failures[c,t]: failed GPUs leave their site for free."""
    i, t = _grid(len(lay.pc), lay.T)
    expected = expected_failures(p)
    rows.family("failures", lay.pc[i] * lay.T + t, lay.cols("out", i, t), 1.0, expected.size, -np.inf,
                expected.ravel())


def define_holding(rows: _Rows, p: PlanningProblem, lay: Layout) -> None:
    """sum_s inst[c,s,t] <= avail[c,t]: GPUs not installed wait in the warehouse."""
    i, t = _grid(len(lay.pc), lay.T)
    rows.family("holding", lay.pc[i] * lay.T + t, lay.cols("inst", i, t), 1.0, p.avail.size, -np.inf,
                p.avail.ravel())


def define_site_slots(rows: _Rows, p: PlanningProblem, lay: Layout) -> None:
    """sum_c inst[c,s,t] <= slots[s,t]: zero before the site's capacity comes online."""
    i, t = _grid(len(lay.pc), lay.T)
    rows.family("site_slots", lay.ps[i] * lay.T + t, lay.cols("inst", i, t), 1.0, p.slots.size, -np.inf,
                p.slots.ravel())


def define_site_power(rows: _Rows, p: PlanningProblem, lay: Layout) -> None:
    """sum_c watts[c] * pue[s] * inst[c,s,t] / 1e3 <= mw[s,t] * 1e3 (in kW, for scaling)."""
    i, t = _grid(len(lay.pc), lay.T)
    kw = p.watts[lay.pc[i]] * p.pue[lay.ps[i]] / 1e3
    rows.family("site_power", lay.ps[i] * lay.T + t, lay.cols("inst", i, t), kw, p.mw.size, -np.inf,
                p.mw.ravel() * 1e3)


def define_burn_in(rows: _Rows, p: PlanningProblem, lay: Layout) -> None:
    """sum_u serve[p,u,t] <= inst[p,t] - sum_{k=t-L+1..t} add[p,k]: new installs burn in for L weeks."""
    P, T, L = len(lay.pc), lay.T, p.options.install_lead_weeks
    q, tq = _grid(len(lay.qp), T)
    i, t = _grid(P, T)
    r_serve, c_serve = lay.qp[q] * T + tq, lay.cols("serve", q, tq)
    parts_r, parts_c, parts_v = [r_serve, i * T + t], [c_serve, lay.cols("inst", i, t)], [
        np.ones(len(q)), -np.ones(len(i))]
    for lag in range(L):
        ok = t - lag >= 0
        parts_r.append(i[ok] * T + t[ok])
        parts_c.append(lay.cols("add", i[ok], t[ok] - lag))
        parts_v.append(np.ones(ok.sum()))
    rows.family("burn_in", np.concatenate(parts_r), np.concatenate(parts_c), np.concatenate(parts_v), P * T,
                -np.inf, 0.0)


def define_demand_balance(rows: _Rows, p: PlanningProblem, lay: Layout) -> None:
    """sum_{p} serve[p,u,t] = sum_{d of u} sv[d,t]: GPUs serve recorded demand and nothing else."""
    E, T = len(p.entities), lay.T
    q, tq = _grid(len(lay.qp), T)
    d, td = _grid(len(p.demand_ids), T)
    rows.family("demand_balance", np.concatenate([lay.qu[q] * T + tq, p.demand_entity[d] * T + td]),
                np.concatenate([lay.cols("serve", q, tq), lay.cols("sv", d, td)]),
                np.concatenate([np.ones(len(q)), -np.ones(len(d))]), E * T, 0.0, 0.0)


def define_reclaims(rows: _Rows, p: PlanningProblem, lay: Layout, lent_now: np.ndarray) -> None:
    """lend[l,t-1] - lend[l,t] <= recl[l,t] + ret[l,t], with lend[l,-1] the GPUs lent on the as-of date."""
    T = lay.T
    loan = lay.ql >= 0
    q, tq = _grid(len(lay.qp), T)
    sel = loan[q]
    q, tq = q[sel], tq[sel]
    l_of = lay.ql[q]
    nxt = tq + 1 < T
    l, tl = _grid(len(lay.lc), T)
    rows.family("reclaims",
                np.concatenate([l_of * T + tq, l_of[nxt] * T + tq[nxt] + 1, l * T + tl, l * T + tl]),
                np.concatenate([lay.cols("serve", q, tq), lay.cols("serve", q[nxt], tq[nxt]),
                                lay.cols("recl", l, tl), lay.cols("ret", l, tl)]),
                np.concatenate([-np.ones(len(q)), np.ones(nxt.sum()), -np.ones(2 * len(l))]),
                len(lay.lc) * T, -np.inf, np.where(tl == 0, -lent_now[l], 0.0))


def demand_drop(p: PlanningProblem, lay: Layout, lent_now: np.ndarray) -> np.ndarray:
    """[E, T]: the lent GPUs each borrower may give back for free in week t.

    For t >= 1, how far its demand falls from week t-1 to week t. In week 0, the GPUs lent to it
    on the as-of date beyond its demand in week 0: they serve no work of the borrower's, so
    taking them back loses none (a borrower whose demand ended before the plan starts returns
    everything it holds for free). Plus, in every week, the GPUs of its open loans whose end_date
    has come (``loan_ends``): the loan agreed they return then.
    """
    wanted = np.zeros((len(p.entities), p.weeks))
    np.add.at(wanted, p.demand_entity, p.demand_gpus)
    lent_to = np.bincount(lay.lu, weights=lent_now, minlength=len(p.entities))
    before = np.concatenate([lent_to[:, None], wanted[:, :-1]], axis=1)
    ending = 0.0 if p.loan_ends is None else p.loan_ends
    return np.clip(before - wanted, 0.0, None) + ending


def define_free_returns(rows: _Rows, p: PlanningProblem, lay: Layout, lent_now: np.ndarray) -> None:
    """sum_{l of borrower u} ret[l,t] <= demand_drop[u,t]: a loan may end for free only as far as
    the borrower's demand falls (week 0: beyond its demand); any other return is a reclaim."""
    l, t = _grid(len(lay.lc), lay.T)
    drop = demand_drop(p, lay, lent_now)
    rows.family("free_returns", lay.lu[l] * lay.T + t, lay.cols("ret", l, t), 1.0, drop.size, -np.inf,
                drop.ravel())


def build(problem: PlanningProblem, *, allow_loans: bool = True, min_served: np.ndarray | None = None,
          share_floor: float | None = None, maximize_share: bool = False,
          lent_now: np.ndarray | None = None) -> LinearModel:
    """Assemble the LP (or MILP with ``options.integral``) for one policy stage.

    ``min_served[e,t]``: GPUs of its own that must keep serving each entity (owner-first).
    ``maximize_share``: add ``z`` and maximize the smallest share of demand met (fair, stage 1);
    ``share_floor``: keep every share at least this while maximizing value (fair, stage 2).
    """
    lay = layout_for(problem)
    T, H = lay.T, 24.0 * problem.options.week_days
    lent_now = np.zeros(len(lay.lc)) if lent_now is None else lent_now
    rows = _Rows()
    for define in (define_install_chain, define_failures, define_holding, define_site_slots, define_site_power,
                   define_burn_in, define_demand_balance):
        define(rows, problem, lay)
    define_free_returns(rows, problem, lay, lent_now)
    define_reclaims(rows, problem, lay, lent_now)

    n = lay.n + (1 if maximize_share else 0) + (len(lay.qp) * T if problem.options.integral else 0)
    c = np.zeros(n)
    lo, hi = np.zeros(n), np.full(n, np.inf)
    sv0, svn = lay.offsets["sv"], lay.sizes["sv"]
    c[sv0:sv0 + svn] = -problem.demand_value.repeat(T) * H
    hi[sv0:sv0 + svn] = problem.demand_gpus.ravel()
    c[lay.offsets["rem"]:lay.offsets["rem"] + lay.sizes["rem"]] = problem.options.move_cost_usd
    c[lay.offsets["recl"]:lay.offsets["recl"] + lay.sizes["recl"]] = problem.options.reclaim_cost_usd
    c[lay.offsets["add"]:lay.offsets["add"] + lay.sizes["add"]] = TIE_BREAK_USD
    loan_cols = lay.cols("serve", *_loan_grid(lay))
    c[loan_cols] += TIE_BREAK_USD
    if not allow_loans:
        hi[loan_cols] = 0.0
    integer = np.zeros(n, dtype=bool)
    if problem.options.integral:
        _whole_servers(rows, problem, lay, integer)
    if min_served is not None:
        _keep_served(rows, problem, lay, min_served)
    if maximize_share or share_floor is not None:
        wanted = _share_rows(rows, problem, lay, n - 1 if maximize_share else None, share_floor)
        if maximize_share:
            # max z, with the objective scaled to GPU-weeks (z times the largest entity's demand):
            # a GPU-week served then moves the objective by about 1, not by 1 / demand (1e-6 on a
            # large fleet), which HiGHS's dual tolerance (1e-7) could not tell from 0 and stopped early.
            c[:] = 0.0
            c[n - 1], hi[n - 1] = -max(1.0, float(wanted.max(initial=0.0))), 1.0
    A = sp.csr_matrix((np.concatenate(rows.v), (np.concatenate(rows.r), np.concatenate(rows.c))),
                      shape=(rows.count, n))
    return LinearModel(lay, c, A, np.concatenate(rows.lo), np.concatenate(rows.hi), lo, hi, integer,
                       rows.families)


def _loan_grid(lay: Layout) -> tuple[np.ndarray, np.ndarray]:
    q, t = _grid(len(lay.qp), lay.T)
    sel = lay.ql[q] >= 0
    return q[sel], t[sel]


def _whole_servers(rows: _Rows, p: PlanningProblem, lay: Layout, integer: np.ndarray) -> None:
    """serve[q,t] = server_gpus * n[q,t], n integer, for lent GPUs (they move in whole servers)."""
    q, t = _loan_grid(lay)
    n_cols = lay.n + q * lay.T + t
    integer[n_cols] = True
    k = np.arange(len(q))
    rows.family("whole_servers", np.concatenate([k, k]), np.concatenate([lay.cols("serve", q, t), n_cols]),
                np.concatenate([np.ones(len(q)), -float(p.options.server_gpus) * np.ones(len(q))]), len(q), 0.0, 0.0)


def _keep_served(rows: _Rows, p: PlanningProblem, lay: Layout, min_served: np.ndarray) -> None:
    """sum_{own-use q of e} serve[q,t] >= min_served[e,t] (owner-first: an owner's own GPUs serve it
    at least as much as they do without loans, so only true surplus is lent)."""
    q, t = _grid(len(lay.qp), lay.T)
    own = lay.ql[q] < 0
    q, t = q[own], t[own]
    rows.family("owner_first", lay.qu[q] * lay.T + t, lay.cols("serve", q, t), 1.0, min_served.size,
                min_served.ravel() - stage_slack(min_served.ravel(), p.options.integral), np.inf)


def _share_rows(rows: _Rows, p: PlanningProblem, lay: Layout, z_col: int | None, floor: float | None) -> np.ndarray:
    """sum_{d of e, t} sv[d,t] >= share * sum_{d of e, t} demand[d,t], for every entity with demand.

    Returns each entity's demand over the horizon (GPU-weeks).
    """
    wanted = np.bincount(p.demand_entity, weights=p.demand_gpus.sum(axis=1), minlength=len(p.entities))
    has = np.flatnonzero(wanted > 0)
    rank = np.full(len(p.entities), -1)
    rank[has] = np.arange(len(has))
    d, t = _grid(len(p.demand_ids), lay.T)
    keep = rank[p.demand_entity[d]] >= 0
    r, cols, vals = rank[p.demand_entity[d][keep]], lay.cols("sv", d[keep], t[keep]), np.ones(keep.sum())
    if z_col is not None:
        r = np.concatenate([r, np.arange(len(has))])
        cols = np.concatenate([cols, np.full(len(has), z_col)])
        vals = np.concatenate([vals, -wanted[has]])
        rows.family("fair_share", r, cols, vals, len(has), 0.0, np.inf)
    else:
        kept = floor * wanted[has]
        rows.family("fair_share", r, cols, vals, len(has), kept - stage_slack(kept, p.options.integral), np.inf)
    return wanted
