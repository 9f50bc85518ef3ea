"""`audit.train_harm` retrains the harm model as a new derived version that the audit stage then uses."""
import json

import numpy as np


def test_train_harm_publishes_a_new_version_the_stage_uses(copy_artifacts, tiny_bert, audit_log):
    from audit.harm_model import HarmModel
    from audit.policy import load_policy
    from audit.train_harm import train_harm
    from recsys.compose import load_artifacts
    from recsys.compose import build_pipeline

    before = (copy_artifacts / "LATEST").read_text().strip()
    final = train_harm(copy_artifacts, base_model=tiny_bert, profile="quick", max_rows=300, device="cpu",
                       log=lambda _m: None)
    assert (copy_artifacts / "LATEST").read_text().strip() == final.name != before
    meta = json.loads((final / "metadata.json").read_text())
    assert "harm/harm_model.json" in meta["files"] and meta["derived"][-1]["kind"] == "harm"
    assert meta["metrics"]["harm"]["encoder"] == str(tiny_bert)

    art = load_artifacts(copy_artifacts, device="cpu")
    assert isinstance(art.harm, HarmModel) and art.harm.metrics["n_train_davidson"] == 300
    p, c = art.harm.score(list(art.catalog.texts[:8]))
    np.testing.assert_allclose(art.catalog.harm_score[:8], p, atol=1e-6)
    assert list(art.catalog.harm_category[:8]) == c
    stage = next(s for s in build_pipeline(art, policy=load_policy(), audit_log=audit_log).stages
                 if s.name == "audit")
    assert stage.harm.clf is art.harm and stage.harm_threshold == art.harm.threshold
