from audit.harm import HarmClassifier, normalise


def test_normalise_strips_tweet_artefacts():
    assert normalise("RT @someone: hello &amp; bye http://t.co/x") == "hello & bye"


def test_classifier_flags_abuse_and_spares_innocent_titles(artifacts):
    clf = artifacts.harm
    abuse, _ = clf.score(["you stupid bitch ass hoe", "shut up faggot"])
    assert (abuse >= clf.threshold).all()
    innocent, _ = clf.score(["Kill Bill: Vol. 1 (2003)", "Schindler's List (1993)", "Hotel Rwanda (2004)",
                             "The Killing Fields (1984)", "Toy Story (1995)"])
    assert (innocent < clf.threshold).all()


def test_catalog_flag_rate_is_small(artifacts):
    cat = artifacts.catalog
    assert (cat.harm_score >= artifacts.harm.threshold).mean() <= 0.005


def test_save_load_roundtrip(artifacts, tmp_path):
    artifacts.harm.save(tmp_path / "h")
    again = HarmClassifier.load(tmp_path / "h")
    texts = ["hello world", "you stupid bitch"]
    assert (again.score(texts)[0] == artifacts.harm.score(texts)[0]).all()
    assert again.threshold == artifacts.harm.threshold
