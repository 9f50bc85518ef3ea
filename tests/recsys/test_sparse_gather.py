"""The feature stage's numpy gathers over CSR/CSC arrays equal scipy's fancy-indexing formulas they replaced."""
import numpy as np
import scipy.sparse as sp

from recsys.cooccurrence import CoOccurrence
from recsys.features import _tag_overlap
from recsys.sparse_gather import gather


def _random_binary(rng, shape, density, fmt):
    m = sp.random(*shape, density=density, random_state=rng, format="coo")
    m.data[:] = rng.integers(1, 3, size=m.nnz)   # counts (tags can repeat); the co-occurrence matrix is binary
    return m.asformat(fmt)


def test_gather_lists_each_rows_entries_in_order():
    m = sp.csr_matrix(np.array([[0, 1, 2], [0, 0, 0], [3, 0, 4]], dtype=float))
    pos, owner = gather(m.indptr, np.array([2, 1, 0, 2]))
    assert m.data[pos].tolist() == [3, 4, 1, 2, 3, 4] and owner.tolist() == [0, 0, 2, 2, 3, 3]
    pos, owner = gather(m.indptr, np.array([1]))
    assert len(pos) == len(owner) == 0


def test_tag_overlap_equals_the_scipy_formula():
    rng = np.random.default_rng(0)
    for _ in range(30):
        tags = _random_binary(rng, (300, 40), 0.05, "csr")
        items = rng.integers(0, 300, size=int(rng.integers(1, 120)))
        hist = rng.integers(0, 300, size=int(rng.integers(1, 30)))
        profile = np.asarray(tags[hist].mean(axis=0)).ravel()
        pnorm = float(np.linalg.norm(profile))
        t = tags[items]
        tnorm = np.sqrt(np.asarray(t.multiply(t).sum(axis=1)).ravel())
        with np.errstate(invalid="ignore", divide="ignore"):
            ref = np.where((tnorm > 0) & (pnorm > 0), (t @ profile) / (tnorm * max(pnorm, 1e-12)), np.nan)
        np.testing.assert_allclose(_tag_overlap(tags, items, hist), ref, rtol=1e-12, atol=1e-15)


def test_cooccurrence_equals_the_scipy_formula():
    rng = np.random.default_rng(1)
    for _ in range(30):
        m = _random_binary(rng, (200, 150), 0.04, "csc")
        m.data[:] = 1.0
        co = CoOccurrence(m)
        cand = rng.integers(-1, 150, size=int(rng.integers(1, 100)))
        hist = rng.integers(-1, 150, size=int(rng.integers(1, 30)))
        h = np.unique(hist[hist >= 0])
        ref = np.zeros(len(cand))
        if len(h) == 0:
            ref[:] = np.nan
        else:
            w = co.X[:, h] @ co.inv_sqrt[h]
            k = cand[cand >= 0]
            ref[cand >= 0] = (co.X[:, k].T @ w) * co.inv_sqrt[k] / len(h)
        np.testing.assert_allclose(co.score(cand, hist), ref, rtol=1e-12, atol=1e-15)
