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
    return RankTable(k, q, scale, np.ascontiguousarray((cum / norm[:, None]).T))


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
    order = sorted(range(len(pvalues)), key=pvalues.__getitem__)
    out = [1.0] * len(pvalues)
    running = 0.0
    for step, i in enumerate(order):
        running = max(running, min(1.0, (m - step) * pvalues[i]))
        out[i] = running
    return out


@dataclass(frozen=True)
class GroupTest:
    """One group's outcome in one request. `p_count`/`p_exposure`: raw p-values when they are <= alpha, else
    None (not needed: they cannot be rejected); `adj_*`: Holm-adjusted p-values, None when not tested."""

    index: int               # position in the arrays the caller passed
    testable: bool           # at least one of its tests could reach alpha in this request
    adj_count: float | None
    adj_exposure: float | None
    min_p: float             # the smaller of its two smallest attainable p-values


class ExposureTester:
    """Exact group-blind tests for one policy level `alpha`; thread-safe, tables shared by requests."""

    def __init__(self, alpha: float) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1); got {alpha!r}")
        self.alpha = alpha
        self._tables: dict[int, RankTable] = {}
        self._laws: dict[tuple[int, int, int], GroupLaw] = {}
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

    def test(self, N: int, k: int, codes: Sequence[int], sizes: Sequence[int], counts: Sequence[int],
             exposure: Sequence[float], returned_codes: Sequence[int], min_group_size: int = 1) -> list[GroupTest]:
        """Per group (`codes[j]` its code, `sizes[j]` its eligible candidates, `counts[j]` of them returned,
        `exposure[j]` their summed 1/log2(1+rank)), given `returned_codes` (the group code at each returned
        rank, best first; k of them). Groups under `min_group_size` are never testable."""
        alpha = self.alpha
        tested: list[tuple[int, str, float]] = []     # (group index, metric, raw p) with p <= alpha
        m = 0
        testable: list[bool] = []
        min_ps: list[float] = []
        table = self.table(k) if k else None
        for j, n in enumerate(sizes):
            if n < min_group_size or table is None:
                testable.append(False)
                min_ps.append(1.0)
                continue
            law = self.law(N, n, k)
            ok_count = law.min_p_count <= alpha + EPS
            ok_exp = law.min_p_exposure <= alpha + EPS
            testable.append(ok_count or ok_exp)
            min_ps.append(min(law.min_p_count, law.min_p_exposure))
            if ok_count:
                m += 1
                p = law.cdf_count[counts[j]]
                if p <= alpha + EPS:
                    tested.append((j, "count", p))
            if ok_exp:
                m += 1
                # Screen on the float exposure: the rounded sum is within k/2 of scale * exposure, so only a
                # group near or in the lower tail needs its rounded sum counted.
                if exposure[j] * table.scale - 0.5 * k - 1.0 <= law.t_crit:
                    c = codes[j]
                    t = sum(qr for qr, rc in zip(table.q, returned_codes) if rc == c)
                    if t <= law.t_crit:
                        tested.append((j, "exposure", law.cdf_exposure[t]))
        adjusted = holm([p for _, _, p in tested], m) if tested else []
        adj: dict[tuple[int, str], float] = {(j, metric): a for (j, metric, _), a in zip(tested, adjusted)}
        return [GroupTest(j, testable[j], adj.get((j, "count")), adj.get((j, "exposure")), min_ps[j])
                for j in range(len(sizes))]
