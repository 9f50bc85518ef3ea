"""Implicit-feedback matrix factorisation (ALS, Hu, Koren & Volinsky 2008) for the ranker's features.

Fitted with the `implicit` library; what serving needs is kept as plain arrays
(item factors and their Gram matrix, no pickle). A request's user is folded in
from its history exactly as `implicit`'s `recalculate_user` does — one
k x k solve of (YᵀY + λI + (α - 1)·Y_hᵀY_h) x = α·Σ_h y_h — so a new user, or
a known user with a history the model has not seen, is scored like any other
(tests/recsys/test_als.py compares the two).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from recsys.stable_dot import stable_dot
import pandas as pd
import scipy.sparse as sp


def interaction_matrix(inter: pd.DataFrame, item_ids: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """(users x items binary CSR over `item_ids`' order, the user ids of its rows); unknown items dropped."""
    pos = pd.Series(np.arange(len(item_ids)), index=item_ids)
    cols = pos.reindex(inter["item_id"]).to_numpy()
    ok = ~np.isnan(cols)
    users, rows = np.unique(inter["user_id"].to_numpy()[ok], return_inverse=True)
    m = sp.csr_matrix((np.ones(int(ok.sum()), dtype=np.float32), (rows, cols[ok].astype(np.int64))),
                      shape=(len(users), len(item_ids)))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m, users


class ImplicitALS:
    """Keyword-only parameters as `implicit.cpu.als.AlternatingLeastSquares` takes them; learned state ends in `_`."""

    def __init__(self, *, factors: int = 64, regularization: float = 0.05, alpha: float = 1.0,
                 iterations: int = 15, random_state: int = 0, num_threads: int = 2) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.random_state = random_state
        self.num_threads = num_threads

    def _check_params(self) -> None:
        for name in ("factors", "iterations", "num_threads"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
        for name in ("regularization", "alpha"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v <= 0:
                raise ValueError(f"{name} must be a positive number; got {v!r}")

    def fit(self, matrix: sp.csr_matrix) -> "ImplicitALS":
        """`matrix`: users x items, binary (interaction_matrix)."""
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        self._check_params()
        with threadpool_limits(1, "blas"):   # implicit's own advice: BLAS threads fight its thread pool
            model = AlternatingLeastSquares(factors=self.factors, regularization=float(self.regularization),
                                            alpha=float(self.alpha), iterations=self.iterations,
                                            random_state=self.random_state, num_threads=self.num_threads)
            model.fit(sp.csr_matrix(matrix, dtype=np.float32), show_progress=False)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self._derive()
        return self

    def _derive(self) -> None:
        Y = self.item_factors_.astype(np.float64)
        self.gram_ = Y.T @ Y + float(self.regularization) * np.eye(Y.shape[1])
        norms = np.linalg.norm(Y, axis=1, keepdims=True)
        self.unit_factors_ = np.divide(Y, norms, out=np.zeros_like(Y), where=norms > 0).astype(np.float32)

    @property
    def n_items(self) -> int:
        return self.item_factors_.shape[0]

    def user_vector(self, history_idx: np.ndarray) -> np.ndarray | None:
        """The user's factor from their history's catalog rows (-1 = unknown, skipped; duplicates count
        once); None without a known history item."""
        h = np.unique(history_idx[history_idx >= 0])
        if len(h) == 0:
            return None
        Yh = self.item_factors_[h].astype(np.float64)
        a = float(self.alpha)
        A = self.gram_ + (a - 1.0) * (Yh.T @ Yh)
        return np.linalg.solve(A, a * Yh.sum(axis=0))

    def scores(self, user: np.ndarray | None, cand_idx: np.ndarray) -> np.ndarray:
        """Predicted preference of each candidate (-1 unknown, or no user: NaN)."""
        out = np.full(len(cand_idx), np.nan)
        if user is None:
            return out
        known = cand_idx >= 0
        out[known] = stable_dot(self.item_factors_[cand_idx[known]], user)
        return out

    def max_similarity(self, cand_idx: np.ndarray, recent_idx: np.ndarray) -> np.ndarray:
        """Max cosine between each candidate's factors and any recent history item's (NaN: none known)."""
        recent = recent_idx[recent_idx >= 0]
        out = np.full(len(cand_idx), np.nan)
        if len(recent) == 0:
            return out
        known = cand_idx >= 0
        sims = stable_dot(self.unit_factors_[cand_idx[known]], self.unit_factors_[recent].T)
        out[known] = sims.max(axis=1)
        return out

    def save(self, path: Path) -> None:
        """npz of plain arrays and the parameters (no pickle)."""
        np.savez(path, item_factors=self.item_factors_,
                 params=np.array([self.factors, self.regularization, self.alpha, self.iterations], dtype=np.float64))

    @classmethod
    def load(cls, path: Path) -> "ImplicitALS":
        with np.load(path, allow_pickle=False) as z:
            factors, reg, alpha, iterations = z["params"].tolist()
            self = cls(factors=int(factors), regularization=float(reg), alpha=float(alpha), iterations=int(iterations))
            self.item_factors_ = np.ascontiguousarray(z["item_factors"], dtype=np.float32)
        if self.item_factors_.ndim != 2 or self.item_factors_.shape[1] != self.factors:
            raise ValueError(f"{path}: item_factors has shape {self.item_factors_.shape}, expected (n, {self.factors})")
        self._derive()
        return self
