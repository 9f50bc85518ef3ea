"""The served order of a scored candidate list, one function for the server, the batch job and the tests.

Best score first. Exact ties (LightGBM's piecewise-constant scores make them common among items it cannot
tell apart) fall to the BERT interest score, then to the catalog row, so the order never depends on the
order the frontend happened to send candidates in; only items that are not in the catalog (row -1) and
tie on both keep their input order among themselves.
"""
from __future__ import annotations

import numpy as np


def served_order(scores: np.ndarray, interest: np.ndarray, cand_idx: np.ndarray) -> np.ndarray:
    """Candidate positions, best first."""
    rows = np.where(cand_idx >= 0, cand_idx, np.iinfo(np.int64).max)
    interest = np.where(np.isnan(interest), -np.inf, interest)
    # lexsort is stable and sorts by the last key first
    return np.lexsort((rows, -interest, -np.asarray(scores, dtype=np.float64)))
