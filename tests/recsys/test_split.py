"""No information from after a split time reaches what is trained or computed before it."""
import numpy as np
import pandas as pd

from recsys.catalog import Catalog, compute_item_stats
from recsys.data import load_ml_latest_small
from recsys.split import build_queries, temporal_cutoffs
from tests.conftest import DATA


def _toy() -> pd.DataFrame:
    rows = []
    for u in range(6):
        for k in range(10):
            rows.append((str(u), str((u + k) % 8), 1.0 + (k % 5), 1000 + 100 * k + u))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def test_queries_have_history_strictly_before_targets():
    ds = load_ml_latest_small(DATA)
    cut = temporal_cutoffs(ds.interactions)
    queries = build_queries(ds.interactions, cut.t_fit, cut.t_val)
    assert len(queries) > 20
    ts = ds.interactions.set_index(["user_id", "item_id"])["timestamp"]
    for q in queries:
        assert max(q.history_times) < q.query_time
        assert not set(q.history) & set(q.targets)
        for item in q.targets:
            t = ts.loc[(q.user_id, item)]
            t = int(np.max(t)) if np.ndim(t) else int(t)
            assert cut.t_fit <= t < cut.t_val  # ranker labels come only from their own period


def test_ranker_training_queries_end_before_validation():
    inter = _toy()
    cut = temporal_cutoffs(inter, 0.5, 0.8)
    train_q = build_queries(inter, cut.t_fit, cut.t_val, min_history=1)
    assert train_q
    for q in train_q:
        assert q.query_time < cut.t_val


def test_item_statistics_ignore_interactions_after_reference_time():
    inter = _toy()
    ids = np.array([str(i) for i in range(8)], dtype=object)
    ref = 1500
    before = compute_item_stats(inter, ids, ref)
    future = pd.concat([inter, pd.DataFrame([("9", "3", 5.0, ref + 1)] * 50, columns=inter.columns)])
    after = compute_item_stats(future, ids, ref)
    np.testing.assert_array_equal(before.log_pop, after.log_pop)
    np.testing.assert_array_equal(before.mean_rating, after.mean_rating)


def test_catalog_text_ignores_tags_after_reference_time():
    items = pd.DataFrame({"item_id": ["1"], "title": ["Heat (1995)"], "genres": ["Crime"], "year": [1995.0]})
    tags = pd.DataFrame({"item_id": ["1", "1"], "tag": ["heist", "future-tag"], "timestamp": [10, 30]})
    inter = pd.DataFrame({"user_id": ["u"], "item_id": ["1"], "rating": [4.0], "timestamp": [5]})
    cat = Catalog.build(items, tags, inter, ref_time=20)
    assert "heist" in cat.texts[0] and "future-tag" not in cat.texts[0]


def test_bert_pairs_use_only_interactions_before_t_fit(artifacts):
    from recsys.interest_training import make_pairs

    ds = load_ml_latest_small(DATA).subset_users(80)
    cut = temporal_cutoffs(ds.interactions)
    late = ds.interactions[ds.interactions["timestamp"] >= cut.t_fit]
    cat = Catalog.build(ds.items, ds.tags, ds.interactions, cut.t_fit)
    pairs = make_pairs(ds.interactions, cat, cut.t_fit, max_pairs=10_000)
    # Dropping every interaction at or after t_fit changes nothing.
    early_only = ds.interactions[ds.interactions["timestamp"] < cut.t_fit]
    pairs2 = make_pairs(early_only, cat, cut.t_fit, max_pairs=10_000)
    assert len(late) > 0
    assert pairs.user_texts == pairs2.user_texts
    np.testing.assert_array_equal(pairs.item_rows, pairs2.item_rows)


def test_ranker_training_queries_at_several_cuts_stay_in_their_period():
    from recsys.ranking_data import ranker_train_queries

    ds = load_ml_latest_small(DATA)
    cut = temporal_cutoffs(ds.interactions)
    qs = ranker_train_queries(ds.interactions, cut)
    single = build_queries(ds.interactions, cut.t_fit, cut.t_val)
    assert len(qs) > len(single)
    assert len({(q.user_id, q.query_time) for q in qs}) == len(qs)
    for q in qs:
        assert max(q.history_times) < q.query_time
        assert cut.t_fit <= q.query_time < cut.t_val
