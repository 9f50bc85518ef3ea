"""`python -m recsys.evaluate`: every list kind, model and goal on the artifact's own per-user split; bad input
is one line and exit 2 with nothing written; training is deterministic."""
import contextlib
import io
import json
import shutil

import pytest

from recsys.evaluate import main
from tests.conftest import DATA

FAST = ["--baseline-grid", "quick", "--n-boot", "200", "--min-slice-users", "5", "--device", "cpu"]


@pytest.fixture(scope="module")
def evaluated(artifact_root, tmp_path_factory) -> tuple[dict, str]:
    """One evaluation run for the module (about 30 s): its JSON and what it printed."""
    out = tmp_path_factory.mktemp("eval") / "eval.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["--data", str(DATA), "--artifacts", str(artifact_root), "--out", str(out), *FAST]) == 0
    return json.loads(out.read_text()), printed.getvalue()


@pytest.fixture(scope="module")
def result(evaluated) -> dict:
    return evaluated[0]


def test_every_kind_has_every_model_on_the_same_lists(result):
    assert set(result["kinds"]) == {"uniform", "retrieval", "cold"}
    for kind, r in result["kinds"].items():
        assert set(r["models"]) == {"random", "popularity", "als", "bpr", "bert_base", "bert_only",
                                    "lightgbm_no_bert", "blend"}
        assert {m["n_lists"] for m in r["models"].values()} == {r["n_lists"]}
        for m in r["models"].values():
            assert 0 <= m["ndcg@10"] <= 1 and 0 <= m["recall@10"] <= 1 and 0 <= m["tie_share"] <= 1
        assert r["best_baseline"] in ("random", "popularity", "als", "bpr", "bert_base")
        c = r["comparisons"]["blend_vs_als"]
        assert c["diff_lo"] <= c["diff"] <= c["diff_hi"] and c["n_lists"] == r["n_lists"]
    # models without an interaction to go on tie every cold item, and are reported as such
    cold = result["kinds"]["cold"]
    assert cold["cannot_score"] == ["popularity", "als", "bpr"]
    assert all(cold["models"][m]["tie_share"] == 1.0 for m in cold["cannot_score"])
    assert result["kinds"]["uniform"]["models"]["random"]["tie_share"] == 1.0
    # the JSON keeps the shape audit.report --evaluation reads
    assert result["models"] == result["kinds"]["uniform"]["models"]


def test_the_evaluated_blend_is_the_served_one(result):
    # the blend column comes from the serving pipeline; the offline feature matrix gives the same scores
    assert result["served_vs_offline_max_abs_diff"] < 1e-6


def test_goals_are_written_down_met_or_not(result, capsys):
    names = [g["goal"] for g in result["goals"]]
    assert len(names) == 8 and all(isinstance(g["met"], bool) for g in result["goals"])
    assert any(n.startswith("cold: blend >= 2x random") for n in names)


def test_table_on_stdout(evaluated):
    text = evaluated[1]
    assert "### cold lists" in text and "| blend |" in text and "(cannot score: ties)" in text
    assert "| goal | met | figures |" in text


def _one_line_error(argv, tmp_path, capsys, expect):
    out = tmp_path / "e.json"
    assert main([*argv, "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expect in err, err
    assert not out.exists()


def test_unknown_dataset_directory(artifact_root, tmp_path, capsys):
    _one_line_error(["--data", str(tmp_path / "nope"), "--artifacts", str(artifact_root)], tmp_path, capsys,
                    "dataset directory not found")


def test_artifact_trained_on_other_data(artifact_root, tmp_path, capsys):
    from tests.conftest import ML100K

    if not (ML100K / "u.data").is_file():
        pytest.skip("needs MovieLens 100K")
    _one_line_error(["--data", str(ML100K), "--artifacts", str(artifact_root)], tmp_path, capsys,
                    "was trained on ml-latest-small")


def test_too_few_users_for_a_slice(artifact_root, tmp_path, capsys):
    out = tmp_path / "e.json"
    argv = ["--data", str(DATA), "--artifacts", str(artifact_root), "--out", str(out), "--device", "cpu",
            "--min-slice-users", "100000"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "slice has" in err and "--min-slice-users" in err
    assert not out.exists()


def test_artifact_of_the_old_protocol(artifact_root, tmp_path, capsys):
    version = (artifact_root / "LATEST").read_text().strip()
    old = tmp_path / "old"
    shutil.copytree(artifact_root / version, old)
    meta = json.loads((old / "metadata.json").read_text())
    meta["split"] = {"t_fit": 1, "t_val": 2}
    (old / "metadata.json").write_text(json.dumps(meta))
    _one_line_error(["--data", str(DATA), "--artifacts", str(old)], tmp_path, capsys, "old global-time split")


def test_bad_flags(artifact_root, tmp_path, capsys):
    assert main(["--data", str(DATA), "--artifacts", str(artifact_root), "--n-boot", "5"]) == 2
    assert "--n-boot" in capsys.readouterr().err


@pytest.mark.artifact   # trains two artifacts: not in make test-fast
def test_training_is_deterministic_for_a_fixed_seed(tiny_bert, tmp_path):
    from recsys.train import TrainConfig, train

    dirs = [train(TrainConfig(data=DATA, out=tmp_path / f"a{i}", base_model=tiny_bert, sample_users=80,
                              max_pairs=64, lr=5e-4, harm_max_rows=1000, seed=7, als_grid="quick",
                              ranker_grid="quick")) for i in range(2)]
    metas = [json.loads((d / "metadata.json").read_text()) for d in dirs]
    assert metas[0]["metrics"]["offline"] == metas[1]["metrics"]["offline"]
    assert (dirs[0] / "ranker.txt").read_text() == (dirs[1] / "ranker.txt").read_text()
    assert (dirs[0] / "als.npz").read_bytes() == (dirs[1] / "als.npz").read_bytes()
    assert metas[0]["files"]["item_vectors.npy"] == metas[1]["files"]["item_vectors.npy"]
