"""Ranker features, computed the same way for training, serving and batch.

Per candidate (catalog row i, user history H):
  interest          cosine(user vector, item vector) from the BERT bi-encoder
  item_log_pop      log(1 + sum over past interactions of 0.5 ** (age_days / 365))
  item_mean_rating  (sum ratings + 10 * global mean) / (n ratings + 10)
  item_age_years    stats reference year - release year (NaN unknown)
  user_log_activity log(1 + |H|)
  genre_overlap     cosine(mean genre one-hot over H, genre one-hot of i) (NaN unknown)
  cooccurrence      mean over h in H of |U_h ∩ U_i| / sqrt(|U_h| |U_i|) (recsys/cooccurrence.py)
  <extra>           numeric item features declared at training (--item-features); at serving
                    time the request's candidate `features` supply them
Unknown (text-only) items get NaN statistics except popularity 0; LightGBM
routes NaN down the learned default branch.
"""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from recsys.catalog import Catalog
from recsys.cooccurrence import CoOccurrence

BASE_FEATURES = ("interest", "item_log_pop", "item_mean_rating", "item_age_years",
                 "user_log_activity", "genre_overlap", "cooccurrence")


class FeatureBuilder:
    def __init__(self, catalog: Catalog, cooccurrence: CoOccurrence, extra_features: tuple[str, ...] = ()) -> None:
        self.catalog = catalog
        self.cooccurrence = cooccurrence
        self.extra_features = tuple(extra_features)
        self.names = BASE_FEATURES + self.extra_features
        self.ref_year = datetime.fromtimestamp(catalog.stats.ref_time, tz=timezone.utc).year

    def build(self, cand_idx: np.ndarray, history_idx: np.ndarray, interest: np.ndarray,
              extra: np.ndarray | None = None) -> np.ndarray:
        """(n_candidates, n_features) float64; cand_idx is -1 for unknown items.

        `extra` is (n_candidates, len(extra_features)), NaN where a value is missing.
        """
        cat = self.catalog
        n = len(cand_idx)
        X = np.full((n, len(self.names)), np.nan, dtype=np.float64)
        X[:, 0] = interest
        known = cand_idx >= 0
        ki = cand_idx[known]
        X[:, 1] = 0.0
        X[known, 1] = cat.stats.log_pop[ki]
        X[known, 2] = cat.stats.mean_rating[ki]
        X[known, 3] = self.ref_year - cat.years[ki]
        hist = history_idx[history_idx >= 0]
        X[:, 4] = np.log1p(len(history_idx))
        if len(hist):
            profile = cat.genre_matrix[hist].astype(np.float64).mean(axis=0)
            pnorm = float(np.linalg.norm(profile))
            g = cat.genre_matrix[ki].astype(np.float64)
            gnorm = np.linalg.norm(g, axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                X[known, 5] = np.where(gnorm > 0, g @ profile / (gnorm * max(pnorm, 1e-12)), np.nan)
        X[:, 6] = self.cooccurrence.score(cand_idx, history_idx)
        if self.extra_features and extra is not None:
            X[:, len(BASE_FEATURES):] = extra
        return X
