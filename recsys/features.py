"""Ranker features, computed the same way for training, serving and batch.

Per candidate (catalog row i, user history H):
  interest          cosine(user vector, item vector) from the BERT bi-encoder
  interest_max      max over the user's MAX_SIM_HISTORY most recent catalog history items h of
                    cosine(item vector, vector of h) — the bi-encoder as an item-to-item similarity
                    (NaN without catalog history); `interest` blurs a long history into one vector,
                    this keeps the single closest past item
  item_log_pop      log(1 + sum over past interactions of 0.5 ** (age_days / 365))
  item_mean_rating  (sum ratings + 10 * global mean) / (n ratings + 10)
  item_age_years    stats reference year - release year (NaN unknown)
  user_log_activity log(1 + |H|)
  genre_overlap     cosine(mean genre one-hot over H, genre one-hot of i) (NaN unknown)
  tag_overlap       cosine(mean tag one-hot over H, tag one-hot of i), over each item's most frequent
                    user tags before the reference time (NaN when i or H has no tags)
  cooccurrence      mean over h in H of |U_h ∩ U_i| / sqrt(|U_h| |U_i|) (recsys/cooccurrence.py)
  cooc_recent       the same cosine, weighted by recency: the r-th most recent distinct history item
                    weighs 0.5 ** (r / 10), over the 50 most recent (NaN without catalog history)
  als               implicit-feedback MF preference x_u · y_i, x_u folded in from H (recsys/als.py)
  als_rank          the candidate's rank by `als` within the request's candidates, over their count
                    (0 = best): per-list, so one user's large factor norms do not shift another's splits
  als_max           max cosine of y_i with the factors of the MAX_SIM_HISTORY most recent history items
  year_gap          release year of i - mean release year over H (NaN unknown): old-film or new-film taste
  <extra>           numeric item features declared at training (--item-features); at serving
                    time the request's candidate `features` supply them
Unknown (text-only) items get NaN statistics except popularity 0; LightGBM
routes NaN down the learned default branch.
"""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from recsys.als import ImplicitALS
from recsys.catalog import Catalog
from recsys.cooccurrence import CoOccurrence
from recsys.lru import LRUCache
from recsys.sparse_kernels import tag_overlap
from recsys.stable_dot import stable_dot

MAX_SIM_HISTORY = 20
# Features that come from the BERT bi-encoder (left out together for the "LightGBM without BERT" baseline).
BERT_FEATURES = ("interest", "interest_max")
BASE_FEATURES = ("interest", "interest_max", "item_log_pop", "item_mean_rating", "item_age_years",
                 "user_log_activity", "genre_overlap", "tag_overlap", "cooccurrence", "cooc_recent", "als",
                 "als_rank", "als_max", "year_gap")
# A catalog item's own features: the same in every request (the ranker precomputes their splits per item).
ITEM_FEATURES = ("item_log_pop", "item_mean_rating", "item_age_years")
_ITEM_COLUMNS = slice(BASE_FEATURES.index(ITEM_FEATURES[0]), BASE_FEATURES.index(ITEM_FEATURES[0]) + len(ITEM_FEATURES))
assert BASE_FEATURES[_ITEM_COLUMNS] == ITEM_FEATURES


def reference_year(catalog: Catalog) -> int:
    """The year of the catalog statistics' reference time: item ages are counted from it."""
    return datetime.fromtimestamp(catalog.stats.ref_time, tz=timezone.utc).year


def item_features(catalog: Catalog) -> np.ndarray:
    """(n_items, len(ITEM_FEATURES)) float64: every catalog row's ITEM_FEATURES, exactly the values `build`
    gives a known candidate (it gathers its rows from this table)."""
    out = np.empty((len(catalog), len(ITEM_FEATURES)), dtype=np.float64)
    out[:, 0] = catalog.stats.log_pop
    out[:, 1] = catalog.stats.mean_rating
    out[:, 2] = reference_year(catalog) - catalog.years
    return out


