"""Feature values on a hand-made catalog."""
import math

import numpy as np
import pandas as pd

from recsys.als import ImplicitALS, interaction_matrix
from recsys.catalog import Catalog
from recsys.cooccurrence import CoOccurrence
from recsys.features import BASE_FEATURES, FeatureBuilder

DAY = 86400


REF = 365 * DAY * 50  # ~2020


def _inter() -> pd.DataFrame:
    ref = REF
    return pd.DataFrame({
        "user_id": ["u1", "u2", "u3"], "item_id": ["a", "a", "b"], "rating": [4.0, 2.0, 5.0],
        # 'a': one interaction at ref (decay 1), one a half-life earlier (decay 0.5)
        "timestamp": [ref - 1, ref - 365 * DAY - 1, ref - 1],
    })


def _catalog() -> Catalog:
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["A (2000)", "B (2010)", "C"],
                          "genres": ["Action|Comedy", "Drama", ""], "year": [2000.0, 2010.0, np.nan]})
    return Catalog.build(items, pd.DataFrame(columns=["item_id", "tag", "timestamp"]), _inter(), REF)


def _als(cat: Catalog) -> ImplicitALS:
    m, _ = interaction_matrix(_inter(), cat.item_ids)
    return ImplicitALS(factors=2, iterations=3).fit(m)


def _builder(cat: Catalog) -> FeatureBuilder:
    return FeatureBuilder(cat, CoOccurrence.build(_inter(), cat.item_ids, REF), _als(cat))


