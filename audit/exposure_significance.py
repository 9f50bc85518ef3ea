"""Is a group's place in this top-k evidence of bias, or what a group-blind ranking could give?

The null hypothesis for one request: the ranking ignores groups, i.e. the
returned top-k is a uniformly random ordered draw from the same eligible
candidates. Under it, for a group g with n of the N eligible candidates:

* its count X in the top k is hypergeometric(N, n, k): the exact one-sided
  p-value of under-selection is P(X <= x);
* its position-weighted exposure (sum of 1/log2(1+rank) over its returned
  positions) is, given X = x, the sum of a uniformly random x-subset of the
  k discounts. The discounts are rounded to integers (`q_r`, about 1000 for
  rank 1, the sum of all k at most `QMAX`) and the exact distribution of
  the rounded sum T is counted by dynamic programming over subsets (per k,
  once); mixing it with the hypergeometric law gives P(T <= t). The rounding
  defines the statistic, it does not approximate its law: the p-value is
  exact for T, so the test keeps its level; it only changes the order of
  near-equal exposures (a power question, negligible at this resolution).

Why exact tests rather than a bootstrap or a normal approximation: at
top_k = 10 the counts are tiny and discrete, the very regime where
approximations misstate the tail; the exact laws are cheap to tabulate.

Multiplicity: every (group, metric) pair is a hypothesis; the Holm step-down
procedure controls the family-wise error rate at the policy's `alpha` under
any dependence (the count and exposure of a group are strongly dependent).
The family holds only the hypotheses that *could* be rejected in this
request: a test whose most extreme possible outcome (the group getting as
few of the top k, as low down, as the list allows) has a p-value above alpha
can never be significant, and whether that is so depends on (N, n, k) alone,
not on the ranking, so leaving it out keeps the error control (Tarone 1990)
and gives the other tests more power. A group none of whose tests could
reach alpha gets INSUFFICIENT_EVIDENCE, with the numbers that say why.

Cost: the per-(N, n, k) laws are tabulated on first use and kept (a small
bounded table), so a request costs a dict lookup and a list index per group;
the exact exposure p-value is looked up only when the group's exposure is in
the lower alpha tail (else its p-value is above alpha and cannot matter to
Holm: see `ExposureTester.test`).
"""
from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

# Largest rounded exposure sum per k: sets the DP's width (k+1 rows x QMAX+1 columns).
QMAX = 4096
# Integer units per unit of discount at most (rank 1's discount is 1.0).
SCALE_MAX = 1000.0
# Cached per-(N, n, k) laws before the table is emptied (request group sizes are client data).
MAX_KEYS = 4096
# Two-sided floating-point slack on "p <= alpha" (the laws are sums of ~k+1 products).
EPS = 1e-12


@dataclass(frozen=True)
class RankTable:
    """Per top-k: integer discounts and the exact conditional CDF of the rounded exposure sum."""

    k: int
    q: tuple[int, ...]          # rounded discount of rank 1..k (non-increasing)
    scale: float                # q_r ~= scale / log2(1 + r)
    cond_cdf: np.ndarray        # [t, x] = P(sum of a random x-subset of q <= t), shape (sum(q) + 1, k + 1)
    total: float                # sum of the k float discounts (the exposure shares' denominator)


def rank_table(k: int) -> RankTable:
    """Count the x-subsets of the k rounded discounts by their sum (subset-sum DP), once per k."""
    d = [1.0 / math.log2(1.0 + r) for r in range(1, k + 1)]
    scale = min(SCALE_MAX, QMAX / sum(d)) if k else SCALE_MAX
    q = tuple(max(1, round(x * scale)) for x in d)
    total = sum(q)
    counts = np.zeros((k + 1, total + 1))
    counts[0, 0] = 1.0
    for qi in q:
        # counts[x, t] += counts[x-1, t-qi], for all x at once (the right side is copied first).
        counts[1:, qi:] += counts[:-1, : total + 1 - qi].copy()
    cum = np.cumsum(counts, axis=1)
    norm = np.array([math.comb(k, x) for x in range(k + 1)], dtype=np.float64)
    return RankTable(k, q, scale, np.ascontiguousarray((cum / norm[:, None]).T), math.fsum(d))


