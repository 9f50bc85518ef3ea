"""The feature stage keeps each history's ALS factor: the same features with and without the cache."""
import numpy as np

from recsys.features import FeatureBuilder
from recsys.lru import LRUCache


def test_cached_user_factors_give_the_same_features(artifacts):
    cache = LRUCache(100)
    plain = FeatureBuilder(artifacts.catalog, artifacts.cooccurrence, artifacts.als)
    cached = FeatureBuilder(artifacts.catalog, artifacts.cooccurrence, artifacts.als, user_factor_cache=cache)
    rng = np.random.default_rng(0)
    n = len(artifacts.catalog)
    hists = [rng.choice(n, size=12, replace=False) for _ in range(3)] + [np.array([-1, -1])]
    for _ in range(2):
        for h in hists:
            cand = rng.choice(n, size=30, replace=False)
            a = plain.build(cand, h, np.zeros(30))
            b = cached.build(cand, h, np.zeros(30))
            assert np.array_equal(a, b, equal_nan=True)
    assert cache.misses == len(hists) and cache.hits == len(hists)   # the history without a known item too
