"""Ranking metrics over one candidate list (labels are graded relevance)."""
from __future__ import annotations

import numpy as np


def ndcg_at_k(labels: np.ndarray, scores: np.ndarray, k: int = 10) -> float:
    labels = np.asarray(labels, dtype=np.float64)
    order = np.argsort(-np.asarray(scores), kind="stable")[:k]
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
    order = np.argsort(-np.asarray(scores), kind="stable")[:k]
    return float(relevant[order].sum() / relevant.sum())
