import json

import numpy as np
import pytest

from recsys.artifacts import REQUIRED, resolve_version_dir
from recsys.compose import load_artifacts
from recsys.domain import Candidate, RankRequest, UserContext
from recsys.errors import ArtifactError


def test_artifact_directory_is_complete_and_versioned(artifact_root):
    vdir = resolve_version_dir(artifact_root)
    assert (artifact_root / "LATEST").read_text().strip() == vdir.name
    for name in REQUIRED:
        assert (vdir / name).exists(), name
    assert (vdir / "interest" / "model.safetensors").is_file()
    meta = json.loads((vdir / "metadata.json").read_text())
    assert meta["version"] == vdir.name
    assert len(meta["dataset"]["sha256"]) >= 64
    assert meta["split"]["protocol"] == "per-user temporal"
    assert meta["split"]["n_val_users"] > 0 and meta["split"]["n_test_users"] > 0
    assert meta["features"]["names"][0] == "interest"
    assert set(meta["metrics"]["offline"]) == {"uniform", "retrieval", "cold"}
    assert set(meta["metrics"]["offline"]["uniform"]) == {"popularity", "als", "interest_only", "blend", "random"}
    assert meta["metrics"]["ranker"]["best_iteration"] >= 50   # the ranker cannot collapse to a few trees
    assert set(meta["selection"]["als"]) == {"factors", "alpha", "regularization"}
    # in distribution, harmful (hate or offensive) vs neither on Davidson validation rows, as for every harm model
    assert meta["metrics"]["harm"]["val_auc"] == meta["metrics"]["harm"]["val_auc_davidson_harmful"] > 0.8
    assert set(meta["files"]) >= {"ranker.txt", "catalog.parquet", "item_vectors.npy"}
    assert not list(artifact_root.glob(".staging-*"))


def test_loaded_artifact_ranks_candidates(pipeline, known_items):
    req = RankRequest(UserContext("1"), tuple(Candidate(i) for i in known_items[:30]), top_k=5)
    resp = pipeline.rank(req)
    assert len(resp.items) == 5
    assert [it.rank for it in resp.items] == [1, 2, 3, 4, 5]
    scores = [it.score for it in resp.items]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= it.interest_score <= 1.0 for it in resp.items)


def test_item_vectors_are_memory_mapped_and_normalised(artifacts):
    v = artifacts.store.item_vectors   # a plain ndarray view of the memory map (cheaper to index)
    assert isinstance(v.base, np.memmap) and not v.flags.owndata
    norms = np.linalg.norm(np.asarray(v[:50]), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-4)


def test_tampered_artifact_is_rejected(copy_artifacts):
    vdir = resolve_version_dir(copy_artifacts)
    with open(vdir / "ranker.txt", "a") as f:
        f.write("\n")
    with pytest.raises(ArtifactError, match="ranker.txt does not match"):
        load_artifacts(copy_artifacts)


def test_missing_artifact_dir_is_one_line_error(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        load_artifacts(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="not an ethicrec artifact"):
        load_artifacts(tmp_path / "empty")
