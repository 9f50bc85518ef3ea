"""audit/harm_threshold.py: the one threshold routine of every harm model. Best validation quality on the
grid, then raised until each benign set is within its allowed flag rate, never above THRESHOLD_CAP; and the
models' wrappers (char-n-gram, BERT, fine-class hateful and lesser) all go through it."""
import numpy as np
import pytest
from sklearn.metrics import f1_score

from audit import harm_threshold
from audit.harm_bert import choose_threshold as bert_choose
from audit.harm_fit import choose_lesser_threshold, choose_thresholds
from audit.harm_threshold import THRESHOLD_CAP, choose_threshold

GRID = np.round(np.linspace(0.05, 0.99, 95), 4)


def _val(seed=1, n=500):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return np.clip(0.35 * y + rng.uniform(0, 0.65, n), 0, 1), y


def test_best_grid_point_without_caps():
    p, y = _val()
    c = choose_threshold(GRID, lambda t: f1_score(y, p >= t))
    f1s = [f1_score(y, p >= t) for t in GRID]
    assert c.threshold == c.best == float(GRID[int(np.argmax(f1s))]) and c.best_quality == max(f1s)
    assert c.raised_by is None


def test_ties_go_to_the_first_grid_point():
    assert choose_threshold(GRID, lambda t: 1.0).threshold == GRID[0]


@pytest.mark.parametrize("rate", [0.0, 0.004, 0.05, 0.5])
def test_raised_until_each_benign_set_is_within_its_rate(rate):
    p, y = _val()
    rng = np.random.default_rng(2)
    sets = {"titles": rng.uniform(0, 0.95, 997), "plots": rng.beta(5, 2, 503), "empty": np.zeros(0)}
    c = choose_threshold(GRID, lambda t: f1_score(y, p >= t), {k: (v, rate) for k, v in sets.items()})
    assert c.threshold >= c.best
    for v in sets.values():
        if len(v):
            assert (v >= c.threshold).mean() <= rate
    if c.raised_by is not None:   # raised just above that set's quantile, not further
        v = sets[c.raised_by]
        assert c.threshold == pytest.approx(float(np.quantile(v, 1 - rate, method="higher")) + 1e-6)


def test_never_above_the_cap_even_when_benign_scores_are_near_one():
    c = choose_threshold(GRID, lambda t: -t, {"saturated": (np.full(100, 0.99999999), 0.0)})
    assert c.threshold == THRESHOLD_CAP == 0.9999 and c.raised_by == "saturated"


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="grid"):
        choose_threshold(np.zeros(0), lambda t: 0.0)
    with pytest.raises(ValueError, match="'titles'"):
        choose_threshold(GRID, lambda t: 0.0, {"titles": (np.ones(3), 1.5)})
    with pytest.raises(ValueError, match="cap"):
        choose_threshold(GRID, lambda t: 0.0, cap=0.0)


def test_every_model_wrapper_goes_through_it(monkeypatch):
    """The BERT, fine-class and lesser-harm wrappers return what the one routine returns (and the
    char-n-gram trainer calls it: it is imported by name in audit.harm)."""
    import audit.harm as ngram

    assert ngram.choose_threshold is choose_threshold
    calls = []
    real = harm_threshold.choose_threshold

    def spy(*a, **kw):
        calls.append(real(*a, **kw))
        return calls[-1]

    monkeypatch.setattr(harm_threshold, "choose_threshold", spy)
    import audit.harm_fit as fit
    monkeypatch.setattr(fit, "choose_threshold", spy)
    p, y = _val()
    benign = {"titles": np.linspace(0, 0.9, 1000)}
    t_bert, d = bert_choose(p, y, benign, max_benign_flag_rate=0.004)
    assert (t_bert, d["raised_by"]) == (calls[-1].threshold, "titles")
    t_fit, d = choose_thresholds([(p, y), (p[::-1], y[::-1])], benign, np.linspace(0, 0.5, 200),
                                 max_benign_flag_rate=0.004, max_identity_fpr=0.02)
    assert t_fit == calls[-1].threshold and d["raised_by"] == calls[-1].raised_by
    t_less, _ = choose_lesser_threshold(p, y, benign, 0.01)
    assert t_less == calls[-1].threshold and len(calls) == 3
