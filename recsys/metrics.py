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
