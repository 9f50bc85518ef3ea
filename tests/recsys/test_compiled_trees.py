"""The compiled tree predictor gives exactly LightGBM's scores: NaN and zero handling of every missing
type, default directions, single-leaf trees, the real ranker on real features; and it steps aside for
models it does not cover."""
import lightgbm as lgb
import numpy as np
import pytest

from recsys.compiled_trees import CompiledTrees


def _data(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    X[rng.random((n, 6)) < 0.15] = np.nan
    X[rng.random((n, 6)) < 0.15] = 0.0
    X[:, 5] = rng.integers(0, 4, n)          # a few distinct values, thresholds between them
    y = np.nan_to_num(X[:, 0]) + 0.5 * (X[:, 1] > 0) - np.isnan(X[:, 2]) + (X[:, 5] == 0) + rng.normal(0, .1, n)
    return X, y


def _queries(X: np.ndarray, seed: int = 1) -> np.ndarray:
    """Inputs that hit every branch kind: NaN, exact zeros, tiny values LightGBM reads as zero, +-inf,
    values equal to thresholds."""
    rng = np.random.default_rng(seed)
    Q = X[rng.integers(0, len(X), 4000)].copy()
    pick = rng.random(Q.shape)
    Q[pick < 0.05] = np.nan
    Q[(pick >= 0.05) & (pick < 0.1)] = 1e-40
    Q[(pick >= 0.1) & (pick < 0.12)] = -1e-36
    Q[(pick >= 0.12) & (pick < 0.14)] = np.inf
    Q[(pick >= 0.14) & (pick < 0.15)] = -np.inf
    return Q


@pytest.mark.parametrize("params", [
    {},                                     # missing type NaN where NaN was seen, None elsewhere
    {"zero_as_missing": True},              # missing type Zero
    {"use_missing": False},                 # missing type None: NaN read as 0
])
def test_equals_lightgbm_for_each_missing_type(params):
    X, y = _data()
    booster = lgb.train({"objective": "regression", "num_leaves": 15, "verbose": -1, "min_data_in_leaf": 5,
                         **params}, lgb.Dataset(X, y), num_boost_round=40)
    ct = CompiledTrees.from_booster(booster)
    assert ct is not None
    Q = _queries(X)
    np.testing.assert_array_equal(ct.predict(Q), booster.predict(Q))
    thresholds = np.unique(ct.threshold)
    at = np.tile(thresholds[:, None], (1, X.shape[1]))[: 500]   # exactly on thresholds: `<=` goes left
    np.testing.assert_array_equal(ct.predict(at), booster.predict(at))


def test_respects_num_iteration_and_single_leaf_trees():
    X, y = _data()
    # min_data_in_leaf larger than the data: every tree is one leaf
    flat = lgb.train({"objective": "regression", "min_data_in_leaf": 10_000, "verbose": -1},
                     lgb.Dataset(X, y), num_boost_round=5)
    ct = CompiledTrees.from_booster(flat)
    np.testing.assert_array_equal(ct.predict(X[:50]), flat.predict(X[:50]))
    booster = lgb.train({"objective": "regression", "verbose": -1}, lgb.Dataset(X, y), num_boost_round=30)
    part = CompiledTrees.from_booster(booster, num_iteration=12)
    np.testing.assert_array_equal(part.predict(X[:200]), booster.predict(X[:200], num_iteration=12))


def test_the_artifact_ranker_scores_real_features_exactly(artifacts, pipeline, known_items):
    """LambdaRanker.predict goes through the compiled trees; it must equal the booster's own predict."""
    from recsys.domain import Candidate, RankRequest, UserContext

    user = next(iter(artifacts.users))
    ctx = pipeline.run(RankRequest(UserContext(user), tuple(Candidate(i) for i in known_items[:60]), top_k=10))
    ranker = artifacts.ranker
    assert ranker.compiled_ is not None and ranker.compiled_.quickscorer is not None
    want = ranker.booster_.predict(ctx.X, num_iteration=ranker.best_iteration_)
    np.testing.assert_array_equal(ranker.predict(ctx.X), want)
    np.testing.assert_array_equal(ctx.ranker_scores, want)


def test_shape_is_checked():
    X, y = _data(500)
    ct = CompiledTrees.from_booster(lgb.train({"objective": "regression", "verbose": -1}, lgb.Dataset(X, y),
                                              num_boost_round=3))
    with pytest.raises(ValueError, match=r"shape \(n, 6\)"):
        ct.predict(np.zeros((3, 5)))


def test_models_it_does_not_cover_fall_back_to_lightgbm():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(0, 8, 2000), rng.normal(size=2000)])
    y = (X[:, 0] % 3 == 0) + X[:, 1]
    cat = lgb.train({"objective": "regression", "verbose": -1, "min_data_per_group": 5, "cat_smooth": 1},
                    lgb.Dataset(X, y, categorical_feature=[0]), num_boost_round=10)
    assert CompiledTrees.from_booster(cat) is None
    linear = lgb.train({"objective": "regression", "verbose": -1, "linear_tree": True}, lgb.Dataset(X[:, 1:], y),
                       num_boost_round=5)
    assert CompiledTrees.from_booster(linear) is None


