"""Item-item co-occurrence (collaborative) score from past interactions.

For a candidate i and a user history H:

    cooc(i | H) = 1/|H| * sum_{h in H} |U_h ∩ U_i| / sqrt(|U_h| |U_i|)

(mean cosine similarity of user sets), with U_x the users who interacted
with x strictly before the reference time. Computed per request from the
sparse item->users incidence (CSC), touching only the history and candidate
columns: w = X[:, H] · 1/sqrt(|U_H|), score = X[:, C]ᵀ w / sqrt(|U_C|) / |H|.
Stored as two int arrays (no pickle).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.sparse_kernels import cooccurrence_scores, cooccurrence_scores_weighted, distinct_known

#: recency weighting of `score_recent`: the i-th most recent distinct history item weighs 0.5 ** (i / RECENCY_HALF_LIFE)
RECENCY_HALF_LIFE = 10.0
RECENT_ITEMS = 50


class CoOccurrence:
    def __init__(self, matrix: sp.csc_matrix) -> None:
        self.X = matrix.tocsc()  # users x items, binary
        self.counts = np.asarray(self.X.sum(axis=0)).ravel().astype(np.float64)
        with np.errstate(divide="ignore"):
            self.inv_sqrt = np.where(self.counts > 0, 1.0 / np.sqrt(self.counts), 0.0)
        if self.X.shape[1]:   # compile (or load the cached machine code) for these array types now, not mid-request
            self.score(np.zeros(1, np.int64), np.zeros(1, np.int64))

    @classmethod
    def build(cls, inter: pd.DataFrame, item_ids: np.ndarray, ref_time: int) -> "CoOccurrence":
        before = inter[inter["timestamp"] < ref_time]
        pos = pd.Series(np.arange(len(item_ids)), index=item_ids)
        cols = pos.reindex(before["item_id"]).to_numpy()
        ok = ~np.isnan(cols)
        users, rows = np.unique(before["user_id"].to_numpy()[ok], return_inverse=True)
        m = sp.coo_matrix((np.ones(ok.sum(), dtype=np.float32), (rows, cols[ok].astype(np.int64))),
                          shape=(len(users), len(item_ids))).tocsc()
        m.data[:] = 1.0  # duplicates (re-ratings) count once
        m.sum_duplicates()
        m.data[:] = 1.0
        return cls(m)

    def score(self, cand_idx: np.ndarray, history_idx: np.ndarray) -> np.ndarray:
        """NaN when the history has no known item; 0 for unknown candidates.

        The matrix products X[:, H]·v and X[:, C]ᵀ·w over the CSC arrays directly, in one compiled loop
        (recsys/sparse_kernels.py): the matrix is binary, so each is a weighted count per user / per candidate.
        """
        hist = distinct_known(history_idx)
        if len(hist) == 0:
            return np.full(len(cand_idx), np.nan)
        X = self.X
        return cooccurrence_scores(X.indptr, X.indices, self.inv_sqrt, hist, cand_idx, X.shape[0])

    def score_recent(self, cand_idx: np.ndarray, history_idx: np.ndarray) -> np.ndarray:
        """Like `score`, but each history item weighs 0.5 ** (i / RECENCY_HALF_LIFE) by its recency rank i among
        the RECENT_ITEMS most recent distinct known items (history is most recent first): what a user did
        lately says more about their next item than what they did years ago. NaN without a known item."""
        hist = recent_distinct(history_idx, RECENT_ITEMS)
        if len(hist) == 0:
            return np.full(len(cand_idx), np.nan)
        weights = 0.5 ** (np.arange(len(hist)) / RECENCY_HALF_LIFE)
        X = self.X
        return cooccurrence_scores_weighted(X.indptr, X.indices, self.inv_sqrt, hist, weights, cand_idx, X.shape[0])

    def save(self, path: Path) -> None:
        np.savez(path, indptr=self.X.indptr, indices=self.X.indices, shape=np.asarray(self.X.shape))

    @classmethod
    def load(cls, path: Path) -> "CoOccurrence":
        with np.load(path, allow_pickle=False) as z:
            shape = tuple(int(x) for x in z["shape"])
            m = sp.csc_matrix((np.ones(len(z["indices"]), dtype=np.float32), z["indices"], z["indptr"]), shape=shape)
        return cls(m)


def recent_distinct(history_idx: np.ndarray, n: int) -> np.ndarray:
    """The first `n` distinct known rows of a most-recent-first history, in that order."""
    known = np.asarray(history_idx)[np.asarray(history_idx) >= 0]
    _, first = np.unique(known, return_index=True)
    return known[np.sort(first)][:n]
