"""Metrics of scored candidate lists, as `recsys.train` and `recsys.evaluate` report them.

NDCG@10 / Recall@10 / MRR over binary relevance (held-out rating >= 4), exact score ties broken at random
(seeded), and the share of candidates tied with another in their list, so a model that cannot tell items
apart (popularity on cold items, say) is shown as what it is: a coin. Comparisons are paired by list and
bootstrapped over lists (the same resampled lists for both models).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.metrics import (ndcg_at_k_ordered, random_tie_order, recall_at_k_ordered, reciprocal_rank_ordered,
                            tie_share)
from recsys.ranking_data import RankingSet

K = 10


def per_list(rs: RankingSet, scores: np.ndarray, *, seed: int = 0) -> pd.DataFrame:
    """One row per list: user_id, ndcg@10, recall@10, mrr, tie_share, top (candidate rows of the top 10)."""
    rng = np.random.default_rng(seed)
    rows = []
    for (s, e), cl in zip(rs.bounds(), rs.lists):
        y, sc = rs.y[s:e], np.asarray(scores[s:e], dtype=np.float64)
        order = random_tie_order(sc, rng)
        rows.append({"user_id": cl.user_id, f"ndcg@{K}": ndcg_at_k_ordered(y, order, K),
                     f"recall@{K}": recall_at_k_ordered(y, order, K), "mrr": reciprocal_rank_ordered(y, order),
                     "tie_share": tie_share(sc), "top": cl.candidates[order[:K]]})
    return pd.DataFrame(rows)


def random_ndcg(rs: RankingSet) -> pd.DataFrame:
    """The exact expected NDCG@10 (and Recall@10) of a uniformly random order of each list, per list."""
    disc = 1.0 / np.log2(np.arange(2, K + 2))
    rows = []
    for (s, e), cl in zip(rs.bounds(), rs.lists):
        y = rs.y[s:e]
        n, p = len(y), float((y > 0).sum())
        m = min(K, n)
        # each of the first m positions holds a positive with probability p / n (gain 2^1 - 1 = 1)
        dcg = p / n * disc[:m].sum()
        idcg = disc[:int(min(p, K))].sum()
        rows.append({"user_id": cl.user_id, f"ndcg@{K}": dcg / idcg if idcg > 0 else 0.0,
                     f"recall@{K}": m / n if p else 0.0, "mrr": np.nan, "tie_share": 1.0, "top": None})
    return pd.DataFrame(rows)


def summary(q: pd.DataFrame, n_items: int | None = None) -> dict:
    out = {f"ndcg@{K}": float(q[f"ndcg@{K}"].mean()), f"recall@{K}": float(q[f"recall@{K}"].mean()),
           "mrr": float(q["mrr"].mean()), "tie_share": float(q["tie_share"].mean()), "n_lists": int(len(q))}
    if n_items and q["top"].notna().all():
        out[f"coverage@{K}"] = len({int(i) for top in q["top"] for i in top}) / n_items
    return out


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Mean of a - b and of a / b (ratio of means) with percentile intervals over `n_boot` resamples of the
    paired rows (lists)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) != len(b) or not len(a):
        raise ValueError("paired_bootstrap needs two equal-length, non-empty arrays")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    ma, mb = a[idx].mean(axis=1), b[idx].mean(axis=1)
    diff = ma - mb
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = ma / mb
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    lo, hi = np.percentile(diff, q)
    rlo, rhi = np.nanpercentile(ratio, q) if np.isfinite(ratio).any() else (np.nan, np.nan)
    mean_b = float(b.mean())
    return {"diff": float(a.mean() - mean_b), "diff_lo": float(lo), "diff_hi": float(hi),
            "ratio": float(a.mean() / mean_b) if mean_b else float("nan"), "ratio_lo": float(rlo),
            "ratio_hi": float(rhi), "n_lists": int(len(a)), "n_boot": n_boot}


def score_test_lists(test_sets: dict[str, RankingSet], ranker, *, seed: int = 0) -> dict:
    """Training's quick look at the test lists: popularity, ALS (the feature), the BERT score alone, the
    blend. `recsys.evaluate` is the full comparison (tuned baselines, ablations, intervals)."""
    out: dict[str, dict] = {}
    for kind, rs in test_sets.items():
        if not len(rs):
            continue
        names = list(rs.names)
        scorers = {"popularity": rs.X[:, names.index("item_log_pop")], "als": rs.X[:, names.index("als")],
                   "interest_only": rs.X[:, names.index("interest")], "blend": ranker.predict(rs.X)}
        out[kind] = {m: summary(per_list(rs, sc, seed=seed)) for m, sc in scorers.items()}
        out[kind]["random"] = summary(random_ndcg(rs))
    return out