def test_batch_sized_inputs_take_the_parallel_kernel_with_the_same_scores():
    import dataclasses

    from recsys import compiled_trees

    X, y = _data()
    booster = lgb.train({"objective": "regression", "verbose": -1}, lgb.Dataset(X, y), num_boost_round=25)
    ct = CompiledTrees.from_booster(booster)
    big = np.tile(_queries(X), (2, 1))
    assert len(big) >= compiled_trees.PARALLEL_ROWS
    np.testing.assert_array_equal(ct.predict(big), booster.predict(big))
    assert ("_kernel_quickscorer", True) in compiled_trees._compiled   # the parallel kernel was the one used
    node_walk = dataclasses.replace(ct, quickscorer=None)
    np.testing.assert_array_equal(node_walk.predict(big), booster.predict(big))
    assert ("_kernel_rowmiss", True) in compiled_trees._compiled


def test_the_per_node_kernel_serves_models_whose_missing_type_varies_within_a_feature():
    """LightGBM gives every split on a feature the same missing type, so `from_booster` always gets the
    per-row kernel; the general per-node kernel stays for a model where that would not hold, and agrees."""
    import dataclasses

    from recsys.compiled_trees import PARALLEL_ROWS, _feature_missing

    X, y = _data()
    booster = lgb.train({"objective": "regression", "verbose": -1, "zero_as_missing": True}, lgb.Dataset(X, y),
                        num_boost_round=25)
    ct = CompiledTrees.from_booster(booster)
    assert ct.feature_missing is not None
    general = dataclasses.replace(ct, feature_missing=None, quickscorer=None)
    for rows in (_queries(X), np.tile(_queries(X), (PARALLEL_ROWS // len(_queries(X)) + 1, 1))):
        np.testing.assert_array_equal(general.predict(rows), booster.predict(rows))
        np.testing.assert_array_equal(ct.predict(rows), booster.predict(rows))
    counts = np.bincount(ct.feature, minlength=ct.n_features)
    f = int(np.argmax(counts))
    assert counts[f] > 1
    mixed = ct.missing.copy()
    first = int(np.flatnonzero(ct.feature == f)[0])
    mixed[first] = (mixed[first] + 1) % 3
    assert _feature_missing(ct.feature, mixed, ct.n_features) is None


@pytest.mark.parametrize("params", [
    {},
    {"zero_as_missing": True},
    {"use_missing": False},
])
def test_quickscorer_and_the_node_walk_agree_with_lightgbm(params):
    """Trees of up to 64 leaves take QuickScorer (recsys/quickscorer.py: 32-bit words up to 32 leaves, 64-bit
    words past that), larger ones the node walk; each is checked against LightGBM on inputs that hit every
    missing-value and threshold case, and QuickScorer's tables have a row per distinct threshold of a feature
    (plus none and missing), each with more false nodes."""
    import dataclasses

    X, y = _data()
    Q = np.vstack([_queries(X), np.tile(np.unique(X[~np.isnan(X)])[:300, None], (1, X.shape[1]))])
    for leaves, word in ((32, np.uint32), (33, np.uint64), (64, np.uint64), (65, None)):
        uses_quickscorer = word is not None
        booster = lgb.train({"objective": "regression", "num_leaves": leaves, "verbose": -1, "min_data_in_leaf": 3,
                             **params}, lgb.Dataset(X, y), num_boost_round=30)
        ct = CompiledTrees.from_booster(booster)
        assert (ct.quickscorer is not None) is uses_quickscorer
        np.testing.assert_array_equal(ct.predict(Q), booster.predict(Q))
        if uses_quickscorer:
            assert max(np.diff(ct.leaf_start)) == leaves     # the widest bit vector is used
            qs = ct.quickscorer
            assert qs.table.dtype == word
            for k in range(ct.n_features):   # a table row per count of thresholds below a value, and one missing
                cut = qs.cut[qs.cut_start[k]:qs.cut_start[k + 1]]
                np.testing.assert_array_equal(cut, np.unique(ct.threshold[ct.feature == k]))
                rows = qs.table[qs.row_start[k]:qs.row_start[k + 1]]
                assert len(rows) == len(cut) + 2 and (rows[0] == np.iinfo(word).max).all()
                assert ((rows[1:-1] & rows[:-2]) == rows[1:-1]).all()   # a larger value: more false nodes
            np.testing.assert_array_equal(dataclasses.replace(ct, quickscorer=None).predict(Q), booster.predict(Q))


@pytest.mark.parametrize("leaves", [31, 63])   # 32-bit and 64-bit words
def test_item_memo_gives_the_same_scores_whatever_it_covers(leaves):
    """Precomputed splits for known rows (the rank stage's per-item memo): used only where a row's values
    equal the memo's exactly, otherwise the row is scanned in full; columns equal in every row are resolved
    once. Checked against LightGBM with hits, stale memo values, NaN, keys of -1, constant columns, one row,
    and batch-sized (parallel) inputs."""
    X, y = _data()
    booster = lgb.train({"objective": "regression", "verbose": -1, "num_leaves": leaves}, lgb.Dataset(X, y),
                        num_boost_round=40)
    ct = CompiledTrees.from_booster(booster)
    assert ct.quickscorer is not None and max(np.diff(ct.leaf_start)) == leaves
    rng = np.random.default_rng(3)
    items = _queries(X)[:500]                       # the "catalog": rows whose columns 1, 3 and 5 are known
    cols = [1, 3, 5]
    memo = ct.memo(cols, items[:, cols])
    keys = rng.integers(-1, len(items), 3000)
    Q = _queries(X, seed=4)[:3000]
    hit = keys >= 0
    Q[np.ix_(np.flatnonzero(hit), cols)] = items[keys[hit]][:, cols]
    stale = rng.random(len(Q)) < 0.1                # memo values that no longer match the row: not used
    Q[stale & hit, 3] += 0.5
    Q[:, 4] = 0.25                                  # a column equal in every row
    want = booster.predict(Q)
    np.testing.assert_array_equal(ct.predict(Q, keys=keys, memo=memo), want)
    np.testing.assert_array_equal(ct.predict(Q), want)
    for i in (0, 1, 2):                             # single rows: every column is "constant"
        np.testing.assert_array_equal(ct.predict(Q[i:i + 1], keys=keys[i:i + 1], memo=memo), want[i:i + 1])
    big = np.tile(Q, (2, 1))
    np.testing.assert_array_equal(ct.predict(big, keys=np.tile(keys, 2), memo=memo), np.tile(want, 2))
    with pytest.raises(ValueError, match="keys must be"):
        ct.predict(Q, keys=keys[:10], memo=memo)
    outside = np.where(hit, len(items) + keys, -5)          # keys past the memo or below -1: misses
    np.testing.assert_array_equal(ct.predict(Q, keys=outside, memo=memo), want)
    with pytest.raises(ValueError, match="columns must be"):
        ct.memo([9], items[:, :1])
    with pytest.raises(ValueError, match="values must have shape"):
        ct.memo(cols, items[:, :2])


def test_the_rank_stage_memo_covers_every_catalog_candidate(artifacts, pipeline, known_items):
    """The rank stage's memo holds each catalog item's own features exactly as the feature stage builds
    them, so every catalog candidate takes it (and its scores are LightGBM's: the test above)."""
    from recsys.domain import Candidate, RankRequest, UserContext
    from recsys.features import ITEM_FEATURES

    stage = next(s for s in pipeline.stages if s.name == "rank")
    memo = stage.item_memo
    n_trees = len(artifacts.ranker.compiled_.node_start) - 1
    assert memo is not None and memo.bits.shape == (len(artifacts.catalog), n_trees)
    assert [artifacts.ranker.feature_names_[c] for c in memo.columns] == list(ITEM_FEATURES)
    user = next(iter(artifacts.users))
    ctx = pipeline.run(RankRequest(UserContext(user), tuple(Candidate(i) for i in known_items[:60]), top_k=10))
    assert (ctx.cand_idx >= 0).all()
    np.testing.assert_array_equal(ctx.X[:, memo.columns], memo.values[ctx.cand_idx])
    ranker = artifacts.ranker
    want = ranker.booster_.predict(ctx.X, num_iteration=ranker.best_iteration_)
    np.testing.assert_array_equal(ctx.ranker_scores, want)
