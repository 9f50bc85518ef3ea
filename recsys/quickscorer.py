"""QuickScorer (Lucchese et al., SIGIR 2015) for LightGBM's trees: the same exit leaves as walking each tree,
found feature by feature instead of tree by tree.

Why: the node-by-node walk (recsys/compiled_trees.py) costs about 25 ns per tree and row, most of it
mispredicted branches (each level's direction is data-dependent). In QuickScorer every split whose threshold is
below a row's value of its feature sends the row right ("false node"); the row's bit vector for that tree drops
the leaves of the node's left subtree (one AND). After all features, each tree's exit leaf is the leftmost leaf
still set (Lucchese et al., Theorem 1), i.e. the lowest set bit when bit i is the i-th leaf from the left.

The paper scans, per feature, the list of its splits sorted by threshold up to the row's value: one AND per
false node, at scattered trees (about 2,460 per row on the demo ranker: 158 trees of 31 leaves, 9 features).
Here the scan is done once, at load: a feature's false nodes depend only on how many of its distinct thresholds
lie below the value, so for each count the AND of their masks is one table row of n_trees words (plus a row for
a missing value). A row's value picks its table row by binary search, and the bits take it in one pass over
contiguous words, which the compiler vectorises: 9 passes of 158 words instead of ~2,460 scattered ANDs. The
tables are small (LightGBM bins a feature into at most max_bin values: 0.57 MB for the demo ranker). For a
request's 100 rows this was 2.2x the scanning kernel's speed with the item memo below and 3.7x without it.

Because ANDs commute and repeat harmlessly, features need not be looked up per row when their masks are known:
a feature with one value in every row (a request's user features) is looked up once, and a catalog item's own
features (popularity, rating, age) are resolved once per item at load (`SplitMemo`, 4 bytes per tree and item)
and used for a row whose values equal the memo's exactly.

Exactness is LightGBM's, as in the node walk: values are read per feature by the same rule
(`recsys.tree_values.read_value`: a NaN is 0 unless the feature's missing type is NaN; |value| <= 1e-35 is 0),
a missing value takes each split's default side (a default-right split is a false node: the feature's
missing row), `value <= threshold` goes left (so `threshold < value` is false), and the trees' leaf values are
summed in tree order from 0.0 in double precision. tests/recsys/test_compiled_trees.py checks every path
against `Booster.predict`.

Covers trees of at most 64 leaves whose features each have one missing type: one uint32 per tree and row when
every tree has at most 32 leaves, else one uint64 (twice the table and memo bytes; the validation-chosen rankers
of the quick profile grow 63-leaf trees, which the node walk scored ~8x slower). `quickscorer_tables` returns
None otherwise and the node walk is used.
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

MAX_LEAVES = 64
# Past this size the tables are not built and the node walk is used (LightGBM bins a feature into at most
# max_bin values, 255 by default, so a feature has at most that many distinct thresholds: 9 features x 158 trees
# take 0.57 MB).
MAX_TABLE_BYTES = 256 << 20
# Rows per bit-vector buffer: the parallel kernel's unit of work (one buffer per chunk, not per row).
_CHUNK = 64
_rows = range


@dataclass(frozen=True)
class QuickScorerTables:
    cut: np.ndarray           # float64: each feature's distinct split thresholds, ascending, feature after feature
    cut_start: np.ndarray     # feature k's thresholds: cut[cut_start[k]:cut_start[k+1]]
    row_start: np.ndarray     # feature k's table rows: row_start[k] + j for the j thresholds below the value
                              # (0..n_k), and row_start[k+1] - 1 for a missing value
    table: np.ndarray         # (rows, n_trees) uint32 or uint64 (the word): per tree, the AND of the masks of the
                              # row's false nodes
    leaf_value: np.ndarray    # per tree, its leaves in left-to-right order
    leaf_start: np.ndarray    # tree t's leaves: leaf_start[t]:leaf_start[t+1]


@dataclass(frozen=True)
class SplitMemo:
    """The AND of the masks each of a set of known rows (catalog items) selects over some features."""
    columns: np.ndarray       # int64 feature indices
    values: np.ndarray        # (n_rows, len(columns)) float64: the values the bits were computed for
    bits: np.ndarray          # (n_rows, n_trees), the tables' word


def quickscorer_tables(feature: np.ndarray, threshold: np.ndarray, left: np.ndarray, right: np.ndarray,
                       default_left: np.ndarray, leaf_value: np.ndarray, node_start: np.ndarray,
                       leaf_start: np.ndarray, n_features: int) -> QuickScorerTables | None:
    """The tables for CompiledTrees' flat arrays (children: >= 0 a node of the same tree, < 0 ~leaf index), or
    None when a tree has more than MAX_LEAVES leaves."""
    n_trees = len(node_start) - 1
    widest = int(np.max(np.diff(leaf_start))) if n_trees else 1
    if widest > MAX_LEAVES:
        return None
    word = np.uint32 if widest <= 32 else np.uint64
    full = (1 << (8 * np.dtype(word).itemsize)) - 1
    rows: list[tuple[int, float, int, int, bool]] = []   # (feature, threshold, tree, mask, default_left)
    in_order = np.empty_like(leaf_value)
    for t in range(n_trees):
        base, first_leaf = int(node_start[t]), int(leaf_start[t])
        if node_start[t + 1] == base:            # a single leaf: no splits, its bit 0 is never cleared
            in_order[first_leaf] = leaf_value[first_leaf]
            continue
        position = 0

        def place(child: int) -> tuple[int, int]:
            """The leaf positions [lo, hi) under `child`; appends the splits below it. Depth <= 63."""
            nonlocal position
            if child < 0:
                in_order[first_leaf + position] = leaf_value[first_leaf + ~child]
                position += 1
                return position - 1, position
            j = base + child
            lo, mid = place(int(left[j]))
            _, hi = place(int(right[j]))
            mask = full & ~(((1 << (mid - lo)) - 1) << lo)
            rows.append((int(feature[j]), float(threshold[j]), t, mask, bool(default_left[j])))
            return lo, hi

        place(0)
    return _tables(rows, n_features, n_trees, in_order, np.asarray(leaf_start, np.int64), word)


def _tables(rows: list[tuple[int, float, int, int, bool]], n_features: int, n_trees: int, leaf_value: np.ndarray,
            leaf_start: np.ndarray, word: type = np.uint32) -> QuickScorerTables | None:
    """Per feature, its distinct thresholds u_1 < ... < u_n and n + 2 table rows: row j (0..n) ANDs the masks
    of the splits with threshold <= u_j (a value above exactly j thresholds sends those right), row n + 1 those
    of the splits whose default side is right (a missing value). None past MAX_TABLE_BYTES."""
    feats = np.array([r[0] for r in rows], np.int64)
    thresholds = np.array([r[1] for r in rows], np.float64)
    trees = np.array([r[2] for r in rows], np.int64)
    masks = np.array([r[3] for r in rows], word)
    default_right = np.array([not r[4] for r in rows], np.bool_)
    cuts = [np.unique(thresholds[feats == k]) for k in range(n_features)]
    row_start = np.concatenate([[0], np.cumsum([len(c) + 2 for c in cuts])]).astype(np.int64)
    if int(row_start[-1]) * n_trees * np.dtype(word).itemsize > MAX_TABLE_BYTES:
        return None
    table = np.full((int(row_start[-1]), n_trees), np.iinfo(word).max, word)
    for k, cut in enumerate(cuts):
        mine = feats == k
        block = table[row_start[k]:row_start[k + 1]]
        # each split into the row of its own threshold, then a running AND down the rows
        np.bitwise_and.at(block, (np.searchsorted(cut, thresholds[mine]) + 1, trees[mine]), masks[mine])
        block[:-1] = np.bitwise_and.accumulate(block[:-1], axis=0)
        right = mine & default_right
        np.bitwise_and.at(block[-1], trees[right], masks[right])
    return QuickScorerTables(
        cut=np.concatenate(cuts) if cuts else np.empty(0), cut_start=np.concatenate([[0], np.cumsum(
            [len(c) for c in cuts])]).astype(np.int64), row_start=row_start, table=table, leaf_value=leaf_value,
        leaf_start=leaf_start)


def _and_feature(bits, x, m, k, cut, cut_start, row_start, table):
    """ANDs into `bits` feature k's table row for value x (read as LightGBM reads it at a split of missing type
    m: recsys/tree_values.py): the masks of every split on k that x sends right."""
    x, is_missing = read_value(x, m)
    if is_missing:
        r = row_start[k + 1] - 1
    else:                                   # j = the number of thresholds below x (binary search)
        lo = cut_start[k]
        hi = cut_start[k + 1]
        first = lo
        while lo < hi:
            mid = (lo + hi) >> 1
            if cut[mid] < x:
                lo = mid + 1
            else:
                hi = mid
        r = row_start[k] + lo - first
    for t in range(len(bits)):              # contiguous words: the compiler vectorises this
        bits[t] &= table[r, t]


if numba is not None:
    _and_feature = numba.njit(cache=True, nogil=True, inline="always")(_and_feature)


def _kernel_quickscorer(X, feature_missing, cut, cut_start, row_start, table, leaf_value, leaf_start, keys,
                        memo_columns, memo_values, memo_bits, out):
    """Every row's bits start as all ones ANDed with (a) the table rows of the features whose value is the same
    in every row, computed once (a request's user features), and (b) when keys[i] is a memo row and the row's
    values in memo_columns equal memo_values[keys[i]] exactly, memo_bits[keys[i]] (the catalog item's own
    features, computed at load); only the other features are looked up per row. ANDing a mask twice changes
    nothing and the order of ANDs does not matter, so the exit leaves are exactly those of the plain scan."""
    n_trees = len(leaf_start) - 1
    n_rows, nf = X.shape
    shared = ~np.zeros(n_trees, table.dtype)      # all ones, in the tables' word
    constant = np.zeros(nf, np.bool_)
    if n_rows > 1:
        for k in range(nf):
            x0 = X[0, k]
            same = True
            for i in range(1, n_rows):
                if X[i, k] != x0:               # NaN != NaN: a NaN column is looked up per row
                    same = False
                    break
            if same:
                constant[k] = True
                _and_feature(shared, x0, feature_missing[k], k, cut, cut_start, row_start, table)
    memoised = np.zeros(nf, np.bool_)
    for j in range(len(memo_columns)):
        memoised[memo_columns[j]] = True
    n_memo = len(memo_columns)
    n_keys = memo_values.shape[0]
    for c in _rows((n_rows + _CHUNK - 1) // _CHUNK):
        bits = np.empty(n_trees, table.dtype)
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
                _and_feature(bits, X[i, k], feature_missing[k], k, cut, cut_start, row_start, table)
            acc = 0.0
            for t in range(n_trees):
                acc += leaf_value[leaf_start[t] + trailing_zeros(bits[t])]
            out[i] = acc


def _kernel_memo(values, columns, feature_missing, cut, cut_start, row_start, table, out):
    """out[r] = the AND of the table rows that row r's `values` (of features `columns`) select."""
    for r in range(values.shape[0]):
        out[r] = ~np.zeros(out.shape[1], out.dtype)
        for j in range(len(columns)):
            k = columns[j]
            _and_feature(out[r], values[r, j], feature_missing[k], k, cut, cut_start, row_start, table)