@dataclass(frozen=True)
class GroupLaw:
    """The group-blind laws of one group's count and exposure for one (N, n, k)."""

    cdf_count: tuple[float, ...]      # P(X <= x), x = 0..k
    min_p_count: float                # P(X <= x_min): the smallest count p-value this request allows
    t_crit: int                       # largest rounded exposure whose p-value is <= alpha (-1: none)
    cdf_exposure: tuple[float, ...]   # P(T <= t) for t = 0..t_crit: the lower alpha tail, all Holm needs
    min_p_exposure: float             # P(T <= t_min): the smallest exposure p-value this request allows


def hypergeom_pmf(N: int, n: int, k: int) -> list[float]:
    """P(X = x), x = 0..k, for X ~ hypergeometric(N, n, k), from exact integer binomials (correctly rounded:
    Python's int / int). Equal to scipy.stats.hypergeom (tests/audit/test_exposure_significance.py); computed
    here because the scipy call costs ~100 us of per-distribution set-up, and this runs on the request path
    the first time a (N, n, k) is seen."""
    total = math.comb(N, k)
    return [math.comb(n, x) * math.comb(N - n, k - x) / total for x in range(k + 1)]


def group_law(table: RankTable, N: int, n: int, alpha: float) -> GroupLaw:
    k = table.k
    pmf = hypergeom_pmf(N, n, k)
    cdf_count = tuple(np.cumsum(pmf).tolist())
    x_min = max(0, k - (N - n))
    cdf_t = table.cond_cdf @ np.asarray(pmf)
    t_crit = int(np.searchsorted(cdf_t, alpha + EPS, side="right")) - 1
    # The lowest exposure the group can have: its fewest possible items at the bottom ranks.
    t_min = sum(table.q[k - x_min:]) if x_min else 0
    return GroupLaw(cdf_count, cdf_count[x_min], t_crit, tuple(cdf_t[: t_crit + 1].tolist()), float(cdf_t[t_min]))


def holm(pvalues: Sequence[float], m: int) -> list[float]:
    """Holm-adjusted p-values for the given p-values, in a family of m hypotheses (m >= len(pvalues): the
    family's other members have p-values above every one given, so they never precede these in the
    step-down order). Equal to statsmodels' multipletests(method="holm") on the whole family (tested)."""
    if len(pvalues) == 1:      # the usual cases, without the general loop's sort (request path)
        return [min(1.0, m * pvalues[0])]
    if len(pvalues) == 2:
        a, b = pvalues
        lo, hi = (a, b) if a <= b else (b, a)
        first = min(1.0, m * lo)
        second = max(first, min(1.0, (m - 1) * hi))
        return [first, second] if a <= b else [second, first]
    order = sorted(range(len(pvalues)), key=pvalues.__getitem__)
    out = [1.0] * len(pvalues)
    running = 0.0
    for step, i in enumerate(order):
        running = max(running, min(1.0, (m - step) * pvalues[i]))
        out[i] = running
    return out


class TestResult(NamedTuple):
    """Per group (aligned with the arrays passed to `ExposureTester.test`): whether any of its tests could reach
    alpha in this request, the Holm-adjusted p-values of its count and exposure tests when their raw p-value
    is at most alpha (the only ones Holm can reject; None otherwise or when not tested), and the smaller of
    its two smallest attainable p-values."""

    testable: tuple[bool, ...]
    adj_count: Sequence[float | None]
    adj_exposure: Sequence[float | None]
    min_p: tuple[float, ...]


