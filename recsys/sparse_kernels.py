"""numba loops for the sparse feature sums of one request (co-occurrence, recency-weighted co-occurrence,
tag overlap).

Why: per request each is a handful of numpy calls over a few thousand stored entries (gather, bincount,
fancy indexing), and their fixed cost per call dominated: 180 and 124 us per user with a 50-item history
on the dev VM, about half of the feature stage. One compiled loop over the CSC/CSR arrays does the same
arithmetic in the same order — every sum runs sequentially from 0.0 in the order `np.bincount`
accumulates it — so the results are bit-identical to the numpy versions, which stay here as the reference
(tests/recsys/test_sparse_kernels.py compares them with `array_equal`). Norms over dense vectors stay with
numpy (BLAS sums in another order), so they are not computed here.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from recsys.sparse_gather import gather


@njit(cache=True, nogil=True)
def _cooccurrence(indptr, indices, inv_sqrt, hist, cand, n_users):   # pragma: no cover - compiled
    w = np.zeros(n_users)
    for h in hist:
        wh = inv_sqrt[h]
        for p in range(indptr[h], indptr[h + 1]):
            w[indices[p]] += wh
    out = np.zeros(len(cand))
    for k in range(len(cand)):
        c = cand[k]
        if c < 0:
            continue
        acc = 0.0
        for p in range(indptr[c], indptr[c + 1]):
            acc += w[indices[p]]
        out[k] = acc * inv_sqrt[c] / len(hist)
    return out


@njit(cache=True, nogil=True)
def _cooccurrence_weighted(indptr, indices, inv_sqrt, hist, weights, cand, n_users):   # pragma: no cover - compiled
    w = np.zeros(n_users)
    total = 0.0
    for j in range(len(hist)):
        h = hist[j]
        wh = inv_sqrt[h] * weights[j]
        total += weights[j]
        for p in range(indptr[h], indptr[h + 1]):
            w[indices[p]] += wh
    out = np.zeros(len(cand))
    for k in range(len(cand)):
        c = cand[k]
        if c < 0:
            continue
        acc = 0.0
        for p in range(indptr[c], indptr[c + 1]):
            acc += w[indices[p]]
        out[k] = acc * inv_sqrt[c] / total
    return out


def cooccurrence_scores_weighted(indptr: np.ndarray, indices: np.ndarray, inv_sqrt: np.ndarray, hist: np.ndarray,
                                 weights: np.ndarray, cand_idx: np.ndarray, n_users: int) -> np.ndarray:
    """`cooccurrence_scores` with a weight per history column: sum_h weights[h] * cosine(h, c) / sum(weights)
    (`hist` distinct known columns, non-empty, weights positive)."""
    return _cooccurrence_weighted(indptr, indices, inv_sqrt, np.asarray(hist, np.int64),
                                  np.asarray(weights, np.float64), np.asarray(cand_idx, np.int64), n_users)


def cooccurrence_scores_weighted_numpy(indptr, indices, inv_sqrt, hist, weights, cand_idx, n_users) -> np.ndarray:
    """The numpy reference of `cooccurrence_scores_weighted`."""
    out = np.zeros(len(cand_idx))
    pos, owner = gather(indptr, hist)
    w = np.bincount(indices[pos], weights=(inv_sqrt[hist] * weights)[owner], minlength=n_users)
    known = cand_idx >= 0
    ki = cand_idx[known]
    pos, owner = gather(indptr, ki)
    dot = np.bincount(owner, weights=w[indices[pos]], minlength=len(ki))
    out[known] = dot * inv_sqrt[ki] / float(np.sum(weights))
    return out


@njit(cache=True, nogil=True)
def _distinct_known(history_idx):   # pragma: no cover - compiled
    """np.unique(history_idx[history_idx >= 0]) (sorted distinct known rows), in one compiled call."""
    return np.unique(history_idx[history_idx >= 0])


def distinct_known(history_idx: np.ndarray) -> np.ndarray:
    """The sorted distinct non-negative entries of `history_idx` (catalog rows of known history items)."""
    return _distinct_known(np.asarray(history_idx, np.int64))


def cooccurrence_scores(indptr: np.ndarray, indices: np.ndarray, inv_sqrt: np.ndarray, hist: np.ndarray,
                        cand_idx: np.ndarray, n_users: int) -> np.ndarray:
    """For distinct known history columns `hist` (non-empty): per candidate (-1 unknown -> 0.0),
    sum over its users of w[user] * inv_sqrt[candidate] / |hist|, w[u] = sum of inv_sqrt[h] over h in hist
    that u interacted with."""
    return _cooccurrence(indptr, indices, inv_sqrt, np.asarray(hist, np.int64), np.asarray(cand_idx, np.int64),
                         n_users)


def cooccurrence_scores_numpy(indptr, indices, inv_sqrt, hist, cand_idx, n_users) -> np.ndarray:
    """The numpy reference of `cooccurrence_scores`."""
    out = np.zeros(len(cand_idx))
    pos, owner = gather(indptr, hist)
    w = np.bincount(indices[pos], weights=inv_sqrt[hist][owner], minlength=n_users)
    known = cand_idx >= 0
    ki = cand_idx[known]
    pos, owner = gather(indptr, ki)
    dot = np.bincount(owner, weights=w[indices[pos]], minlength=len(ki))
    out[known] = dot * inv_sqrt[ki] / len(hist)
    return out


@njit(cache=True, nogil=True)
def _tag_profile(indptr, indices, data, hist, n_tags):   # pragma: no cover - compiled
    profile = np.zeros(n_tags)
    for h in hist:
        for p in range(indptr[h], indptr[h + 1]):
            profile[indices[p]] += data[p]
    return profile / len(hist)


@njit(cache=True, nogil=True)
def _tag_dot_norm(indptr, indices, data, profile, items):   # pragma: no cover - compiled
    dot = np.zeros(len(items))
    sq = np.zeros(len(items))
    for k in range(len(items)):
        i = items[k]
        d = 0.0
        s = 0.0
        for p in range(indptr[i], indptr[i + 1]):
            v = data[p]
            d += v * profile[indices[p]]
            s += v * v
        dot[k] = d
        sq[k] = s
    return dot, np.sqrt(sq)


def tag_overlap(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, n_tags: int, items: np.ndarray,
                hist: np.ndarray) -> np.ndarray:
    """Cosine of each item's tag row with the mean tag row of `hist` (non-empty; CSR rows), NaN where
    either has no tags."""
    data = np.asarray(data, np.float64)
    profile = _tag_profile(indptr, indices, data, np.asarray(hist, np.int64), n_tags)
    pnorm = float(np.linalg.norm(profile))
    dot, tnorm = _tag_dot_norm(indptr, indices, data, profile, np.asarray(items, np.int64))
    # Divided only where both norms are positive, NaN elsewhere: the same numbers as np.where over a full
    # division, without the errstate context manager (a Python-level call pair per request).
    return np.divide(dot, tnorm * max(pnorm, 1e-12), out=np.full(len(dot), np.nan),
                     where=(tnorm > 0) & (pnorm > 0))


def tag_overlap_numpy(indptr, indices, data, n_tags, items, hist) -> np.ndarray:
    """The numpy reference of `tag_overlap`."""
    pos, owner = gather(indptr, hist)
    profile = np.bincount(indices[pos], weights=data[pos], minlength=n_tags) / len(hist)
    pnorm = float(np.linalg.norm(profile))
    pos, owner = gather(indptr, items)
    vals = data[pos]
    dot = np.bincount(owner, weights=vals * profile[indices[pos]], minlength=len(items))
    tnorm = np.sqrt(np.bincount(owner, weights=vals * vals, minlength=len(items)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((tnorm > 0) & (pnorm > 0), dot / (tnorm * max(pnorm, 1e-12)), np.nan)
