"""Fairness-aware re-ranking of one list: the best list that meets the exposure thresholds.

Goal, for the audit's ENFORCE action: among the ordered top-k lists that
can be built from the eligible candidates, the one with the highest DCG
(the model's own scores as gains) whose judged groups all meet both
thresholds: selection rate at least `min_selection_rate_ratio` of the
best-off group's, and position-weighted exposure share at least
`min_exposure_ratio` of the group's share of candidates; it is used when its
NDCG loss against the model's own top-k is within `max_ndcg_loss`. When no
such list exists within the bound, the best feasible improvement: the list
within the bound with the highest fairness level

    phi = min over judged groups and both metrics of (ratio / threshold), capped at 1

(phi = 1 exactly when the thresholds are met), ties broken by DCG; the
result says it does not meet the thresholds.

Exact search (top_k <= EXACT_MAX_K, any number of groups): both the
thresholds and the DCG-optimal fill depend only on which group holds each
position (within a group, its best items belong in its best positions, by
the rearrangement inequality), so a depth-first branch and bound over group
patterns is exhaustive. It prunes a prefix when (a) its DCG plus the best
unconstrained completion cannot beat the bound or the incumbent, (b) some
judged group can no longer reach its exposure floor even with all its
remaining items at the next positions, or (c) its selection rate can no
longer reach the required share of the best-off group's current rate.
Children follow the model's order, so the first leaves are near the
original list. The best-improvement case binary-searches phi with the same
search (a list meets thresholds scaled by lambda exactly when its phi >=
lambda). A node budget bounds the worst case; when it is spent (never seen
at top_k = 10) the result says so (`exhaustive` False). tests/audit/
test_rerank_exact.py checks both cases against brute force over all
ordered lists.

Longer lists (top_k > EXACT_MAX_K) use the FA*IR-style constrained greedy
(Zehlike et al., 2017): every judged group gets a minimum share of each
prefix, from weak to strong until the thresholds are met.

No library does this for a single ranked list with a utility bound
(fairlearn's reductions/postprocessing target classifiers), hence our own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from audit.fairness import GroupExposure, exposure_by_codes, group_codes

STRENGTHS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25)
EXACT_MAX_K = 20
# Search nodes per re-ranking, all searches together (~15 us each in CPython: a worst case of ~0.1 s, within
# the audit's time budget). Top-k 10 lists never came near it; at top-k 20, 14 % of random two-group
# lists did (bench/README.md), and then the best list found is used and `exhaustive` is False.
MAX_NODES = 6_000
TOL = 1e-9
# Binary-search steps on phi for the best improvement (precision 2^-10 of the gap to 1).
PHI_STEPS = 10


@dataclass(frozen=True)
class RerankResult:
    """`top` indexes the eligible list (which is in score order)."""

    top: list[int]
    ndcg: float                # utility kept, vs the original top-k (1.0 = unchanged)
    satisfied: bool            # thresholds met by `top`
    before: GroupExposure
    after: GroupExposure
    phi_before: float          # fairness level (1.0 = thresholds met) of the original list
    phi_after: float
    method: str = "original"   # "original" (left alone), "exact", "greedy"
    exhaustive: bool = True    # the exact search finished within its node budget

    @property
    def changed(self) -> bool:
        return self.top != list(range(len(self.top)))


def _ranks(top: list[int], n: int) -> np.ndarray:
    ranks = np.zeros(n)
    ranks[np.asarray(top, dtype=np.int64)] = np.arange(1, len(top) + 1)
    return ranks


def relative_ndcg(scores: np.ndarray, top: list[int], k: int) -> float:
    """DCG of `top` over the DCG of the original top-k, gains = scores shifted to >= 0."""
    gains = scores - scores.min()
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = float(np.dot(np.sort(gains)[::-1][:k], disc[:k]))
    if ideal <= 0:
        return 1.0
    got = float(np.dot(gains[np.asarray(top, dtype=np.int64)], disc[: len(top)]))
    return got / ideal


def fairness_level(st: GroupExposure, judged: np.ndarray, min_sel_ratio: float, min_exp_ratio: float) -> float:
    """phi: min over judged groups of (selection rate / best-off group's rate) / min_sel_ratio and
    exposure ratio / min_exp_ratio, capped at 1. The best-off group is taken over all groups present (a
    group too small to judge still shows what rate was possible)."""
    if not judged.any():
        return 1.0
    best = float(st.selection_rate.max())
    phi = 1.0
    for j in np.flatnonzero(judged):
        if min_sel_ratio > 0 and best > 0:
            phi = min(phi, float(st.selection_rate[j]) / best / min_sel_ratio)
        if min_exp_ratio > 0:
            phi = min(phi, float(st.exposure_ratio[j]) / min_exp_ratio)
    return phi


def meets(st: GroupExposure, judged: np.ndarray, min_sel_ratio: float, min_exp_ratio: float) -> bool:
    """Thresholds over the judged groups (the same rule the audit's findings use)."""
    return fairness_level(st, judged, min_sel_ratio, min_exp_ratio) >= 1.0 - TOL


def constrained_greedy(codes: np.ndarray, k: int, min_share: np.ndarray) -> list[int]:
    """Top-k of a score-ordered list, forcing group g to hold >= floor(min_share[g] * p) of every prefix p."""
    n_groups = len(min_share)
    queues = [np.flatnonzero(codes == g).tolist() for g in range(n_groups)]
    heads = [0] * n_groups
    counts = np.zeros(n_groups, dtype=np.int64)
    top: list[int] = []
    for p in range(1, min(k, len(codes)) + 1):
        deficit = np.floor(min_share * p + 1e-9) - counts
        pick_group = -1
        best = None
        for g in np.flatnonzero(deficit > 0):
            if heads[g] < len(queues[g]):
                key = (-deficit[g], queues[g][heads[g]])   # largest deficit, then best score
                if best is None or key < best:
                    best, pick_group = key, int(g)
        if pick_group < 0:   # no group behind: take the best remaining item
            pick_group = min((g for g in range(n_groups) if heads[g] < len(queues[g])),
                             key=lambda g: queues[g][heads[g]])
        top.append(queues[pick_group][heads[pick_group]])
        heads[pick_group] += 1
        counts[pick_group] += 1
    return top


class _Search:
    """Depth-first branch and bound over group patterns (see the module docstring)."""

    def __init__(self, gains: list[float], codes: list[int], n_groups: int, judged: list[bool], k: int,
                 max_nodes: int = MAX_NODES) -> None:
        self.gains, self.codes, self.k = gains, codes, k
        self.budget = max_nodes     # nodes left for all runs together
        self.n_items = len(gains)
        self.queues: list[list[int]] = [[] for _ in range(n_groups)]
        self.within: list[int] = []
        for i, c in enumerate(codes):
            self.within.append(len(self.queues[c]))
            self.queues[c].append(i)
        self.sizes = [len(q) for q in self.queues]
        self.judged = [g for g in range(n_groups) if judged[g] and self.sizes[g]]
        self.d = [1.0 / math.log2(2.0 + r) for r in range(k)]
        self.prefix = [0.0]
        for x in self.d:
            self.prefix.append(self.prefix[-1] + x)
        self.total = self.prefix[k]
        self._ub: dict[tuple[int, ...], float] = {}

    def upper_rest(self, counts: list[int], p: int, forced: tuple[int, ...]) -> float:
        """Best DCG of positions p..k-1 with the items not yet used, when group g must still place at least
        forced[g] items, ignoring positions' exposure: the forced items (each group's best unused) plus the
        best other unused items, in gain order."""
        key = (*counts, *forced)
        ub = self._ub.get(key)
        if ub is None:
            left = self.k - p
            chosen: list[float] = []
            for g, m in enumerate(forced):
                q = self.queues[g]
                chosen.extend(self.gains[i] for i in q[counts[g]: counts[g] + m])
            free = left - len(chosen)
            if free < 0:
                ub = -math.inf
            else:
                if free:
                    for i in range(self.n_items):
                        g = self.codes[i]
                        w = self.within[i]
                        if w >= counts[g] + forced[g]:
                            chosen.append(self.gains[i])
                            free -= 1
                            if not free:
                                break
                chosen.sort(reverse=True)
                ub = sum(x * y for x, y in zip(chosen, self.d[p:]))
            self._ub[key] = ub
        return ub

    def run(self, min_sel: float, min_exp: float, min_dcg: float, *, first: bool = False, incumbent: list[int] | None = None) -> tuple[list[int] | None, float, bool]:
        """Best (highest DCG >= min_dcg) pattern meeting (min_sel, min_exp); `first`: stop at any.
        `incumbent`: a list known to meet them (e.g. the greedy's), the bar to beat from the start.
        Returns (item indices in rank order or None, its DCG, exhaustive)."""
        k, n_groups = self.k, len(self.queues)
        sizes, judged, d, prefix = self.sizes, self.judged, self.d, self.prefix
        need = [0.0] * n_groups
        n_total = self.n_items
        for g in judged:
            need[g] = min_exp * self.total * sizes[g] / n_total - TOL
        counts = [0] * n_groups
        exp = [0.0] * n_groups
        pattern: list[int] = []
        best: list[int] | None = None
        best_dcg = min_dcg - TOL
        if incumbent is not None:
            inc_dcg = sum(self.gains[i] * x for i, x in zip(incumbent, d))
            if inc_dcg > best_dcg:
                best, best_dcg = list(incumbent), inc_dcg
                if first:
                    return best, best_dcg, True
        self.nodes = nodes = 0
        stop = False

        def forced(p: int) -> tuple[int, ...] | None:
            """Items each judged group must still place (None: it cannot meet its floors any more): enough
            for its rate to reach min_sel x the best-off group's current rate (final >= current), and for
            its exposure to reach its floor on the earliest free positions."""
            left = k - p
            top_rate = max(counts[g] / sizes[g] for g in range(n_groups) if sizes[g])
            out = [0] * n_groups
            total = 0
            for g in judged:
                avail = min(left, sizes[g] - counts[g])
                need_count = max(0, math.ceil(min_sel * top_rate * sizes[g] - TOL) - counts[g])
                if need_count > avail:
                    return None
                short = need[g] - exp[g]
                r = 0
                while short > 0 and r < avail:
                    short -= d[p + r]
                    r += 1
                if short > 0:
                    return None
                out[g] = max(need_count, r)
                total += out[g]
            return tuple(out) if total <= left else None

        def dfs(p: int, dcg: float) -> None:
            nonlocal best, best_dcg, nodes, stop
            nodes += 1
            if nodes > self.budget:
                stop = True
                return
            if p == k:
                if dcg > best_dcg:
                    best, best_dcg = list(pattern), dcg
                    if first:
                        stop = True
                return
            heads = [(self.queues[g][counts[g]], g) for g in range(n_groups) if counts[g] < sizes[g]]
            heads.sort()
            for item, g in heads:
                gain = self.gains[item] * d[p]
                counts[g] += 1
                exp[g] += d[p]
                f = forced(p + 1)
                if f is not None and dcg + gain + self.upper_rest(counts, p + 1, f) > best_dcg:
                    pattern.append(item)
                    dfs(p + 1, dcg + gain)
                    pattern.pop()
                counts[g] -= 1
                exp[g] -= d[p]
                if stop:
                    return

        if forced(0) is not None:
            dfs(0, 0.0)
        self.nodes = nodes
        self.budget = max(0, self.budget - nodes)
        return best, best_dcg, not (stop and not (first and best is not None))


def fair_rerank(scores: np.ndarray, groups: np.ndarray, k: int, *, min_selection_rate_ratio: float,
                min_exposure_ratio: float, max_ndcg_loss: float, min_group_size: int = 1,
                judged: set[str] | None = None, max_nodes: int = MAX_NODES) -> RerankResult:
    """Re-rank the top-k of an eligible list (sorted by `scores`, best first) towards fair exposure.

    `judged`: the group labels held to the thresholds (the audit passes the groups its tests can judge in
    this request); None: every group with at least `min_group_size` candidates. Returns the original top-k
    when it already meets the thresholds or nothing within the bound improves it.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    k = min(k, n)
    original = list(range(k))
    labels, codes = group_codes(groups)
    before = exposure_by_codes(labels, codes, _ranks(original, n))
    if judged is None:
        jmask = before.n >= min_group_size
    else:
        jmask = np.array([str(g) in judged for g in before.groups], dtype=bool)
    phi0 = fairness_level(before, jmask, min_selection_rate_ratio, min_exposure_ratio)
    keep = RerankResult(original, 1.0, phi0 >= 1.0 - TOL, before, before, phi0, phi0)
    if phi0 >= 1.0 - TOL or k == 0:
        return keep
    # Group codes indexing `before.groups` (every label is present in the eligible list).
    if k <= EXACT_MAX_K:
        return _exact(scores, codes, labels, jmask_by_code(labels, before, jmask), k, before, phi0,
                      min_selection_rate_ratio, min_exposure_ratio, max_ndcg_loss, max_nodes) or keep
    return _greedy(scores, codes, labels, k, before, jmask, phi0, min_selection_rate_ratio, min_exposure_ratio,
                   max_ndcg_loss) or keep


def jmask_by_code(labels: np.ndarray, st: GroupExposure, jmask: np.ndarray) -> list[bool]:
    judged = {str(g) for g, j in zip(st.groups, jmask) if j}
    return [str(lab) in judged for lab in labels]


def _result(scores, codes, labels, top, k, before, judged_mask, phi0, s, e, method, exhaustive) -> RerankResult:
    n = len(scores)
    after = exposure_by_codes(labels, codes, _ranks(top, n))
    phi = fairness_level(after, judged_mask, s, e)
    return RerankResult(top, relative_ndcg(scores, top, k), phi >= 1.0 - TOL, before, after, phi0, phi, method,
                        exhaustive)


def _exact(scores, codes, labels, judged_by_code, k, before, phi0, s, e, bound, max_nodes) -> RerankResult | None:
    gains = (scores - scores.min()).tolist()
    search = _Search(gains, codes.tolist(), len(labels), judged_by_code, k, max_nodes)
    ideal = sum(g * x for g, x in zip(gains[:k], search.d))
    min_dcg = (1.0 - bound) * ideal if ideal > 0 else 0.0
    jmask = np.array([judged_by_code[int(np.flatnonzero(labels == g)[0])] for g in before.groups], dtype=bool)
    # The greedy's best list that meets the thresholds, if any, is the bar the exact search starts from.
    inc = _greedy(scores, codes, labels, k, before, jmask, phi0, s, e, bound)
    top, _, exhaustive = search.run(s, e, min_dcg,
                                    incumbent=inc.top if inc is not None and inc.satisfied else None)
    if top is not None:
        return _result(scores, codes, labels, top, k, before, jmask, phi0, s, e, "exact", exhaustive)
    # No list meets the thresholds within the bound: the highest phi that some list within it reaches.
    lo, hi, found = phi0, 1.0, None
    for _ in range(PHI_STEPS):
        mid = (lo + hi) / 2
        cand, _, ex = search.run(s * mid, e * mid, min_dcg, first=True)
        exhaustive = exhaustive and ex
        if cand is not None:
            lo, found = mid, mid
        else:
            hi = mid
    if found is None:
        return None
    top, _, ex = search.run(s * found, e * found, min_dcg)
    if top is None or top == list(range(k)):
        return None
    res = _result(scores, codes, labels, top, k, before, jmask, phi0, s, e, "exact", exhaustive and ex)
    return res if res.phi_after > phi0 + TOL else None


def _greedy(scores, codes, labels, k, before, jmask, phi0, s, e, bound) -> RerankResult | None:
    cand_share = np.zeros(len(labels))
    present = {str(g): j for j, g in enumerate(before.groups)}
    for c, lab in enumerate(labels):
        j = present.get(str(lab))
        if j is not None and jmask[j]:
            cand_share[c] = before.candidate_share[j]
    best: RerankResult | None = None
    for strength in STRENGTHS:
        top = constrained_greedy(codes, k, cand_share * strength)
        if 1.0 - relative_ndcg(scores, top, k) > bound + 1e-12:
            continue   # over the utility bound; a stronger setting may still be cheaper (rarely)
        res = _result(scores, codes, labels, top, k, before, jmask, phi0, s, e, "greedy", True)
        if best is None or (res.phi_after, res.ndcg) > (best.phi_after, best.ndcg):
            best = res
        if res.satisfied:
            break
    return best if best is not None and best.phi_after > phi0 + TOL else None
