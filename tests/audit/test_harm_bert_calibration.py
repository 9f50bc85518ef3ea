import numpy as np

from audit.harm_bert import fit_temperature, nll, softmax
from tests.audit._harm_bert_util import tiny_trained


def test_probabilities_sum_to_one_and_use_the_fitted_temperature(tiny_bert):
    clf, cal, val_texts, _ = tiny_trained(tiny_bert)
    texts = val_texts[:30]
    p = clf.predict_proba(texts)
    assert p.shape == (30, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    assert cal["temperature"] == clf.temperature and clf.temperature != 1.0
    np.testing.assert_allclose(p, softmax(clf.logits(texts), clf.temperature))
    harm, cats = clf.score(texts)
    np.testing.assert_allclose(harm, p[:, 0] + p[:, 1])
    assert set(cats) <= {"hate", "offensive"}
    assert cal["val_nll_calibrated"] <= cal["val_nll_raw"] + 1e-9   # the fit can only lower validation NLL


def test_fit_temperature_recovers_an_overconfident_scale():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(4000, 3)) * 1.5
    y = np.array([rng.choice(3, p=row) for row in softmax(true)])
    T = fit_temperature(true * 3.0, y)        # logits 3x too confident -> T close to 3
    assert 2.6 < T < 3.4
    assert nll(true * 3.0, y, T) < nll(true * 3.0, y)
