"""Feature values on a hand-made catalog."""
import math

import numpy as np
import pandas as pd

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


def test_feature_values_match_their_formulas():
    cat = _catalog()
    fb = FeatureBuilder(cat, CoOccurrence.build(_inter(), cat.item_ids, REF))
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


def test_popularity_groups_split_head_and_long_tail():
    cat = _catalog()
    assert list(cat.stats.group) == ["head", "long_tail", "long_tail"]
