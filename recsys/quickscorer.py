"""QuickScorer (Lucchese et al., SIGIR 2015) for LightGBM's trees: the same exit leaves as walking each tree,
found feature by feature instead of tree by tree.

Why: the node-by-node walk (recsys/compiled_trees.py) costs about 25 ns per tree and row, most of it
mispredicted branches (each level's direction is data-dependent). QuickScorer turns the ensemble into, per
feature, one list of all its splits sorted by threshold. For a row, every split whose threshold is below the
feature's value sends the row right ("false node"); the row's bit vector for that tree drops the leaves of the
node's left subtree (one AND). After all features, each tree's exit leaf is the leftmost leaf still set (Lucchese
et al., Theorem 1), i.e. the lowest set bit when bit i is the i-th leaf from the left. The split list is scanned
in order and the end is found by binary search, so the inner loop has no data-dependent branch. Measured on the
demo ranker (158 trees of 31 leaves, 9 features, about 2,460 false nodes per row) for a request's 100 rows: about
2x the node walk's speed (bench/tree_walk.py).

Because ANDs commute and repeat harmlessly, features need not be scanned per row when their masks are known:
a feature with one value in every row (a request's user features) is scanned once, and a catalog item's own
features (popularity, rating, age: 57 % of the false nodes) are scanned once per item at load (`SplitMemo`,
4 bytes per tree and item) and used for a row whose values equal the memo's exactly. With both, a request's 100
rows take about 0.45x the plain QuickScorer's time.

Exactness is LightGBM's, as in the node walk: values are read per feature by the same rule
(`recsys.tree_values.read_value`: a NaN is 0 unless the feature's missing type is NaN; |value| <= 1e-35 is 0),
a missing value takes each split's default side (a default-right split is a false node, kept in a second list
per feature), `value <= threshold` goes left (so `threshold < value` is false), and the trees' leaf values are
summed in tree order from 0.0 in double precision. tests/recsys/test_compiled_trees.py checks every path
against `Booster.predict`.

Covers trees of at most 32 leaves (one uint32 per tree and row) whose features each have one missing type;
`quickscorer_tables` returns None otherwise and the node walk is used.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.tree_values import read_value

try:  # numba is a dependency; compiled_trees does not build these tables without it
    import numba
    from numba.cpython.unsafe.numbers import trailing_zeros
except ImportError:  # pragma: no cover - exercised only on installs without numba
    numba = trailing_zeros = None

MAX_LEAVES = 32
# Rows per bit-vector buffer: the parallel kernel's unit of work (one buffer per chunk, not per row).
_CHUNK = 64
_rows = range


@dataclass(frozen=True)
class QuickScorerTables:
    threshold: np.ndarray     # every split, grouped by feature, ascending threshold within a feature
    split: np.ndarray         # uint64 per split: tree index << 32 | mask (0 bits: the node's left-subtree leaves)
    feature_start: np.ndarray  # feature k's splits: feature_start[k]:feature_start[k+1]
    default_right: np.ndarray  # uint64 as `split`, the splits whose default (missing) side is right, by feature
    default_start: np.ndarray
    leaf_value: np.ndarray    # per tree, its leaves in left-to-right order
    leaf_start: np.ndarray    # tree t's leaves: leaf_start[t]:leaf_start[t+1]


@dataclass(frozen=True)
class SplitMemo:
    """The AND of the masks each of a set of known rows (catalog items) selects over some features."""
    columns: np.ndarray       # int64 feature indices
    values: np.ndarray        # (n_rows, len(columns)) float64: the values the bits were computed for
    bits: np.ndarray          # (n_rows, n_trees) uint32


def quickscorer_tables(feature: np.ndarray, threshold: np.ndarray, left: np.ndarray, right: np.ndarray,
                       default_left: np.ndarray, leaf_value: np.ndarray, node_start: np.ndarray,
                       leaf_start: np.ndarray, n_features: int) -> QuickScorerTables | None:
    """The tables for CompiledTrees' flat arrays (children: >= 0 a node of the same tree, < 0 ~leaf index), or
    None when a tree has more than MAX_LEAVES leaves."""
    n_trees = len(node_start) - 1
    if n_trees and int(np.max(np.diff(leaf_start))) > MAX_LEAVES:
        return None
    rows: list[tuple[int, float, int, int, bool]] = []   # (feature, threshold, tree, mask, default_left)
    in_order = np.empty_like(leaf_value)
    for t in range(n_trees):
        base, first_leaf = int(node_start[t]), int(leaf_start[t])
        if node_start[t + 1] == base:            # a single leaf: no splits, its bit 0 is never cleared
            in_order[first_leaf] = leaf_value[first_leaf]
            continue
        position = 0

        def place(child: int) -> tuple[int, int]:
            """The leaf positions [lo, hi) under `child`; appends the splits below it. Depth <= 31."""
            nonlocal position
            if child < 0:
                in_order[first_leaf + position] = leaf_value[first_leaf + ~child]
                position += 1
                return position - 1, position
            j = base + child
            lo, mid = place(int(left[j]))
            _, hi = place(int(right[j]))
            mask = 0xFFFFFFFF & ~(((1 << (mid - lo)) - 1) << lo)
            rows.append((int(feature[j]), float(threshold[j]), t, mask, bool(default_left[j])))
            return lo, hi

        place(0)
    rows.sort(key=lambda r: (r[0], r[1]))
    feats = np.array([r[0] for r in rows], np.int64)
    packed = np.array([(r[2] << 32) | r[3] for r in rows], np.uint64)
    right_default = [i for i, r in enumerate(rows) if not r[4]]
    return QuickScorerTables(
        threshold=np.array([r[1] for r in rows], np.float64), split=packed,
        feature_start=np.searchsorted(feats, np.arange(n_features + 1)).astype(np.int64),
        default_right=packed[right_default],
        default_start=np.searchsorted(feats[right_default], np.arange(n_features + 1)).astype(np.int64),
        leaf_value=in_order, leaf_start=np.asarray(leaf_start, np.int64))


def _and_false_splits(bits, x, m, k, threshold, split, feature_start, default_right, default_start):
    """ANDs into `bits` the masks of feature k's splits that value x sends right (read as LightGBM reads it at
    a split of missing type m: recsys/tree_values.py)."""
    x, is_missing = read_value(x, m)
    if is_missing:
        src = default_right
        p = default_start[k]
        end = default_start[k + 1]
    else:                                   # the splits with threshold < x: a prefix of the list
        src = split
        p = feature_start[k]
        end = p
        hi = feature_start[k + 1]
        while end < hi:
            mid = (end + hi) >> 1
            if threshold[mid] < x:
                end = mid + 1
            else:
                hi = mid
    for q in range(p, end):
        w = src[q]
        bits[np.uint32(w >> np.uint64(32))] &= np.uint32(w & np.uint64(0xFFFFFFFF))


if numba is not None:
    _and_false_splits = numba.njit(cache=True, nogil=True)(_and_false_splits)


def _kernel_quickscorer(X, feature_missing, threshold, split, feature_start, default_right, default_start,
                        leaf_value, leaf_start, keys, memo_columns, memo_values, memo_bits, out):
    """Every row's bits start as all ones ANDed with (a) the masks of the features whose value is the same in
    every row, computed once (a request's user features), and (b) when keys[i] is a memo row and the row's values
    in memo_columns equal memo_values[keys[i]] exactly, memo_bits[keys[i]] (the catalog item's own features,
    computed at load); only the other features are scanned per row. ANDing a mask twice changes nothing and
    the order of ANDs does not matter, so the exit leaves are exactly those of the plain scan."""
    n_trees = len(leaf_start) - 1
    n_rows, nf = X.shape
    shared = np.full(n_trees, np.uint32(0xFFFFFFFF))
    constant = np.zeros(nf, np.bool_)
    if n_rows > 1:
        for k in range(nf):
            x0 = X[0, k]
            same = True
            for i in range(1, n_rows):
                if X[i, k] != x0:               # NaN != NaN: a NaN column is scanned per row
                    same = False
                    break
            if same:
                constant[k] = True
                _and_false_splits(shared, x0, feature_missing[k], k, threshold, split, feature_start,
                                  default_right, default_start)
    memoised = np.zeros(nf, np.bool_)
    for j in range(len(memo_columns)):
        memoised[memo_columns[j]] = True
    n_memo = len(memo_columns)
    n_keys = memo_values.shape[0]
    for c in _rows((n_rows + _CHUNK - 1) // _CHUNK):
        bits = np.empty(n_trees, np.uint32)
        for i in range(c * _CHUNK, min(n_rows, (c + 1) * _CHUNK)):
            key = keys[i] if len(keys) else -1
            hit = 0 <= key < n_keys
            for j in range(n_memo if hit else 0):
                if X[i, memo_columns[j]] != memo_values[key, j]:
                    hit = False
                    break
            if hit:
                for t in range(n_trees):
                    bits[t] = shared[t] & memo_bits[key, t]
            else:
                bits[:] = shared
            for k in range(nf):
                if constant[k] or (hit and memoised[k]):
                    continue
                _and_false_splits(bits, X[i, k], feature_missing[k], k, threshold, split, feature_start,
                                  default_right, default_start)
            acc = 0.0
            for t in range(n_trees):
                acc += leaf_value[leaf_start[t] + trailing_zeros(bits[t])]
            out[i] = acc


def _kernel_memo(values, columns, feature_missing, threshold, split, feature_start, default_right, default_start,
                 n_trees, out):
    """out[r] = the AND of the masks that row r's `values` (of features `columns`) select."""
    for r in range(values.shape[0]):
        for t in range(n_trees):
            out[r, t] = np.uint32(0xFFFFFFFF)
        for j in range(len(columns)):
            k = columns[j]
            _and_false_splits(out[r], values[r, j], feature_missing[k], k, threshold, split, feature_start,
                              default_right, default_start)
