"""LightGBM's trees as flat arrays, scored by a numba-compiled loop: the same numbers as
`Booster.predict`, faster for request-sized inputs.

Measured on the demo ranker (158 trees of 31 leaves) for a request's 100 rows: LightGBM's predict 0.66 ms,
the node walk in this module 0.40 ms, QuickScorer 0.064 ms, QuickScorer with the rank stage's per-item memo 0.047 ms
(bench/tree_walk.py); every kernel releases the GIL. Why not lleaves or treelite (the compiled predictors the
field uses): lleaves pins llvmlite < 0.44 and compiles for ~16 s per model load; treelite compiles generated C,
so it needs a C compiler at run time. numba compiles these generic loops once (cached on disk), and the model
is data.

Exactness: the walk follows LightGBM's `Tree::NumericalDecision` (a NaN feature is 0 unless the node's
missing type is NaN; missing values take the node's default side; `value <= threshold` goes left), with
values of magnitude <= 1e-35 read as 0 as its dense-row reader does (the rule is recsys/tree_values.py,
shared by every kernel), and sums the trees in order from 0.0 in double precision as `GBDT::PredictRaw`
does. tests/recsys/test_compiled_trees.py checks equality with `Booster.predict` on real models. Models it
does not cover (categorical splits, linear trees, several trees per iteration) make `from_booster` return None
and callers keep LightGBM's predict.

Three kernels. QuickScorer (recsys/quickscorer.py: per feature, a table row of leaf masks per count of
thresholds below the value; a bit vector per tree) serves trees of at most 32 leaves, about 6x the node walk's
speed on a request's rows. The node walks serve
larger trees. LightGBM gives every split on a feature the same missing type (it comes from the feature's
bins), so `_kernel_rowmiss` cleans each row's values and sets its missing flags once per feature, leaving
one flag load and one compare per node (1.3-1.4x the per-node kernel on 30k real feature rows, 1.0-1.3x on
a request's 100; tested equal). The per-node `_kernel` stays for a model where that would not hold.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from recsys.openmp_nesting import nesting_unchanged
from recsys.quickscorer import QuickScorerTables, SplitMemo, _kernel_memo, _kernel_quickscorer, quickscorer_tables
from recsys.tree_values import MISSING_TYPES, read_value

try:  # numba is a dependency; without it (an unusual install) LightGBM's own predict is used
    import numba
except ImportError:  # pragma: no cover - exercised only on installs without numba
    numba = None

# From this many rows (batch chunks), rows are scored on numba's thread pool; fewer (a request) run serially.
PARALLEL_ROWS = 4096


def _kernel(X, feature, threshold, left, right, default_left, missing, leaf_value, node_start, leaf_start, out):
    n_trees = len(node_start) - 1
    for i in _rows(X.shape[0]):
        acc = 0.0
        for t in range(n_trees):
            base = node_start[t]
            if node_start[t + 1] == base:          # a tree that is a single leaf
                acc += leaf_value[leaf_start[t]]
                continue
            node = 0
            while node >= 0:
                j = base + node
                f, is_missing = read_value(X[i, feature[j]], missing[j])
                if is_missing:
                    node = left[j] if default_left[j] else right[j]
                elif f <= threshold[j]:
                    node = left[j]
                else:
                    node = right[j]
            acc += leaf_value[leaf_start[t] + ~node]
        out[i] = acc


def _kernel_rowmiss(X, feature_missing, feature, threshold, left, right, default_left, leaf_value, node_start,
                    leaf_start, out):
    """`_kernel` for models whose missing type is the same at every split on a feature (LightGBM derives it
    from the feature's bins, so in practice always): each row's values are cleaned and its missing flags set
    once per feature instead of at every node, which leaves one flag load and one compare per node. Its tree
    loop repeats `_kernel`'s on purpose: both are the innermost loop of every prediction, kept flat."""
    n_trees = len(node_start) - 1
    nf = X.shape[1]
    for i in _rows(X.shape[0]):
        row = np.empty(nf)
        miss = np.zeros(nf, np.bool_)
        for k in range(nf):
            row[k], miss[k] = read_value(X[i, k], feature_missing[k])
        acc = 0.0
        for t in range(n_trees):
            base = node_start[t]
            if node_start[t + 1] == base:          # a tree that is a single leaf
                acc += leaf_value[leaf_start[t]]
                continue
            node = 0
            while node >= 0:
                j = base + node
                f = feature[j]
                if miss[f]:
                    node = left[j] if default_left[j] else right[j]
                elif row[f] <= threshold[j]:
                    node = left[j]
                else:
                    node = right[j]
            acc += leaf_value[leaf_start[t] + ~node]
        out[i] = acc


_compiled: dict[tuple[str, bool], object] = {}
_rows = range


def _threshold(value: float) -> float:
    """dump_model writes an infinite threshold (the split "any number vs NaN") as +-1e300, where the model
    itself (and its text file) has +-inf: a +inf feature value goes left at +inf, right at 1e300."""
    value = float(value)
    return np.inf if value >= 1e300 else -np.inf if value <= -1e300 else value


def _get_kernel(parallel: bool, kernel_fn=None):
    """The serial kernel (a request's rows; nogil, so concurrent requests score in parallel) or the
    row-parallel one (batch chunks: numba's threads over rows, each row summed exactly as serially), of
    `kernel_fn` (`_kernel` by default, or `_kernel_rowmiss`). cache=True: compiled once per machine, not per
    process."""
    fn0 = _kernel if kernel_fn is None else kernel_fn
    key = (fn0.__name__, parallel)
    kernel = _compiled.get(key)
    if kernel is None:
        if parallel:
            name = f"{fn0.__name__}_parallel"
            fn = type(fn0)(fn0.__code__, {**fn0.__globals__, "_rows": numba.prange}, name)
            fn.__qualname__ = name   # numba's on-disk cache is keyed by it: keep the two apart
            kernel = numba.njit(cache=True, nogil=True, parallel=True)(fn)
        else:
            kernel = numba.njit(cache=True, nogil=True)(fn0)
        _compiled[key] = kernel
    return kernel


@dataclass(frozen=True)
class CompiledTrees:
    feature: np.ndarray        # per internal node (all trees concatenated)
    threshold: np.ndarray
    left: np.ndarray           # child: >= 0 internal node of the same tree, < 0 ~leaf index
    right: np.ndarray
    default_left: np.ndarray
    missing: np.ndarray        # 0 None, 1 Zero, 2 NaN
    leaf_value: np.ndarray     # per leaf (all trees concatenated)
    node_start: np.ndarray     # tree t's nodes: node_start[t]:node_start[t+1]
    leaf_start: np.ndarray
    n_features: int
    feature_missing: np.ndarray | None = None   # missing type per feature when uniform per feature (int8)
    quickscorer: QuickScorerTables | None = None  # when feature_missing is set and trees have <= 32 leaves

    @classmethod
    def from_booster(cls, booster, num_iteration: int | None = None) -> "CompiledTrees | None":
        """The booster's first `num_iteration` iterations, or None when this predictor does not cover it."""
        if numba is None:
            return None
        model = booster.dump_model(num_iteration=num_iteration)
        if model.get("num_tree_per_iteration", 1) != 1:
            return None
        feature, threshold, left, right, default_left, missing, leaf_value = [], [], [], [], [], [], []
        node_start, leaf_start = [0], [0]
        for info in model["tree_info"]:
            tree = info["tree_structure"]
            n_nodes = info["num_leaves"] - 1
            base = len(feature)
            size = base + n_nodes
            for arr, fill in ((feature, 0), (threshold, 0.0), (left, 0), (right, 0), (default_left, False),
                              (missing, 0)):
                arr.extend([fill] * n_nodes)
            leaves = [0.0] * info["num_leaves"]
            stack = [tree]
            while stack:
                node = stack.pop()
                if "split_index" not in node:
                    if "leaf_coeff" in node:
                        return None   # linear trees
                    leaves[node.get("leaf_index", 0)] = float(node["leaf_value"])
                    continue
                if node.get("decision_type") != "<=":
                    return None   # categorical split
                j = base + node["split_index"]
                feature[j] = node["split_feature"]
                threshold[j] = _threshold(node["threshold"])
                default_left[j] = bool(node["default_left"])
                missing[j] = MISSING_TYPES[node["missing_type"]]
                for side, out in (("left_child", left), ("right_child", right)):
                    child = node[side]
                    out[j] = child["split_index"] if "split_index" in child else ~child["leaf_index"]
                    stack.append(child)
            assert len(feature) == size
            leaf_value.extend(leaves)
            node_start.append(size)
            leaf_start.append(len(leaf_value))
        arrays = (np.asarray(feature, np.int32), np.asarray(threshold, np.float64), np.asarray(left, np.int32),
                  np.asarray(right, np.int32), np.asarray(default_left, np.bool_), np.asarray(missing, np.int8),
                  np.asarray(leaf_value, np.float64), np.asarray(node_start, np.int64),
                  np.asarray(leaf_start, np.int64))
        n_features = int(model["max_feature_idx"]) + 1
        feature_missing = _feature_missing(arrays[0], arrays[5], n_features)
        tables = None
        if feature_missing is not None:
            f, th, le, ri, dl, _, lv, ns, ls = arrays
            tables = quickscorer_tables(f, th, le, ri, dl, lv, ns, ls, n_features)
        self = cls(*arrays, n_features, feature_missing, tables)
        self.predict(np.zeros((1, self.n_features)))   # compile (or load the cached machine code) now, not mid-request
        return self

    def memo(self, columns: list[int], values: np.ndarray) -> SplitMemo | None:
        """Precomputed QuickScorer bits for rows known in advance (catalog items) over some of their
        features; `predict(X, keys=..., memo=...)` uses them for a row whose values in `columns` equal
        `values[key]` exactly. None when the model does not take QuickScorer."""
        qs = self.quickscorer
        if qs is None:
            return None
        cols = np.asarray(columns, np.int64)
        if cols.ndim != 1 or not len(cols) or cols.min() < 0 or cols.max() >= self.n_features:
            raise ValueError(f"columns must be feature indices in [0, {self.n_features}); got {columns!r}")
        values = np.ascontiguousarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(cols):
            raise ValueError(f"values must have shape (n, {len(cols)}); got {values.shape}")
        bits = np.empty((len(values), len(qs.leaf_start) - 1), qs.table.dtype)
        _get_kernel(False, _kernel_memo)(values, cols, self.feature_missing, qs.cut, qs.cut_start, qs.row_start,
                                         qs.table, bits)
        return SplitMemo(cols, values, bits)

    def predict(self, X: np.ndarray, *, keys: np.ndarray | None = None, memo: SplitMemo | None = None) -> np.ndarray:
        """Scores of the rows of X. `keys` (one per row) index `memo` (from `memo()`); a key outside it (-1
        for none) or whose memo values differ from the row's is a miss. The numbers are the same with or
        without them, only faster for rows they cover."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must have shape (n, {self.n_features}); got {X.shape}")
        out = np.empty(len(X), dtype=np.float64)
        parallel = len(X) >= PARALLEL_ROWS
        with nesting_unchanged() if parallel else contextlib.nullcontext():
            self._predict(X, keys, memo, parallel, out)
        return out

    def _predict(self, X: np.ndarray, keys: np.ndarray | None, memo: SplitMemo | None, parallel: bool,
                 out: np.ndarray) -> None:
        qs = self.quickscorer
        if qs is not None:
            if memo is None or keys is None:
                keys, memo = _NO_KEYS, _NO_MEMO[qs.table.dtype.itemsize]
            else:
                keys = np.ascontiguousarray(keys, dtype=np.int64)
                if keys.shape != (len(X),):
                    raise ValueError(f"keys must be one memo row per row of X ({len(X)}); got shape {keys.shape}")
            _get_kernel(parallel, _kernel_quickscorer)(X, self.feature_missing, qs.cut, qs.cut_start, qs.row_start,
                                                       qs.table, qs.leaf_value, qs.leaf_start, keys, memo.columns,
                                                       memo.values, memo.bits, out)
        elif self.feature_missing is not None:
            _get_kernel(parallel, _kernel_rowmiss)(X, self.feature_missing, self.feature, self.threshold, self.left,
                                                   self.right, self.default_left, self.leaf_value, self.node_start,
                                                   self.leaf_start, out)
        else:
            _get_kernel(parallel)(X, self.feature, self.threshold, self.left, self.right, self.default_left,
                                  self.missing, self.leaf_value, self.node_start, self.leaf_start, out)


_NO_KEYS = np.empty(0, np.int64)
# per word size (bytes), so that the kernel is compiled for one bits type per table type
_NO_MEMO = {w.itemsize: SplitMemo(np.empty(0, np.int64), np.empty((0, 0), np.float64), np.empty((0, 0), w))
            for w in (np.dtype(np.uint32), np.dtype(np.uint64))}


def _feature_missing(feature: np.ndarray, missing: np.ndarray, n_features: int) -> np.ndarray | None:
    """Each feature's missing type if all its splits share one (features without splits: 0), else None."""
    out = np.zeros(n_features, np.int8)
    for f in range(n_features):
        kinds = np.unique(missing[feature == f])
        if len(kinds) > 1:
            return None
        if len(kinds):
            out[f] = kinds[0]
    return out
