"""Integration: fine-tune the real shipped all-MiniLM-L6-v2 briefly and serve from it."""
import json

import pytest

from tests.conftest import DATA


@pytest.mark.slow
def test_real_minilm_fine_tunes_and_ranks(tmp_path):
    from audit.log import AuditLog
    from audit.policy import load_policy
    from recsys.compose import build_pipeline, load_artifacts
    from recsys.domain import Candidate, RankRequest, UserContext
    from recsys.train import TrainConfig, train

    vdir = train(TrainConfig(data=DATA, out=tmp_path / "art", sample_users=60, max_pairs=96, batch_size=16,
                             lr=1e-4, harm_max_rows=3000, seed=0, als_grid="quick", ranker_grid="quick"))
    meta = json.loads((vdir / "metadata.json").read_text())
    it = meta["metrics"]["interest_training"]
    # one epoch over the training users' pairs (a tenth of the users are held out for validation)
    assert it["n_val_pairs"] > 0 and it["steps"] == it["n_pairs"] // 16 >= 4
    assert it["hard_negatives"] > 0 and it["val_recall@10_curve"][0][0] == 0
    assert it["loss_last"] < it["loss_first"]  # the contrastive loss falls
    art = load_artifacts(tmp_path / "art", device="cpu")
    assert art.store.encoder.model.config.num_hidden_layers == 6
    pipe = build_pipeline(art, policy=load_policy(), audit_log=AuditLog(tmp_path / "a.db", salt=b"s"))
    ids = list(art.catalog.item_ids[:20])
    resp = pipe.rank(RankRequest(UserContext("1"), tuple(Candidate(i) for i in ids), top_k=5))
    assert len(resp.items) == 5
