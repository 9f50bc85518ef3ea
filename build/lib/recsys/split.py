"""Temporal split and query construction.

Three periods by global time (quantiles of interaction timestamps):

    [start, t_fit)   fits the BERT interest model and the item statistics the
                     ranker is *trained* with;
    [t_fit, t_val)   ranker training labels;
    [t_val, end]     validation labels (item statistics now from < t_val).

Inside a labelled period, a user's interactions are cut at a query time: the
ones before it join the user's history (request-time input, as in serving),
the ones at or after it are the targets. Every model parameter and item
statistic comes strictly from before the period's start, so nothing learns
from the future; tests/recsys/test_split.py checks it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True, slots=True)
class Cutoffs:
    t_fit: int
    t_val: int


@dataclass(frozen=True, slots=True)
class Query:
    """A user at one point in time: what they had seen and what came next."""

    user_id: str
    query_time: int
    history: tuple[str, ...]          # item ids, most recent first, all before query_time
    history_times: tuple[int, ...]
    targets: dict[str, float]         # item id -> rating, all at or after query_time


def temporal_cutoffs(inter: pd.DataFrame, fit_q: float = 0.7, val_q: float = 0.85) -> Cutoffs:
    if not 0 < fit_q < val_q < 1:
        raise ValueError(f"need 0 < fit_q < val_q < 1, got fit_q={fit_q}, val_q={val_q}")
    ts = inter["timestamp"].to_numpy()
    return Cutoffs(int(np.quantile(ts, fit_q)), int(np.quantile(ts, val_q)))


def build_queries(inter: pd.DataFrame, start: int, end: int | None, *, min_history: int = 3,
                  max_history: int = 50, target_share: float = 0.5) -> list[Query]:
    """One query per user active in [start, end), cut at a time inside the period."""
    period_mask = (inter["timestamp"] >= start)
    if end is not None:
        period_mask &= inter["timestamp"] < end
    active = inter.loc[period_mask, "user_id"].unique()
    sub = inter[inter["user_id"].isin(active) & ((inter["timestamp"] < end) if end is not None else True)]
    sub = sub.sort_values(["user_id", "timestamp", "item_id"], kind="mergesort")
    queries: list[Query] = []
    for user_id, rows in sub.groupby("user_id", sort=True):
        ts = rows["timestamp"].to_numpy()
        in_period = ts >= start
        period_ts = ts[in_period]
        # Cut inside the period so that about `target_share` of its interactions are targets.
        cut_idx = int(len(period_ts) * (1 - target_share))
        query_time = int(period_ts[min(cut_idx, len(period_ts) - 1)])
        hist_mask = ts < query_time
        if hist_mask.sum() < min_history:
            continue
        hist = rows[hist_mask].iloc[::-1]
        # One entry per item (its most recent interaction).
        hist = hist.drop_duplicates("item_id", keep="first").head(max_history)
        tgt = rows[(ts >= query_time)]
        tgt = tgt[~tgt["item_id"].isin(set(rows.loc[hist_mask, "item_id"]))]
        if tgt.empty:
            continue
        targets = dict(zip(tgt["item_id"], tgt["rating"].astype(float)))
        queries.append(Query(str(user_id), query_time, tuple(hist["item_id"]),
                             tuple(int(t) for t in hist["timestamp"]), targets))
    return queries


def relevance(rating: float) -> int:
    """Graded relevance of an interacted item (negatives are 0)."""
    if rating >= 4.0:
        return 3
    if rating >= 3.0:
        return 2
    return 1


def sample_candidates(query: Query, item_ids: np.ndarray, popularity: np.ndarray, n: int,
                      rng: np.random.Generator) -> tuple[list[str], list[int]]:
    """Targets plus negatives (half popularity-weighted, half uniform) up to n.

    Popularity-weighted negatives keep the popularity baseline honest: a list of
    random obscure negatives would make any popularity signal look brilliant.
    """
    targets = list(query.targets)[: max(1, n // 5)]
    exclude = set(query.history) | set(query.targets)
    n_neg = n - len(targets)
    p = popularity + 1e-3
    p = p / p.sum()
    picked: list[str] = []
    seen = set(exclude)
    for weights in (p, None):
        want = n_neg // 2 if weights is not None else n_neg - len(picked)
        draws = rng.choice(len(item_ids), size=min(len(item_ids), want * 3 + 10), replace=False, p=weights)
        for idx in draws:
            iid = item_ids[idx]
            if iid not in seen:
                seen.add(iid)
                picked.append(iid)
                if (weights is not None and len(picked) >= n_neg // 2) or len(picked) >= n_neg:
                    break
    cands = targets + picked
    labels = [relevance(query.targets[t]) for t in targets] + [0] * len(picked)
    order = rng.permutation(len(cands))
    return [cands[i] for i in order], [labels[i] for i in order]
