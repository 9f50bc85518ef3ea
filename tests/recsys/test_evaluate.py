"""`python -m recsys.evaluate`: every row on the same queries and candidates; determinism."""
import json
import subprocess
import sys

import pytest

from tests.conftest import DATA


def test_evaluate_table_rows_and_json(artifact_root, tmp_path):
    out = tmp_path / "eval.json"
    res = subprocess.run([sys.executable, "-m", "recsys.evaluate", "--data", str(DATA), "--artifacts",
                          str(artifact_root), "--out", str(out), "--device", "cpu"],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    result = json.loads(out.read_text())
    models = result["models"]
    assert set(models) == {"popularity", "als", "bert_base", "bert_only", "lightgbm_no_bert", "blend",
                           "blend_linear"}
    n = {m["n_queries"] for m in models.values()}
    assert len(n) == 1 and n.pop() == result["test_users"] > 0
    for m in models.values():
        assert 0 <= m["ndcg@10"] <= 1 and 0 <= m["recall@10"] <= 1 and 0 <= m["mrr"] <= 1
        assert 0 < m["coverage@10"] <= 1
    # cross-fitted: both halves of the post-t_val users are test users; the deployed ranker scored on the
    # second half reproduces training's own offline figure on the same lists
    meta = json.loads(next(artifact_root.glob("2*/metadata.json")).read_text())
    deployed = result["deployed_ranker_second_half"]
    assert deployed["ndcg@10"] == pytest.approx(meta["metrics"]["offline"]["blend"]["ndcg@10"], abs=1e-9)
    assert deployed["n_queries"] < result["test_users"]
    assert len(result["als"]["chosen_per_half"]) == 2
    assert "| blend |" in res.stdout


def test_wrong_data_is_one_line_error(artifact_root, tmp_path):
    from tests.conftest import ML100K

    if not (ML100K / "u.data").is_file():
        pytest.skip("needs MovieLens 100K")
    res = subprocess.run([sys.executable, "-m", "recsys.evaluate", "--data", str(ML100K), "--artifacts",
                          str(artifact_root), "--out", str(tmp_path / "e.json")], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 2 and "was trained on ml-latest-small" in res.stderr
    assert not (tmp_path / "e.json").exists()


def test_training_is_deterministic_for_a_fixed_seed(tiny_bert, tmp_path):
    from recsys.train import TrainConfig, train

    dirs = [train(TrainConfig(data=DATA, out=tmp_path / f"a{i}", base_model=tiny_bert, sample_users=120,
                              max_pairs=64, lr=5e-4, harm_max_rows=3000, seed=7)) for i in range(2)]
    metas = [json.loads((d / "metadata.json").read_text()) for d in dirs]
    assert metas[0]["metrics"]["offline"] == metas[1]["metrics"]["offline"]
    assert (dirs[0] / "ranker.txt").read_text() == (dirs[1] / "ranker.txt").read_text()
    assert metas[0]["files"]["item_vectors.npy"] == metas[1]["files"]["item_vectors.npy"]
