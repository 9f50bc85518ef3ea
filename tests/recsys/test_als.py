"""recsys/als.py: a request's user folded in exactly as implicit's recalculate_user does; plain-array save."""
import numpy as np
import pytest
import scipy.sparse as sp

from recsys.als import ImplicitALS


@pytest.fixture(scope="module")
def fitted():
    m = sp.random(200, 300, density=0.05, format="csr", random_state=0, dtype=np.float32)
    m.data[:] = 1.0
    return m, ImplicitALS(factors=16, alpha=4.0, regularization=0.1, iterations=5).fit(m)


def test_fold_in_equals_implicits_recalculate_user(fitted):
    from implicit.cpu.als import AlternatingLeastSquares

    m, als = fitted
    ref = AlternatingLeastSquares(factors=16, alpha=4.0, regularization=0.1, iterations=5, random_state=0)
    ref.fit(m, show_progress=False)
    ref.item_factors = als.item_factors_.copy()
    ref._YtY = None   # recalculate_user reads YtY of the factors it holds now
    rng = np.random.default_rng(1)
    for _ in range(5):
        h = rng.choice(300, size=12, replace=False)
        row = sp.csr_matrix((np.ones(len(h), np.float32), (np.zeros(len(h), int), h)), shape=(1, 300))
        expected = ref.recalculate_user(0, row)
        got = als.user_vector(np.r_[h, -1, h[:3]])   # unknown rows skipped, duplicates count once
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_scores_and_similarity_handle_unknown_items_and_users(fitted):
    _, als = fitted
    u = als.user_vector(np.array([1, 2, 3]))
    s = als.scores(u, np.array([5, -1, 7]))
    assert np.isnan(s[1]) and np.isfinite(s[[0, 2]]).all()
    assert np.isnan(als.scores(als.user_vector(np.array([-1, -1])), np.array([5]))).all()
    sim = als.max_similarity(np.array([5, -1]), np.array([5, 9]))
    assert sim[0] == pytest.approx(1.0, abs=1e-5) and np.isnan(sim[1])
    assert np.isnan(als.max_similarity(np.array([5]), np.array([-1]))).all()


def test_save_and_load_keep_the_numbers_and_need_no_pickle(fitted, tmp_path):
    _, als = fitted
    als.save(tmp_path / "als.npz")
    back = ImplicitALS.load(tmp_path / "als.npz")
    np.testing.assert_array_equal(back.item_factors_, als.item_factors_)
    assert (back.factors, back.alpha, back.regularization) == (16, 4.0, 0.1)
    h = np.array([4, 8, 15])
    np.testing.assert_allclose(back.user_vector(h), als.user_vector(h))


@pytest.mark.parametrize("bad", [{"factors": 0}, {"alpha": -1.0}, {"regularization": 0}, {"iterations": 1.5}])
def test_bad_parameters_name_themselves(bad):
    m = sp.csr_matrix(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match=next(iter(bad))):
        ImplicitALS(**bad).fit(m)
