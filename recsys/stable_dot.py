"""Dot products whose value does not depend on a row's position in the batch.

Why: BLAS gemv/gemm kernels treat a block's edge rows with other code than its body, so the same candidate's
float32 cosine (or ALS score) came out a few ulps apart depending on where the frontend put it in the list
(measured with numpy's OpenBLAS: 305 of 8,385 rows differed between a list and its reverse, list sizes
1..129). A LightGBM threshold in that gap, or an exact score tie broken by the interest score, then made the
served order depend on the input order, and the evaluation's order differ from the server's.

Products of float32 values are exact in float64; summing there and rounding once to float32 gives the
correctly rounded value, except within ~1e-16 of a float32 rounding boundary, wherever the row sits.
"""
from __future__ import annotations

import numpy as np


def stable_dot(rows: np.ndarray, other: np.ndarray) -> np.ndarray:
    """`rows @ other` (rows: n x d; other: d, or d x k) as float64 holding float32-rounded values."""
    out = np.asarray(rows, dtype=np.float64) @ np.asarray(other, dtype=np.float64)
    return out.astype(np.float32).astype(np.float64)
