import json

import numpy as np


def test_audit_stage_uses_the_bert_classifier_when_the_artifact_has_one(copy_artifacts, tiny_bert, audit_log):
    from audit.harm_bert import BertHarmClassifier
    from audit.policy import load_policy
    from audit.train_harm import train_harm
    from recsys.compose import build_pipeline, load_artifacts

    before = (copy_artifacts / "LATEST").read_text().strip()
    final = train_harm(copy_artifacts, base_model=tiny_bert, max_rows=160, max_val_rows=120, max_steps=4,
                       lr=1e-3, device="cpu", movielens=None)
    assert (copy_artifacts / "LATEST").read_text().strip() == final.name != before
    assert (copy_artifacts / before / "harm").is_dir() and not (copy_artifacts / before / "harm_bert").exists()
    meta = json.loads((final / "metadata.json").read_text())
    assert "harm_bert/model.safetensors" in meta["files"] and meta["derived"][-1]["kind"] == "harm_bert"

    art = load_artifacts(copy_artifacts, device="cpu")
    clf = art.harm
    assert isinstance(clf, BertHarmClassifier)
    assert clf.split["seed"] == 0 and len(clf.split["test_indices"]) > 2000
    # catalog scores were precomputed with the new model
    np.testing.assert_allclose(art.catalog.harm_score[:8], clf.score(list(art.catalog.texts[:8]))[0], atol=1e-6)

    pipe = build_pipeline(art, policy=load_policy(), audit_log=audit_log)
    stage = next(s for s in pipe.stages if s.name == "audit")
    assert stage.harm.clf is clf
    assert stage.harm_threshold == clf.threshold
    text = "a completely new film about two sisters"
    prob, cats = stage.harm.score(np.array([-1]), [text])
    p, c = clf.score([text])
    assert prob[0] == p[0] and cats[0] == c[0]
    assert stage.harm.cache.get(text) == (float(p[0]), c[0])