def test_feature_values_match_their_formulas():
    cat = _catalog()
    fb = _builder(cat)
    assert fb.names == BASE_FEATURES
    X = fb.build(np.array([0, 1, 2, -1]), history_idx=np.array([0]), interest=np.array([0.5, 0.1, 0.2, 0.3]))
    col = {n: j for j, n in enumerate(fb.names)}
    np.testing.assert_allclose(X[:, col["interest"]], [0.5, 0.1, 0.2, 0.3])
    assert math.isclose(X[0, col["item_log_pop"]], math.log1p(1.0 + 0.5), rel_tol=1e-6)
    assert math.isclose(X[1, col["item_log_pop"]], math.log1p(1.0), rel_tol=1e-6)
    assert X[2, col["item_log_pop"]] == 0.0 and X[3, col["item_log_pop"]] == 0.0
    gm = (4.0 + 2.0 + 5.0) / 3
    assert math.isclose(X[0, col["item_mean_rating"]], (6.0 + 10 * gm) / 12)
    assert math.isclose(X[2, col["item_mean_rating"]], gm)  # no ratings: the prior
    assert X[0, col["item_age_years"]] == fb.ref_year - 2000
    assert np.isnan(X[2, col["item_age_years"]]) and np.isnan(X[3, col["item_age_years"]])
    assert np.all(X[:, col["user_log_activity"]] == math.log1p(1))
    # history = item a (Action, Comedy): a overlaps fully, b not at all, c has no genres
    assert math.isclose(X[0, col["genre_overlap"]], 1.0)
    assert X[1, col["genre_overlap"]] == 0.0
    assert np.isnan(X[2, col["genre_overlap"]]) and np.isnan(X[3, col["genre_overlap"]])
    # nobody interacted with both a and b: no co-occurrence; a with itself is cosine 1
    np.testing.assert_allclose(X[:, col["cooccurrence"]], [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(X[:, col["cooc_recent"]], [1.0, 0.0, 0.0, 0.0])
    # ALS: the folded-in user's preference; unknown candidates NaN; per-list rank 0 = best
    als = fb.als
    want = als.scores(als.user_vector(np.array([0])), np.array([0, 1, 2, -1]))
    np.testing.assert_array_equal(X[:, col["als"]], want)
    assert np.isnan(X[3, col["als"]]) and np.isnan(X[3, col["als_rank"]])
    assert X[int(np.nanargmax(want)), col["als_rank"]] == 0.0
    assert X[0, col["als_max"]] == np.float32(1.0) or math.isclose(X[0, col["als_max"]], 1.0, rel_tol=1e-5)
    # history = item a (2000): b is 10 years newer, c and the unknown item have no year
    assert X[1, col["year_gap"]] == 10.0 and X[0, col["year_gap"]] == 0.0
    assert np.isnan(X[2, col["year_gap"]]) and np.isnan(X[3, col["year_gap"]])


def test_recent_cooccurrence_weighs_the_newest_history_items_most():
    # users: x saw a and b; y saw a and c. History most recent first: [b, c] -> a candidate similar to b
    inter = pd.DataFrame({"user_id": ["x", "x", "y", "y", "z"], "item_id": ["a", "b", "a", "c", "d"],
                          "rating": 4.0, "timestamp": [1, 2, 3, 4, 5]})
    items = pd.DataFrame({"item_id": list("abcde"), "title": list("ABCDE"), "genres": "", "year": np.nan})
    cat = Catalog.build(items, pd.DataFrame(columns=["item_id", "tag", "timestamp"]), inter, 10)
    cooc = CoOccurrence.build(inter, cat.item_ids, 10)
    b, c = cat.index["b"], cat.index["c"]
    hist = np.array([b, c, b, -1])   # duplicates and unknown items are skipped
    recent = cooc.score_recent(np.arange(5), hist)
    # a co-occurs with both b and c (cosine 1/sqrt(2) each): any weighting gives the same
    assert math.isclose(recent[cat.index["a"]], 1 / np.sqrt(2))
    # b itself: cosine 1 with b (weight 1), 0 with c (weight 0.5 ** 0.1)
    w = 0.5 ** (1 / 10)
    assert math.isclose(recent[b], 1 / (1 + w))
    assert math.isclose(recent[c], w / (1 + w))
    assert np.isnan(cooc.score_recent(np.arange(5), np.array([-1]))).all()


def test_recent_cooccurrence_kernel_equals_its_numpy_reference():
    from recsys.sparse_kernels import cooccurrence_scores_weighted, cooccurrence_scores_weighted_numpy

    rng = np.random.default_rng(0)
    X = (rng.random((60, 40)) < 0.2).astype(np.float32)
    import scipy.sparse as sp

    m = sp.csc_matrix(X)
    counts = X.sum(axis=0)
    inv = np.where(counts > 0, 1 / np.sqrt(np.maximum(counts, 1)), 0.0)
    for _ in range(20):
        hist = np.unique(rng.choice(40, size=8))
        w = rng.random(len(hist)) + 0.1
        cand = rng.integers(-1, 40, size=15)
        a = cooccurrence_scores_weighted(m.indptr, m.indices, inv, hist, w, cand, 60)
        b = cooccurrence_scores_weighted_numpy(m.indptr, m.indices, inv, hist, w, cand, 60)
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_within_list_rank_ignores_input_order_and_keeps_nan():
    from recsys.features import within_list_rank

    v = np.array([0.2, np.nan, 0.9, 0.2, 0.5])
    r = within_list_rank(v)
    assert list(r[[2, 4, 0, 3]]) == [0.0, 0.2, 0.4, 0.4] and np.isnan(r[1])
    perm = np.array([4, 3, 2, 1, 0])
    np.testing.assert_array_equal(within_list_rank(v[perm]), r[perm])


def test_popularity_groups_split_head_and_long_tail():
    cat = _catalog()
    assert list(cat.stats.group) == ["head", "long_tail", "long_tail"]


def test_interest_max_is_the_closest_recent_history_item():
    from recsys.features import MAX_SIM_HISTORY, max_similarity, recent_history

    items = np.array([[1.0, 0.0], [0.0, 1.0], [np.sqrt(0.5), np.sqrt(0.5)]])
    hist = np.array([[1.0, 0.0], [-1.0, 0.0]])
    np.testing.assert_allclose(max_similarity(items, hist), [1.0, 0.0, np.sqrt(0.5)])
    assert np.isnan(max_similarity(items, hist[:0])).all()
    # most recent first; unknown (-1) history entries are skipped; only the newest MAX_SIM_HISTORY count
    h = np.array([5, -1, 3] + list(range(100, 100 + MAX_SIM_HISTORY)))
    assert list(recent_history(h)) == [5, 3] + list(range(100, 100 + MAX_SIM_HISTORY - 2))


def test_interest_max_lands_in_its_column():
    cat = _catalog()
    fb = _builder(cat)
    X = fb.build(np.array([0, 1]), np.array([0]), np.array([0.5, 0.1]), interest_max=np.array([0.9, np.nan]))
    j = fb.names.index("interest_max")
    assert X[0, j] == 0.9 and np.isnan(X[1, j])


def test_tag_overlap_uses_only_tags_from_before_the_reference_time():
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["A", "B", "C"], "genres": ["Drama"] * 3,
                          "year": [2000.0] * 3})
    tags = pd.DataFrame({"item_id": ["a", "b", "b", "c"], "tag": ["Funny", "funny", "dark", "funny"],
                         "timestamp": [REF - 10, REF - 10, REF - 10, REF + 10]})   # c's tag is from the future
    cat = Catalog.build(items, tags, _inter(), REF)
    fb = _builder(cat)
    X = fb.build(np.array([0, 1, 2]), np.array([0]), np.zeros(3))
    j = fb.names.index("tag_overlap")
    np.testing.assert_allclose(X[:2, j], [1.0, 1 / np.sqrt(2)])
    assert np.isnan(X[2, j])
    # history without tags: NaN for everyone
    X = fb.build(np.array([0, 1]), np.array([2]), np.zeros(2))
    assert np.isnan(X[:, j]).all()


