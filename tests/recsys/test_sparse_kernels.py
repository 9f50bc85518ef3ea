"""The compiled co-occurrence and tag-overlap loops give bit-identical results to their numpy references, on
the artifact's real matrices and on random sparse matrices with empty rows and columns."""
import numpy as np
import pytest
import scipy.sparse as sp

from recsys.sparse_kernels import (cooccurrence_scores, cooccurrence_scores_numpy, distinct_known, tag_overlap,
                                   tag_overlap_numpy)


def _cases(rng, n_items, n=60):
    for _ in range(n):
        hist = np.unique(rng.choice(n_items, size=int(rng.integers(1, 60))))
        cand = rng.choice(n_items, size=int(rng.integers(1, 120)), replace=False).astype(np.int64)
        cand[rng.random(len(cand)) < 0.1] = -1
        yield hist, cand


def _same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b, equal_nan=True)


def test_cooccurrence_kernel_is_the_numpy_reference_on_the_artifact(artifacts):
    co = artifacts.cooccurrence
    X = co.X
    for hist, cand in _cases(np.random.default_rng(0), X.shape[1]):
        _same(cooccurrence_scores(X.indptr, X.indices, co.inv_sqrt, hist, cand, X.shape[0]),
              cooccurrence_scores_numpy(X.indptr, X.indices, co.inv_sqrt, hist, cand, X.shape[0]))


def test_tag_kernel_is_the_numpy_reference_on_the_artifact(artifacts):
    T = artifacts.catalog.tag_matrix
    for hist, cand in _cases(np.random.default_rng(1), T.shape[0]):
        items = cand[cand >= 0]
        _same(tag_overlap(T.indptr, T.indices, T.data, T.shape[1], items, hist),
              tag_overlap_numpy(T.indptr, T.indices, T.data, T.shape[1], items, hist))


@pytest.mark.parametrize("seed", range(4))
def test_kernels_match_on_random_weighted_matrices(seed):
    rng = np.random.default_rng(seed)
    n_rows, n_cols = int(rng.integers(5, 300)), int(rng.integers(5, 300))
    M = sp.random(n_rows, n_cols, density=float(rng.uniform(0.005, 0.2)), random_state=seed, format="csr")
    M.data = rng.lognormal(size=len(M.data))       # not binary: products and squares must round alike too
    for hist, cand in _cases(rng, n_rows, n=30):
        items = cand[cand >= 0]
        _same(tag_overlap(M.indptr, M.indices, M.data, n_cols, items, hist),
              tag_overlap_numpy(M.indptr, M.indices, M.data, n_cols, items, hist))
    C = M.T.tocsc()                                  # items as columns, like the co-occurrence matrix
    inv = np.where(np.diff(C.indptr) > 0, 1.0 / np.sqrt(np.maximum(np.diff(C.indptr), 1)), 0.0)
    for hist, cand in _cases(rng, n_rows, n=30):
        _same(cooccurrence_scores(C.indptr, C.indices, inv, hist, cand, C.shape[0]),
              cooccurrence_scores_numpy(C.indptr, C.indices, inv, hist, cand, C.shape[0]))


def test_distinct_known_is_numpys_unique_of_the_known_rows():
    rng = np.random.default_rng(7)
    for _ in range(500):
        h = rng.integers(-3, 50, size=int(rng.integers(0, 40)))
        got = distinct_known(h)
        assert got.dtype == np.int64 and np.array_equal(got, np.unique(h[h >= 0]))
