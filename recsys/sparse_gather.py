"""Gathering rows (or columns) of a compressed sparse matrix with plain numpy.

scipy's fancy indexing (`X[rows]`, `X[:, cols]`) builds and validates a new
sparse matrix per call: ~50-100 us of fixed cost each, several per request in
the feature stage, which dominated it for 100-candidate lists. The features
only need, for a few rows, their stored positions; this does that directly on
`indptr`/`indices`/`data` (the arrays are the matrix's own, nothing copied).
"""
from __future__ import annotations

import numpy as np


def gather(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions, owner): the positions in `indices`/`data` of every stored entry of `rows` (a row of a CSR
    matrix, a column of a CSC one), in order, and for each the index into `rows` it belongs to."""
    rows = np.asarray(rows, dtype=np.int64)
    starts = indptr[rows].astype(np.int64)
    lengths = indptr[rows + 1].astype(np.int64) - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    owner = np.repeat(np.arange(len(rows)), lengths)
    # position = start of its row + offset within the row
    offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return starts[owner] + offsets, owner
