"""Fairness-aware re-ranking of one list: exposure-targeted constrained greedy.

FA*IR (Zehlike et al., 2017) fills the list top-down and, at every prefix,
forces in the best item of a protected group that has fallen below its
minimum count. Here every judged group (at least `min_group_size` eligible
candidates) gets a minimum share of each prefix, `strength x` its share of
candidates, so both selection rate and position-weighted exposure move
towards the group's share. The strength is searched from weak to strong
and the weakest setting that meets the thresholds is used, because every
forced item costs utility. Utility is NDCG@k of the new list with the
model's own scores as gains, relative to the original list (1.0 = same
utility); the policy bounds the loss.

No library does this for a single ranked list with a utility bound
(fairlearn's reductions/postprocessing target classifiers), hence our own.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.fairness import GroupExposure, exposure_by_codes, group_codes

STRENGTHS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25)


@dataclass(frozen=True)
class RerankResult:
    """`top` indexes the eligible list (which is in score order)."""

    top: list[int]
    ndcg: float                # utility kept, vs the original top-k (1.0 = unchanged)
    strength: float            # 0.0 = original list
    satisfied: bool            # thresholds met by `top`
    before: GroupExposure
    after: GroupExposure


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


def meets(st: GroupExposure, judged: np.ndarray, min_sel_ratio: float, min_exp_ratio: float) -> bool:
    """Thresholds over the judged groups (the same rule the audit's findings use)."""
    if judged.sum() < 2:
        return True
    rates = st.selection_rate[judged]
    ratio = rates.min() / rates.max() if rates.max() > 0 else 1.0
    return bool(ratio >= min_sel_ratio and st.exposure_ratio[judged].min() >= min_exp_ratio)


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


def fair_rerank(scores: np.ndarray, groups: np.ndarray, k: int, *, min_selection_rate_ratio: float,
                min_exposure_ratio: float, min_group_size: int, max_ndcg_loss: float) -> RerankResult:
    """Re-rank the top-k of an eligible list (sorted by `scores`, best first) towards fair exposure.

    Returns the original top-k (strength 0) when it already meets the
    thresholds; otherwise the weakest strength that meets them within the
    utility bound, else the strongest one within the bound (still reported
    as not satisfied, so the audit says disparity remains).
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    k = min(k, n)
    original = list(range(k))
    labels, codes = group_codes(groups)
    before = exposure_by_codes(labels, codes, _ranks(original, n))
    judged = before.n >= min_group_size
    if meets(before, judged, min_selection_rate_ratio, min_exposure_ratio):
        return RerankResult(original, 1.0, 0.0, True, before, before)
    cand_share = np.where(judged, before.candidate_share, 0.0)
    best = RerankResult(original, 1.0, 0.0, False, before, before)
    for strength in STRENGTHS:
        top = constrained_greedy(codes, k, cand_share * strength)
        ndcg = relative_ndcg(scores, top, k)
        if 1.0 - ndcg > max_ndcg_loss + 1e-12:
            continue   # over the utility bound; a stronger setting may still be cheaper (rarely)
        after = exposure_by_codes(labels, codes, _ranks(top, n))
        ok = meets(after, judged, min_selection_rate_ratio, min_exposure_ratio)
        best = RerankResult(top, ndcg, strength, ok, before, after)
        if ok:
            break
    return best