def test_catalog_tags_survive_save_and_load(tmp_path):
    items = pd.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"], "genres": ["Drama"] * 2, "year": [2000.0] * 2})
    tags = pd.DataFrame({"item_id": ["a"], "tag": ["noir"], "timestamp": [REF - 10]})
    cat = Catalog.build(items, tags, _inter(), REF)
    cat.save(tmp_path / "c.parquet")
    assert list(Catalog.load(tmp_path / "c.parquet").tags) == ["noir", ""]


def test_genre_overlap_is_the_masked_cosine_on_the_artifact(artifacts):
    """Column genre_overlap equals the plain formula (cosine of the item's genres with the history's mean
    genres, NaN for an item without genres or unknown), bit for bit, on the real catalog."""
    from recsys.features import FeatureBuilder

    cat = artifacts.catalog
    fb = FeatureBuilder(cat, artifacts.cooccurrence, artifacts.als, artifacts.extra_features)
    col = list(fb.names).index("genre_overlap")
    rng = np.random.default_rng(3)
    for _ in range(30):
        cand = rng.choice(len(cat.item_ids), size=40, replace=False).astype(np.int64)
        cand[:3] = -1
        hist = rng.choice(len(cat.item_ids), size=int(rng.integers(1, 30)), replace=False).astype(np.int64)
        X = fb.build(cand, hist, np.zeros(40), None, interest_max=np.zeros(40))
        profile = cat.genre_matrix[hist].astype(np.float64).mean(axis=0)
        g = cat.genre_matrix[cand[3:]].astype(np.float64)
        gnorm = np.linalg.norm(g, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            want = np.where(gnorm > 0, g @ profile / (gnorm * max(float(np.linalg.norm(profile)), 1e-12)), np.nan)
        assert np.isnan(X[:3, col]).all()
        assert np.array_equal(X[3:, col], want, equal_nan=True)


def test_item_columns_are_the_catalog_statistics_bit_for_bit(artifacts):
    """item_log_pop, item_mean_rating and item_age_years come from one precomputed per-item table (which the
    rank stage's split memo is also built from): the values are the catalog's statistics as before, an
    unknown item gets popularity 0 and NaN for the rest."""
    from datetime import datetime, timezone

    from recsys.features import ITEM_FEATURES, FeatureBuilder

    cat = artifacts.catalog
    fb = FeatureBuilder(cat, artifacts.cooccurrence, artifacts.als, artifacts.extra_features)
    cols = [list(fb.names).index(n) for n in ITEM_FEATURES]
    cand = np.random.default_rng(5).choice(len(cat.item_ids), size=60, replace=False).astype(np.int64)
    cand[:4] = -1
    X = fb.build(cand, cand[10:20], np.zeros(60), None, interest_max=np.zeros(60))
    ki = cand[4:]
    year = datetime.fromtimestamp(cat.stats.ref_time, tz=timezone.utc).year
    want = np.column_stack([cat.stats.log_pop[ki], cat.stats.mean_rating[ki], year - cat.years[ki]])
    assert np.array_equal(X[4:][:, cols], want, equal_nan=True)
    assert (X[:4, cols[0]] == 0).all() and np.isnan(X[:4][:, cols[1:]]).all()
