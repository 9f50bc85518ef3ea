"""python -m recsys.upsert_items: new items become rankable without retraining, updates re-encode,
bad input writes nothing."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.artifacts import resolve_version_dir
from recsys.compose import load_artifacts
from recsys.domain import Candidate, RankRequest, UserContext
from recsys.embedding_store import ITEM_MAX_LENGTH
from recsys.upsert_items import main


@pytest.fixture(autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_new_items_are_ranked_without_text(copy_artifacts, tmp_path, known_items, audit_log):
    from audit.policy import load_policy
    from recsys.compose import build_pipeline

    old = load_artifacts(copy_artifacts, device="cpu")
    items = tmp_path / "items.csv"
    pd.DataFrame({"item_id": ["new-1", "new-2"],
                  "title": ["The Lighthouse Keeper (2026)", "Bees of the Valley (2025)"],
                  "genres": ["Drama", "Documentary|Nature"]}).to_csv(items, index=False)
    # fp32: the new rows must equal a fresh encoding of their text (bf16 rounding may differ with the batch)
    assert main(["--artifacts", str(copy_artifacts), "--input", str(items), "--device", "cpu",
                 "--encode-precision", "fp32"]) == 0

    art = load_artifacts(copy_artifacts, device="cpu", encode_precision="fp32")
    assert art.version != old.version and art.path != old.path
    assert resolve_version_dir(copy_artifacts) == art.path
    n = len(old.catalog)
    assert len(art.catalog) == n + 2 and art.store.item_vectors.shape[0] == n + 2
    rows = art.catalog.lookup(["new-1", "new-2"])
    assert list(rows) == [n, n + 1]
    np.testing.assert_array_equal(art.store.item_vectors[:n], old.store.item_vectors)   # untouched rows
    s = art.catalog.stats
    assert list(s.group[rows]) == ["long_tail", "long_tail"] and (s.log_pop[rows] == 0).all()
    assert (s.n_ratings[rows] == 0).all() and np.isfinite(s.mean_rating[rows]).all()
    assert art.catalog.years[n] == 2026.0
    assert "Nature" in art.catalog.genre_names
    text = art.catalog.texts[n]
    assert text == "The Lighthouse Keeper (2026). Genres: Drama"
    np.testing.assert_allclose(art.store.item_vectors[n], art.store.encoder.encode([text], ITEM_MAX_LENGTH)[0],
                               atol=1e-6)
    assert art.catalog.harm_score[n] < art.harm.threshold
    meta = json.loads((art.path / "metadata.json").read_text())
    assert meta["derived"][-1]["kind"] == "upsert_items"
    assert meta["derived"][-1]["encode_precision"] == "fp32"
    assert meta["derived"][-1]["added"] == 2 and meta["derived"][-1]["updated"] == 0

    pipe = build_pipeline(art, policy=load_policy(), audit_log=audit_log)
    cands = tuple(Candidate(i) for i in known_items[:20]) + (Candidate("new-1"), Candidate("new-2"))
    ctx = pipe.run(RankRequest(UserContext("1"), cands, top_k=22))
    assert np.isfinite(ctx.interest[-2:]).all() and np.isfinite(ctx.scores[-2:]).all()
    assert ctx.groups[-1] == "long_tail"
    returned = {it.item_id for it in ctx.response.items}
    assert {"new-1", "new-2"} <= returned | {r.item_id for r in ctx.response.removed}

    # the previous version still loads as it was
    again = load_artifacts(old.path, device="cpu")
    assert len(again.catalog) == n


def test_update_changes_the_vector_of_that_item_only(copy_artifacts, tmp_path):
    old = load_artifacts(copy_artifacts, device="cpu")
    iid = str(old.catalog.item_ids[5])
    items = tmp_path / "items.parquet"
    pd.DataFrame({"item_id": [iid], "title": ["A Completely Different Title (1999)"]}).to_parquet(items)
    assert main(["--artifacts", str(copy_artifacts), "--input", str(items), "--device", "cpu"]) == 0
    art = load_artifacts(copy_artifacts, device="cpu")
    assert len(art.catalog) == len(old.catalog)
    assert art.catalog.titles[5] == "A Completely Different Title (1999)"
    assert art.catalog.texts[5].startswith("A Completely Different Title (1999). Genres: ")
    assert art.catalog.genres[5] == old.catalog.genres[5]            # empty optional cell keeps the value
    assert art.catalog.stats.n_ratings[5] == old.catalog.stats.n_ratings[5]   # statistics kept
    assert not np.allclose(art.store.item_vectors[5], old.store.item_vectors[5])
    np.testing.assert_array_equal(np.delete(np.asarray(art.store.item_vectors), 5, axis=0),
                                  np.delete(np.asarray(old.store.item_vectors), 5, axis=0))
    meta = json.loads((art.path / "metadata.json").read_text())
    assert meta["derived"][-1]["updated"] == 1


@pytest.mark.parametrize("frame, message", [
    ({"item_id": ["a", "a"], "title": ["A", "B"]}, "row 2: item_id 'a' repeats row 1"),
    ({"item_id": ["a", ""], "title": ["A", "B"]}, "row 2: item_id is empty"),
    ({"item_id": ["a"], "title": [""]}, "row 1: title is empty"),
    ({"item_id": ["a"], "title": ["A"], "year": ["soon"]}, "row 1: year 'soon' is not a number"),
    ({"item_id": ["a"], "title": ["A"], "rating": ["5"]}, "unknown column 'rating'"),
    ({"item_id": ["a"]}, "missing column 'title'"),
])
def test_bad_input_is_rejected_and_nothing_is_written(copy_artifacts, tmp_path, capsys, frame, message):
    items = tmp_path / "items.csv"
    pd.DataFrame(frame).to_csv(items, index=False)
    before = _tree(copy_artifacts)
    latest = (copy_artifacts / "LATEST").read_text()
    assert main(["--artifacts", str(copy_artifacts), "--input", str(items), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert _tree(copy_artifacts) == before
    assert (copy_artifacts / "LATEST").read_text() == latest


def test_missing_input_or_artifacts(copy_artifacts, tmp_path, capsys):
    assert main(["--artifacts", str(copy_artifacts), "--input", str(tmp_path / "none.csv")]) == 2
    assert "input file not found" in capsys.readouterr().err
    items = tmp_path / "items.csv"
    pd.DataFrame({"item_id": ["a"], "title": ["A"]}).to_csv(items, index=False)
    assert main(["--artifacts", str(tmp_path / "nowhere"), "--input", str(items)]) == 2
    assert "artifact directory not found" in capsys.readouterr().err


def test_a_failure_while_writing_leaves_no_staging_dir(copy_artifacts, tmp_path, monkeypatch):
    import recsys.upsert_items as up

    items = tmp_path / "items.csv"
    pd.DataFrame({"item_id": ["new-9"], "title": ["Nine (2009)"]}).to_csv(items, index=False)
    before = _tree(copy_artifacts)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr("recsys.cooccurrence.CoOccurrence.save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        up.upsert_items(copy_artifacts, items, device="cpu")
    after = [p for p in _tree(copy_artifacts) if p != ".update.lock"]
    assert after == before
