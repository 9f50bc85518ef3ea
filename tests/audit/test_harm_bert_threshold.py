import numpy as np
from sklearn.metrics import f1_score

from audit.harm_bert import choose_threshold
from tests.audit._harm_bert_util import tiny_trained


def test_threshold_maximises_validation_f1_then_respects_the_benign_cap():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    p = np.clip(0.35 * y + rng.uniform(0, 0.65, 500), 0, 1)
    thr, d = choose_threshold(p, y)
    grid = np.round(np.linspace(0.05, 0.99, 95), 4)
    assert f1_score(y, p >= thr) == max(f1_score(y, p >= t) for t in grid)
    assert d["raised_by"] is None
    benign = {"titles": np.linspace(0, 0.9, 1000)}          # would flag ~many titles at the F1-best threshold
    thr2, d2 = choose_threshold(p, y, benign, max_benign_flag_rate=0.004)
    assert thr2 > thr and d2["raised_by"] == "titles"
    assert (benign["titles"] >= thr2).mean() <= 0.004


def test_calibrate_and_threshold_chooses_on_validation(tiny_bert):
    clf, cal, val_texts, val_labels = tiny_trained(tiny_bert)
    harm = clf.score(val_texts)[0]
    again, _ = choose_threshold(harm, (val_labels != 2).astype(int))
    assert clf.threshold == cal["f1_best_threshold"] == again
