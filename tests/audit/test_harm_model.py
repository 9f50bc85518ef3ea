"""The shipped harm model's contract: score -> (P(hateful), categories), threshold, metrics, save/load without
pickle, the lesser-category rule, explanations. Trained small on a tiny random BERT (real training code)."""
import json

import numpy as np
import pytest

from audit.harm_categories import CATEGORIES, HATEFUL_CATEGORIES, LESSER_CATEGORIES
from audit.harm_model import FINE_CLASSES, HarmModel, load_harm

DATA = "data/hate-speech-davidson/labeled_data.csv"
TEXTS = ["Immigrants are vermin and parasites", "This movie is fucking great", "Toy Story (1995)", ""]


@pytest.fixture(scope="module")
def model(tiny_bert):
    from audit.harm_fit import fit_harm_model

    benign = {"catalog_texts": ["Toy Story (1995). Genres: Animation", "Heat (1995). Genres: Crime"] * 30}
    return fit_harm_model(DATA, encoder_path=tiny_bert, benign=benign, max_rows=300, max_val_rows=300, device="cpu")


def test_score_contract(model):
    p, cats = model.score(TEXTS)
    assert p.shape == (4,) and ((p >= 0) & (p <= 1)).all()
    assert len(cats) == 4 and set(cats) <= set(CATEGORIES)
    assert 0 < model.threshold < 1 and 0 < model.lesser_threshold < 1
    assert model.metrics["n_test_davidson_untouched"] > 2000
    assert model.metrics["suite_val_templates"] > 0 and model.metrics["threshold"] == model.threshold


def test_thresholds_respect_the_benign_cap(model):
    assert model.metrics["threshold_details"]["flag_rate"]["catalog_texts"] <= 0.004 + 1e-9


def test_lesser_category_only_below_the_hate_threshold(model):
    proba = np.zeros((3, len(FINE_CLASSES)))
    proba[0, FINE_CLASSES.index("profanity-only")] = 1.0          # all mass on profanity
    proba[1, FINE_CLASSES.index("threat")] = 1.0                  # all mass on threat
    proba[2, FINE_CLASSES.index("none")] = 1.0
    p_hate, p_less, cats = model.decide(proba)
    assert cats[0] == "profanity-only" and p_hate[0] < p_hate[1]
    assert cats[1] == "threat"
    assert cats[2] in HATEFUL_CATEGORIES and p_less[2] == 0     # benign: a hateful kind, but P under the threshold


def test_save_load_roundtrip_without_pickle(model, tmp_path):
    model.save(tmp_path / "harm")
    files = {p.name for p in (tmp_path / "harm").rglob("*") if p.is_file()}
    assert not {f for f in files if f.endswith((".pkl", ".pickle", ".bin", ".joblib"))}
    again = HarmModel.load(tmp_path / "harm", device="cpu")
    p1, c1 = model.score(TEXTS)
    p2, c2 = again.score(TEXTS)
    np.testing.assert_allclose(p1, p2, atol=1e-6)
    assert c1 == c2 and again.threshold == model.threshold and again.explanations == model.explanations
    assert json.loads((tmp_path / "harm" / "harm_model.json").read_text())["classes"] == list(FINE_CLASSES)


def test_load_harm_prefers_the_new_model_and_rejects_wrong_classes(model, tmp_path):
    model.save(tmp_path / "v" / "harm")
    assert isinstance(load_harm(tmp_path / "v", device="cpu"), HarmModel)
    params = json.loads((tmp_path / "v" / "harm" / "harm_model.json").read_text())
    params["classes"] = ["hate", "none"]
    (tmp_path / "v" / "harm" / "harm_model.json").write_text(json.dumps(params))
    with pytest.raises(ValueError, match="classes"):
        load_harm(tmp_path / "v", device="cpu")


def test_explain_returns_words_of_the_text(model):
    texts = ["they are vermin and must go", "a quiet drama"]
    p, cats = model.score(texts)
    for text, span in zip(texts, model.explain(texts, cats)):
        assert all(w in text for w in span)


def test_lesser_categories_are_the_shared_ones():
    assert set(LESSER_CATEGORIES) == {"harassment", "sexual", "profanity-only"}