class ExposureTester:
    """Exact group-blind tests for one policy level `alpha`; thread-safe, tables shared by requests."""

    def __init__(self, alpha: float) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1); got {alpha!r}")
        self.alpha = alpha
        self._tables: dict[int, RankTable] = {}
        self._laws: dict[tuple[int, int, int], GroupLaw] = {}
        # Per request shape (N, k, group sizes, min_group_size): each group's law (None: not testable), which
        # of its two tests are in the family, the family's size and the smallest attainable p-values.
        self._plans: dict[tuple, tuple] = {}
        self._lock = threading.Lock()

    def table(self, k: int) -> RankTable:
        t = self._tables.get(k)
        if t is None:
            with self._lock:
                t = self._tables.get(k)
                if t is None:
                    t = self._tables[k] = rank_table(k)
        return t

    def law(self, N: int, n: int, k: int) -> GroupLaw:
        key = (N, n, k)
        law = self._laws.get(key)
        if law is None:
            law = group_law(self.table(k), N, n, self.alpha)
            if len(self._laws) >= MAX_KEYS:
                self._laws = {}      # rebound, never mutated while a reader iterates
            self._laws[key] = law
        return law

    def _plan(self, N: int, k: int, sizes: Sequence[int], min_group_size: int) -> tuple:
        key = (N, k, tuple(sizes), min_group_size)
        plan = self._plans.get(key)
        if plan is None:
            alpha = self.alpha + EPS
            groups = []
            m = 0
            for n in sizes:
                if n < min_group_size or not k:
                    groups.append((None, False, False, 1.0))
                    continue
                law = self.law(N, n, k)
                ok_count, ok_exp = law.min_p_count <= alpha, law.min_p_exposure <= alpha
                m += ok_count + ok_exp
                groups.append((law if ok_count or ok_exp else None, ok_count, ok_exp,
                               min(law.min_p_count, law.min_p_exposure)))
            none = (None,) * len(groups)
            plan = (tuple(groups), m, self.table(k) if k else None,
                    TestResult(tuple(g[0] is not None for g in groups), none, none, tuple(g[3] for g in groups)))
            if len(self._plans) >= MAX_KEYS:
                self._plans = {}
            self._plans[key] = plan
        return plan

    def test(self, N: int, k: int, codes: Sequence[int], sizes: Sequence[int], rates: Sequence[float],
             exposure: Sequence[float], returned_codes: Sequence[int], min_group_size: int = 1) -> TestResult:
        """Per group (`codes[j]` its code, `sizes[j]` its eligible candidates, `rates[j]` the share of them
        returned, `exposure[j]` its share of the list's position-weighted exposure), given `returned_codes`
        (the group code at each returned rank, best first; k of them). Groups under `min_group_size` are
        never testable."""
        alpha = self.alpha + EPS
        groups, m, table, nothing = self._plan(N, k, sizes, min_group_size)
        tested: list[tuple[int, int, float]] = []     # (group index, 0 count / 1 exposure, raw p) with p <= alpha
        for j, (law, ok_count, ok_exp, _) in enumerate(groups):
            if law is None:
                continue
            if ok_count:
                p = law.cdf_count[round(rates[j] * sizes[j])]
                if p <= alpha:
                    tested.append((j, 0, p))
            if ok_exp:
                # Screen on the float exposure: the rounded sum is within k/2 of scale * exposure, so only a
                # group near or in the lower tail needs its rounded sum counted.
                if exposure[j] * table.total * table.scale - 0.5 * k - 1.0 <= law.t_crit:
                    c = codes[j]
                    t = sum(qr for qr, rc in zip(table.q, returned_codes) if rc == c)
                    if t <= law.t_crit:
                        tested.append((j, 1, law.cdf_exposure[t]))
        if not tested:
            return nothing
        adjusted = holm([p for _, _, p in tested], m)
        adj = ([None] * len(groups), [None] * len(groups))
        for (j, which, _), a in zip(tested, adjusted):
            adj[which][j] = a
        return TestResult(nothing.testable, adj[0], adj[1], nothing.min_p)