class FeatureBuilder:
    def __init__(self, catalog: Catalog, cooccurrence: CoOccurrence, als: ImplicitALS,
                 extra_features: tuple[str, ...] = (), *, user_factor_cache: LRUCache | None = None) -> None:
        if als.n_items != len(catalog):
            raise ValueError(f"als has {als.n_items} item rows; the catalog has {len(catalog)}")
        self.catalog = catalog
        self.cooccurrence = cooccurrence
        self.als = als
        # A history's ALS factor (one k x k solve) is the same on every request with that history; the server
        # keeps them by the history's bytes (a known user sends the same history every time).
        self.user_factors = user_factor_cache
        self.extra_features = tuple(extra_features)
        self.names = BASE_FEATURES + self.extra_features
        self.ref_year = reference_year(catalog)
        self.item_features = item_features(catalog)
        # Per-item constants of genre_overlap, once: the float64 genre rows and their norms (a row's norm does
        # not depend on which other rows are gathered with it, so these are the per-request numbers exactly).
        self._genres = catalog.genre_matrix.astype(np.float64)
        self._genre_norm = np.linalg.norm(self._genres, axis=1)
        if len(catalog):   # compile (or load the cached machine code) for these array types now, not mid-request
            _tag_overlap(catalog.tag_matrix, np.zeros(1, np.int64), np.zeros(1, np.int64))

    def build(self, cand_idx: np.ndarray, history_idx: np.ndarray, interest: np.ndarray,
              extra: np.ndarray | None = None, *, interest_max: np.ndarray | None = None) -> np.ndarray:
        """(n_candidates, n_features) float64; cand_idx is -1 for unknown items.

        `extra` is (n_candidates, len(extra_features)), NaN where a value is missing;
        `interest_max` comes from `max_similarity` (NaN when not given).
        """
        cat = self.catalog
        n = len(cand_idx)
        X = np.full((n, len(self.names)), np.nan, dtype=np.float64)
        X[:, 0] = interest
        if interest_max is not None:
            X[:, 1] = interest_max
        known = cand_idx >= 0
        # Every candidate known (the usual request): slices instead of boolean-mask indexing, same values.
        rows = slice(None) if known.all() else known
        ki = cand_idx[rows]
        X[:, 2] = 0.0
        X[rows, _ITEM_COLUMNS] = self.item_features[ki]
        hist = history_idx[history_idx >= 0]
        X[:, 5] = np.log1p(len(history_idx))
        if len(hist):
            profile = self._genres[hist].mean(axis=0)
            pnorm = float(np.linalg.norm(profile))
            gnorm = self._genre_norm[ki]
            # Divided only where the item has genres, NaN elsewhere (np.where over a full division gave the
            # same numbers, plus an errstate context manager per request).
            X[rows, 6] = np.divide(self._genres[ki] @ profile, gnorm * max(pnorm, 1e-12),
                                   out=np.full(len(ki), np.nan), where=gnorm > 0)
            X[rows, 7] = _tag_overlap(cat.tag_matrix, ki, hist)
        X[:, 8] = self.cooccurrence.score(cand_idx, history_idx)
        X[:, 9] = self.cooccurrence.score_recent(cand_idx, history_idx)
        als = self.als.scores(self._user_factor(history_idx), cand_idx)
        X[:, 10] = als
        X[:, 11] = within_list_rank(als)
        X[:, 12] = self.als.max_similarity(cand_idx, recent_history(history_idx))
        if len(hist):
            years = cat.years[hist]
            known_years = years[np.isfinite(years)]
            if len(known_years):
                X[rows, 13] = cat.years[ki] - known_years.mean()
        if self.extra_features and extra is not None:
            X[:, len(BASE_FEATURES):] = extra
        return X


    def _user_factor(self, history_idx: np.ndarray) -> np.ndarray | None:
        cache = self.user_factors
        if cache is None:
            return self.als.user_vector(history_idx)
        key = np.asarray(history_idx, dtype=np.int64).tobytes()
        hit = cache.get(key)
        if hit is None:
            hit = self.als.user_vector(history_idx)
            cache.put(key, hit if hit is not None else _NO_FACTOR)
        return None if hit is _NO_FACTOR else hit


_NO_FACTOR = np.zeros(0)   # a cached "no known history item" (None cannot be cached: it reads as a miss)


def _tag_overlap(tags, items: np.ndarray, hist: np.ndarray) -> np.ndarray:
    """Cosine of each item's tag vector with the history's mean tag vector (tags: binary CSR, items x tags),
    over the CSR arrays directly in compiled loops (recsys/sparse_kernels.py) rather than scipy fancy indexing."""
    return tag_overlap(tags.indptr, tags.indices, tags.data, tags.shape[1], items, hist)


def within_list_rank(values: np.ndarray) -> np.ndarray:
    """Rank of each value among the list's (0 = largest), over the list's length; NaN stays NaN. Ties share
    their lowest rank, so the feature does not depend on the candidates' input order."""
    out = np.full(len(values), np.nan)
    ok = ~np.isnan(values)
    v = values[ok]
    if len(v):
        s = np.sort(-v)
        out[ok] = np.searchsorted(s, -v, side="left") / len(values)
    return out


def recent_history(history_idx: np.ndarray) -> np.ndarray:
    """Catalog rows of the MAX_SIM_HISTORY most recent known history items (history is most recent first)."""
    known = history_idx[history_idx >= 0]
    return known[:MAX_SIM_HISTORY]


def max_similarity(item_vecs: np.ndarray, history_vecs: np.ndarray) -> np.ndarray:
    """Max cosine of each candidate to any history vector (vectors are L2-normalised); NaN without history."""
    if len(history_vecs) == 0:
        return np.full(len(item_vecs), np.nan)
    return stable_dot(item_vecs, np.asarray(history_vecs).T).max(axis=1)
