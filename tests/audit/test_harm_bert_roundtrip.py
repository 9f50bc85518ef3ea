import numpy as np

from audit.harm_bert import BertHarmClassifier
from tests.audit._harm_bert_util import tiny_trained


def test_trained_tiny_classifier_save_load_gives_identical_probabilities(tiny_bert, tmp_path):
    clf, _, val_texts, _ = tiny_trained(tiny_bert)
    clf.save(tmp_path / "harm_bert")
    assert (tmp_path / "harm_bert" / "model.safetensors").is_file()
    assert not list((tmp_path / "harm_bert").glob("*.bin"))
    again = BertHarmClassifier.load(tmp_path / "harm_bert", device="cpu")
    texts = val_texts[:40] + ["Kill Bill: Vol. 1 (2003)", "you stupid bitch", ""]
    np.testing.assert_array_equal(again.predict_proba(texts), clf.predict_proba(texts))
    assert again.threshold == clf.threshold and again.temperature == clf.temperature
    assert again.score(texts)[1] == clf.score(texts)[1]
