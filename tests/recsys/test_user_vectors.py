"""Known users' vectors come precomputed with the artifact: the same vectors the encoder makes, found by
the exact user text serving builds, never served for a different text, and verified like any artifact file."""
import json

import numpy as np
import pytest

from recsys.compose import check_servable, load_artifacts
from recsys.domain import Candidate, RankRequest, UserContext
from recsys.embedding_store import USER_MAX_LENGTH, text_key
from recsys.errors import ArtifactError
from recsys.known_user_vectors import KEYS, VECTORS, known_user_texts


def test_training_writes_one_vector_per_known_user_text(artifacts):
    texts = known_user_texts(artifacts.catalog, artifacts.users)
    store = artifacts.store
    assert artifacts.metadata["user_vectors"] == len(texts) == len(store.known_users) > 100
    sample = texts[:16]
    fresh = store.encoder.encode(sample, max_length=USER_MAX_LENGTH)
    stored = np.stack([store.user_vector(t) for t in sample])
    np.testing.assert_allclose(stored, fresh, atol=1e-5)


def test_a_known_user_request_encodes_nothing(artifacts, pipeline, known_items):
    store = artifacts.store
    user = next(u for u in artifacts.users if artifacts.users[u])
    cached = len(store.user_cache)    # only texts encoded on the fly enter this cache
    ctx = pipeline.run(RankRequest(UserContext(user), tuple(Candidate(i) for i in known_items[:10]), 5))
    assert ctx.user_text and text_key(ctx.user_text) in store.known_users
    assert len(store.user_cache) == cached and store.user_cache.get(text_key(ctx.user_text)) is None
    # the same user sending history of their own makes another text: encoded on the fly, not looked up
    ctx = pipeline.run(RankRequest(UserContext(user, history_texts=("a history only this test sends",)),
                                   tuple(Candidate(i) for i in known_items[:10]), 5))
    assert text_key(ctx.user_text) not in store.known_users
    assert len(store.user_cache) == cached + 1


def test_user_vectors_of_the_wrong_shape_are_refused(copy_artifacts):
    vdir = copy_artifacts / (copy_artifacts / "LATEST").read_text().strip()
    keys = json.loads((vdir / KEYS).read_text())
    (vdir / KEYS).write_text(json.dumps(keys[:-1]))
    with pytest.raises(ArtifactError, match="user vectors"):
        load_artifacts(vdir, device="cpu", verify=False)
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifacts(vdir, device="cpu")


def test_user_vectors_added_after_publishing_are_refused(copy_artifacts):
    vdir = copy_artifacts / (copy_artifacts / "LATEST").read_text().strip()
    meta = json.loads((vdir / "metadata.json").read_text())
    del meta["files"][VECTORS]
    (vdir / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="not covered"):
        load_artifacts(vdir, device="cpu")


def test_cli_adds_user_vectors_to_an_artifact_without_them(copy_artifacts):
    from recsys.artifact_update import derive_version
    from recsys.user_vectors import main

    def strip(staging, meta):
        (staging / VECTORS).unlink()
        (staging / KEYS).unlink()
        meta.pop("user_vectors", None)
        return {}

    old = derive_version(copy_artifacts, "strip", strip, check=check_servable)
    assert load_artifacts(old, device="cpu").store.known_users is None
    assert main(["--artifacts", str(copy_artifacts), "--device", "cpu"]) == 0
    new = load_artifacts(copy_artifacts, device="cpu")
    assert new.version != old.name and len(new.store.known_users) > 100
    assert new.metadata["derived"][-1]["kind"] == "user_vectors"
