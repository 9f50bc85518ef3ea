import numpy as np

from audit.harm import HarmClassifier, load_davidson, normalise, train_harm_classifier
from audit.harm_model import HarmModel

DATA = "data/hate-speech-davidson/labeled_data.csv"


def test_normalise_strips_tweet_artefacts():
    assert normalise("RT @someone: hello &amp; bye http://t.co/x") == "hello & bye"


def test_artifact_ships_the_minilm_harm_model(artifacts):
    assert isinstance(artifacts.harm, HarmModel)
    assert (artifacts.path / "harm" / "harm_model.json").is_file()


def test_classifier_spares_innocent_titles(artifacts):
    clf = artifacts.harm
    innocent, _ = clf.score(["Kill Bill: Vol. 1 (2003)", "Schindler's List (1993)", "Hotel Rwanda (2004)",
                             "The Killing Fields (1984)", "Toy Story (1995)"])
    assert (innocent < clf.threshold).all()


def test_catalog_flag_rate_is_small(artifacts):
    cat = artifacts.catalog
    assert (cat.harm_score >= artifacts.harm.threshold).mean() <= 0.005


def test_save_load_roundtrip(artifacts, tmp_path):
    artifacts.harm.save(tmp_path / "h")
    again = HarmModel.load(tmp_path / "h", device="cpu")
    texts = ["hello world", "you stupid bitch"]
    np.testing.assert_allclose(again.score(texts)[0], artifacts.harm.score(texts)[0], atol=1e-6)
    assert again.threshold == artifacts.harm.threshold


def test_ngram_fallback_still_trains_saves_and_loads(tmp_path):
    df = load_davidson(DATA).sample(n=3000, random_state=0)
    clf = train_harm_classifier(df, benign_texts=["Toy Story (1995)"] * 50)
    abuse, _ = clf.score(["you stupid bitch ass hoe", "shut up faggot"])
    assert (abuse >= clf.threshold).all()
    clf.save(tmp_path / "h")
    again = HarmClassifier.load(tmp_path / "h")
    assert (again.score(["hello"])[0] == clf.score(["hello"])[0]).all()
