"""Ranking metrics over one candidate list (labels are graded relevance)."""
from __future__ import annotations

import numpy as np


def _order(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-np.asarray(scores), kind="stable")


def ndcg_at_k(labels: np.ndarray, scores: np.ndarray, k: int = 10) -> float:
    labels = np.asarray(labels, dtype=np.float64)
    order = _order(scores)[:k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float(((2 ** labels[order] - 1) * discounts[: len(order)]).sum())
    ideal = np.sort(labels)[::-1][:k]
    idcg = float(((2 ** ideal - 1) * discounts[: len(ideal)]).sum())
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(labels: np.ndarray, scores: np.ndarray, k: int = 10) -> float:
    labels = np.asarray(labels)
    relevant = labels > 0
    if not relevant.any():
        return 0.0
    order = _order(scores)[:k]
    return float(relevant[order].sum() / relevant.sum())


def reciprocal_rank(labels: np.ndarray, scores: np.ndarray) -> float:
    """1 / position of the first relevant item in the whole ranked list (0 if none)."""
    hits = np.flatnonzero(np.asarray(labels)[_order(scores)] > 0)
    return 1.0 / (hits[0] + 1) if len(hits) else 0.0


def top_k(scores: np.ndarray, k: int = 10) -> np.ndarray:
    return _order(scores)[:k]


def random_tie_order(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Best first; exact ties in a uniformly random order (an evaluation must not let input order decide
    them: a model that ties everything would otherwise score whatever order the lists were built in)."""
    s = np.asarray(scores, dtype=np.float64)
    s = np.where(np.isnan(s), -np.inf, s)
    return np.lexsort((rng.random(len(s)), -s))


def tie_share(scores: np.ndarray) -> float:
    """Share of candidates whose score equals another candidate's (NaN counts as one value)."""
    s = np.asarray(scores, dtype=np.float64)
    if len(s) < 2:
        return 0.0
    s = np.where(np.isnan(s), -np.inf, s)
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    return float((counts[inverse] > 1).mean())


def ndcg_at_k_ordered(labels: np.ndarray, order: np.ndarray, k: int = 10) -> float:
    """NDCG@k of a given order (candidate positions, best first)."""
    labels = np.asarray(labels, dtype=np.float64)
    top = np.asarray(order)[:k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float(((2 ** labels[top] - 1) * discounts[: len(top)]).sum())
    ideal = np.sort(labels)[::-1][:k]
    idcg = float(((2 ** ideal - 1) * discounts[: len(ideal)]).sum())
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k_ordered(labels: np.ndarray, order: np.ndarray, k: int = 10) -> float:
    relevant = np.asarray(labels) > 0
    if not relevant.any():
        return 0.0
    return float(relevant[np.asarray(order)[:k]].sum() / relevant.sum())


def reciprocal_rank_ordered(labels: np.ndarray, order: np.ndarray) -> float:
    hits = np.flatnonzero(np.asarray(labels)[np.asarray(order)] > 0)
    return 1.0 / (hits[0] + 1) if len(hits) else 0.0
