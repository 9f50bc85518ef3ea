"""Cross-encoder: training lowers the loss, save/load is exact, bucketed inference equals the plain
forward pass, the top-N re-scoring stage follows `cross_blend`, and the training CLI publishes a
new, hash-covered artifact version."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from recsys.artifacts import resolve_version_dir
from recsys.compose import build_pipeline, load_artifacts
from recsys.domain import Candidate, RankRequest, UserContext
from recsys.errors import ArtifactError
from recsys.interest import CrossEncoder, CrossEncoderScorer, cross_blend, fine_tune_cross_encoder
from recsys.interest_training import Pairs
from recsys.pipeline import CrossEncoderStage
from recsys.text import user_text
from tests.conftest import DATA


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The tiny models are faster on one thread than on two contended ones."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _pairs(artifacts, n=24) -> Pairs:
    """(history of a known user without its most recent item, that item) pairs."""
    cat = artifacts.catalog
    texts, rows = [], []
    for uid in sorted(artifacts.users)[:200]:
        hist = [r for r in cat.lookup(artifacts.users[uid]) if r >= 0]
        if len(hist) >= 4:
            texts.append(user_text([cat.texts[r] for r in hist[1:21]]))
            rows.append(hist[0])
        if len(rows) == n:
            break
    return Pairs(texts, np.asarray(rows, dtype=np.int64))


def test_training_loss_falls(tiny_cross_encoder, artifacts):
    ce = CrossEncoder.load(tiny_cross_encoder, device="cpu")
    pairs = _pairs(artifacts, 16)
    summary = fine_tune_cross_encoder(ce, pairs, artifacts.catalog, negatives_per_positive=1, epochs=30,
                                      batch_size=32, lr=1e-2, seed=0, max_steps=30, max_length=64, progress=False)
    curve = summary["loss_curve"]
    assert summary["steps"] == 30 and summary["n_examples"] == 32
    assert np.mean(curve[-5:]) < 0.8 * np.mean(curve[:5])
    assert not ce.model.training


def test_training_is_deterministic_for_a_seed(tiny_cross_encoder, artifacts):
    pairs = _pairs(artifacts, 8)
    runs = []
    for _ in range(2):
        ce = CrossEncoder.load(tiny_cross_encoder, device="cpu")
        runs.append(fine_tune_cross_encoder(ce, pairs, artifacts.catalog, negatives_per_positive=2, batch_size=8,
                                            max_steps=3, progress=False)["loss_curve"])
    assert runs[0] == runs[1]


def test_save_load_gives_identical_scores(tiny_cross_encoder, tmp_path):
    ce = CrossEncoder.load(tiny_cross_encoder, device="cpu")
    ce.save(tmp_path / "ce")
    again = CrossEncoder.load(tmp_path / "ce", device="cpu")
    users = ["Heat (1995) | Casino (1995)"] * 3
    items = ["Toy Story (1995). Genres: Animation", "Se7en (1995)", "A much longer item text " * 12]
    np.testing.assert_array_equal(ce.predict(users, items), again.predict(users, items))
    assert (tmp_path / "ce" / "model.safetensors").is_file()


def test_bucketed_inference_equals_the_plain_forward_pass(tiny_cross_encoder):
    ce = CrossEncoder.load(tiny_cross_encoder, device="cpu")
    users = ["Heat (1995)", "a long history " * 30, "Jumanji", "Fargo (1996) | Heat (1995)"]
    items = ["Toy Story", "Casino (1995). Genres: Crime", "x " * 100, "Babe"]
    fast = ce.predict(users, items, batch_size=2)
    with torch.no_grad():
        ref = ce.logits(users, items).numpy()
    np.testing.assert_allclose(fast, ref, atol=1e-5)
    alone = ce.predict(users[:1], items[:1])
    np.testing.assert_allclose(alone[0], fast[0], atol=1e-5)


def test_from_base_adds_a_fresh_one_logit_head(tiny_bert):
    ce = CrossEncoder.from_base(tiny_bert, device="cpu", seed=0)
    assert ce.model.config.num_labels == 1
    again = CrossEncoder.from_base(tiny_bert, device="cpu", seed=0)
    s = ce.predict(["Heat"], ["Toy Story"])
    np.testing.assert_array_equal(s, again.predict(["Heat"], ["Toy Story"]))


def test_cross_blend_properties():
    scores = np.array([3.0, 2.0, 1.5, 1.0])
    cross = np.array([-1.0, 0.0, 5.0, 1.0])
    new = cross_blend(scores, cross, 1.0)
    assert np.argmax(new) == 2 and np.argmin(new) == 0           # weight 1: the cross-encoder's order
    assert new.max() == pytest.approx(3.0) and new.min() == pytest.approx(1.0)   # span of the old scores
    np.testing.assert_allclose(cross_blend(scores, cross, 0.0), scores)  # weight 0: unchanged
    np.testing.assert_array_equal(cross_blend(scores, np.zeros(4), 0.5), scores)  # constant b: unchanged
    b = 0.5 * (cross - cross.mean()) / cross.std() + 0.5 * (scores - scores.mean()) / scores.std()
    np.testing.assert_allclose(np.argsort(-cross_blend(scores, cross, 0.5)), np.argsort(-b))


def test_pipeline_with_cross_encoder_stage(artifacts, audit_log, tiny_cross_encoder, known_items):
    from audit.policy import load_policy

    with pytest.raises(ValueError, match="no cross_encoder"):
        build_pipeline(artifacts, policy=load_policy(), audit_log=audit_log, cross_encoder=True)
    ce = CrossEncoder.load(tiny_cross_encoder, device="cpu")
    art = dataclasses.replace(artifacts, cross_encoder=ce)
    auto = build_pipeline(art, policy=load_policy(), audit_log=audit_log)
    assert "cross_encoder" not in [s.name for s in auto.stages]     # CPU: off unless asked
    pipe = build_pipeline(art, policy=load_policy(), audit_log=audit_log, cross_encoder=True,
                          cross_encoder_top_n=10, cross_encoder_weight=0.7)
    names = [s.name for s in pipe.stages]
    assert names.index("rank") < names.index("cross_encoder") < names.index("audit")
    cands = tuple(Candidate(i) for i in known_items[:30]) + (Candidate("new-1", text="A lighthouse keeper drama"),)
    req = RankRequest(UserContext("1"), cands, top_k=8)
    ctx = pipe.run(req)

    # What the rank stage produced (blend "lightgbm": score = ranker score), then the documented combination.
    before = ctx.ranker_scores
    top = np.argsort(-before, kind="stable")[:10]
    logits = CrossEncoderScorer(ce, art.catalog.texts).score(ctx.user_text, ctx.cand_idx[top],
                                                             [ctx.texts[p] for p in top])
    np.testing.assert_allclose(ctx.cross_scores[top], logits, atol=1e-6)
    assert np.isnan(np.delete(ctx.cross_scores, top)).all()
    new = cross_blend(before[top], logits, 0.7)
    np.testing.assert_allclose(ctx.scores[top], new, atol=1e-6)
    np.testing.assert_array_equal(ctx.order[:10], top[np.argsort(-new, kind="stable")])
    np.testing.assert_array_equal(ctx.order[10:], np.argsort(-before, kind="stable")[10:])
    np.testing.assert_array_equal(np.delete(ctx.scores, top), np.delete(before, top))

    resp = ctx.response
    assert [it.rank for it in resp.items] == list(range(1, len(resp.items) + 1))
    returned = [it.score for it in resp.items]
    assert returned == sorted(returned, reverse=True)   # the scores still explain the order
    pos = {iid: p for p, iid in enumerate(ctx.item_ids)}
    for it in resp.items:
        assert it.score == pytest.approx(ctx.scores[pos[it.item_id]])
        assert it.ranker_score == pytest.approx(before[pos[it.item_id]])
    assert resp.audit is not None and resp.audit.audit_id


def test_stage_rejects_bad_settings():
    with pytest.raises(ValueError):
        CrossEncoderStage(None, top_n=0)
    with pytest.raises(ValueError):
        CrossEncoderStage(None, weight=1.5)


def test_train_cli_publishes_a_new_verified_version(copy_artifacts, tiny_bert):
    from recsys.train_cross_encoder import main

    old = resolve_version_dir(copy_artifacts)
    old_files = sorted(p.name for p in old.iterdir())
    rc = main(["--data", str(DATA), "--artifacts", str(copy_artifacts), "--base-model", str(tiny_bert),
               "--max-pairs", "16", "--max-steps", "2", "--device", "cpu"])
    assert rc == 0
    new = resolve_version_dir(copy_artifacts)
    assert new != old and sorted(p.name for p in old.iterdir()) == old_files   # old version untouched
    assert not list(copy_artifacts.glob(".staging-*"))
    meta = json.loads((new / "metadata.json").read_text())
    assert meta["version"] == new.name
    assert meta["derived"][-1]["kind"] == "cross_encoder"
    assert meta["derived"][-1]["from_version"] == old.name
    assert "cross_encoder/model.safetensors" in meta["files"]
    assert meta["metrics"]["cross_encoder_training"]["n_positives"] == 16
    art = load_artifacts(copy_artifacts, device="cpu")
    assert art.cross_encoder is not None and art.version == new.name

    # optional files are verified like the required ones
    (new / "cross_encoder" / "extra.txt").write_text("x")
    with pytest.raises(ArtifactError, match="not covered"):
        load_artifacts(copy_artifacts, device="cpu")
    (new / "cross_encoder" / "extra.txt").unlink()
    with open(new / "cross_encoder" / "config.json", "a") as f:
        f.write(" ")
    with pytest.raises(ArtifactError, match="cross_encoder/config.json does not match"):
        load_artifacts(copy_artifacts, device="cpu")


def test_train_cli_rejects_other_data(copy_artifacts, tiny_bert, tmp_path, capsys):
    from recsys.train_cross_encoder import main

    before = sorted(p.name for p in copy_artifacts.iterdir())
    rc = main(["--data", str(DATA.parent / "hate-speech-davidson"), "--artifacts", str(copy_artifacts),
               "--base-model", str(tiny_bert), "--device", "cpu"])
    assert rc == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert sorted(p.name for p in copy_artifacts.iterdir()) == before
