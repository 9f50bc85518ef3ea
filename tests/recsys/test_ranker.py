import numpy as np
import pytest

from recsys.ranker import LambdaRanker


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(400, 3))
    y = (X[:, 0] > 0.5).astype(int) + (X[:, 0] > 1.2)
    return X, y, np.full(20, 20)


def test_estimator_contract():
    r = LambdaRanker(n_estimators=30, learning_rate=0.1, min_iterations=10)
    assert r.n_estimators == 30 and not hasattr(r, "booster_")
    with pytest.raises(TypeError):
        LambdaRanker(30)  # keyword-only
    X, y, g = _data()
    assert r.fit(X, y, g, feature_names=["a", "b", "c"]) is r
    assert r.feature_names_ == ["a", "b", "c"] and r.best_iteration_ >= 1
    assert set(r.feature_importance_) == {"a", "b", "c"}
    assert max(r.feature_importance_, key=r.feature_importance_.get) == "a"


def test_bad_parameter_names_it():
    X, y, g = _data()
    with pytest.raises(ValueError, match="learning_rate must be in .*got 0"):
        LambdaRanker(learning_rate=0).fit(X, y, g, feature_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="num_leaves must be a positive integer, got -1"):
        LambdaRanker(num_leaves=-1).fit(X, y, g, feature_names=["a", "b", "c"])


def test_deterministic_and_save_load_identical(tmp_path):
    X, y, g = _data()
    a = LambdaRanker(n_estimators=40, random_state=3, min_iterations=10).fit(X, y, g, feature_names=["a", "b", "c"])
    b = LambdaRanker(n_estimators=40, random_state=3, min_iterations=10).fit(X, y, g, feature_names=["a", "b", "c"])
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    a.save(tmp_path / "r.txt")
    c = LambdaRanker.load(tmp_path / "r.txt")
    np.testing.assert_allclose(c.predict(X), a.predict(X), rtol=0, atol=1e-12)
    assert c.feature_names_ == ["a", "b", "c"]
