"""--skip-invalid: users whose rows cannot be scored go to a rejects file with the
reason; everyone else is scored exactly as without them."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.batch import BatchInputError, build_batch_pipeline, run_batch
from recsys.batch.inputs import Chunker, inspect_input, iter_chunks
from recsys.batch.scoring import UserError, build_requests, chunk_columns
from recsys.domain import AuditMode
from tests.cli import run_main


def _run(artifacts, log, src, out, **kw):
    from audit.policy import load_policy

    kw.setdefault("progress", False)
    return run_batch(build_batch_pipeline(artifacts, load_policy(), log), artifacts.catalog.index,
                     artifacts.extra_features, src, out, **kw)


def _messy(known_items) -> tuple[pd.DataFrame, dict[int, str]]:
    """Good users a..e and, in between, rows that cannot be scored; {input row: reason fragment}."""
    rows, bad = [], {}

    def add(user, item, text=None, why=None):
        if why:
            bad[len(rows)] = why
        rows.append({"user_id": user, "item_id": item, "text": text})

    for i in known_items[:6]:
        add("a", i)
    for i in known_items[:3]:
        add("b", i, why="not in the catalog and has no text")
    add("b", "no-such-item", why="not in the catalog and has no text")
    add(None, known_items[0], why="user_id is empty")
    for i in known_items[6:12]:
        add("c", i)
    add("a", known_items[20], why="reappears after rows of other users")
    add("d", known_items[1], why="duplicate item id")
    add("d", known_items[1], why="duplicate item id")
    for i in known_items[12:18]:
        add("e", i)
    add("e", "ugc-1", text="a perfectly fine new item")
    return pd.DataFrame(rows), bad


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_skip_invalid_writes_rejects_and_scores_the_rest(artifacts, audit_log, known_items, tmp_path, fmt):
    df, bad = _messy(known_items)
    src = tmp_path / f"in.{fmt}"
    df.to_parquet(src) if fmt == "parquet" else df.to_csv(src, index=False)
    with pytest.raises(BatchInputError):
        _run(artifacts, audit_log, src, tmp_path / "strict")
    assert not (tmp_path / "strict").exists()

    summary = _run(artifacts, audit_log, src, tmp_path / "out", skip_invalid=True, chunk_users=2)
    rejects = pd.read_parquet(tmp_path / "out" / "_rejects.parquet")
    assert sorted(rejects["input_row"]) == sorted(bad)
    for _, r in rejects.iterrows():
        assert bad[r["input_row"]] in r["reject_reason"], r["reject_reason"]
    assert set(rejects[rejects["reject_scope"] == "row"]["input_row"]) == \
        {k for k, v in bad.items() if "empty" in v or "reappears" in v}
    assert summary.rejected_rows == len(bad) and summary.rejected_users == 2 and summary.users == 3

    out = pd.read_parquet(tmp_path / "out")   # the rejects file is not a part: dataset readers skip _files
    assert list(out["user_id"].unique()) == ["a", "c", "e"] and len(out) == len(df) - len(bad)
    clean = df.drop(index=list(bad))
    clean.to_parquet(tmp_path / "clean.parquet")
    _run(artifacts, audit_log, tmp_path / "clean.parquet", tmp_path / "ref")
    ref = pd.read_parquet(tmp_path / "ref")
    cols = [c for c in ref.columns if c not in ("audit_id", "text")]
    pd.testing.assert_frame_equal(out[cols].reset_index(drop=True), ref[cols].reset_index(drop=True),
                                  check_exact=True, check_dtype=False)

    # Resuming a skip-invalid job rebuilds nothing: the rejects file is the record of what was left out.
    again = _run(artifacts, audit_log, src, tmp_path / "out", skip_invalid=True, chunk_users=2)
    assert again.already_complete


def test_rejects_path_and_nothing_rejected(artifacts, audit_log, known_items, tmp_path):
    pd.DataFrame({"user_id": ["a"] * 5, "item_id": known_items[:5]}).to_parquet(tmp_path / "in.parquet")
    summary = _run(artifacts, audit_log, tmp_path / "in.parquet", tmp_path / "out", skip_invalid=True,
                   rejects_path=tmp_path / "elsewhere" / "bad.parquet")
    assert summary.rejected_rows == 0
    assert pq.read_table(tmp_path / "elsewhere" / "bad.parquet").num_rows == 0
    assert not (tmp_path / "out" / "_rejects.parquet").exists()


def test_skip_invalid_still_stops_on_file_level_problems(artifacts, audit_log, tmp_path):
    pd.DataFrame({"user_id": ["1"], "item": ["2"]}).to_parquet(tmp_path / "in.parquet")
    with pytest.raises(BatchInputError, match="missing required column"):
        _run(artifacts, audit_log, tmp_path / "in.parquet", tmp_path / "out", skip_invalid=True)
    assert not (tmp_path / "out").exists()


def test_csv_feature_that_is_not_a_number_names_its_row(tmp_path):
    """Features must be declared by the artifact; checked here without one, on the chunk builder."""
    (tmp_path / "in.csv").write_text("user_id,item_id,feature.price,text\n"
                                     "u,1,2.5,\nu,2,,\nv,3,cheap,\nw,4,inf,\n")
    spec = inspect_input(tmp_path / "in.csv", ("price",))
    chunk = next(iter_chunks(spec, Chunker(10, 100)))
    cols = chunk_columns(chunk, spec, pa.array(["1", "2", "3", "4"]))
    assert np.isnan(cols.features["price"][1]) and cols.features["price"][0] == 2.5
    res = build_requests(chunk, cols, top_k=None, audit_mode=AuditMode.ENFORCE, request_prefix="r", validate=True)
    assert not isinstance(res[0], UserError) and res[0].candidates[0].features == {"price": 2.5}
    assert res[0].candidates[1].features == {}
    assert isinstance(res[1], UserError) and str(res[1]) == \
        "row 2 (user 'v', column feature.price): 'cheap' is not a number"
    assert isinstance(res[2], UserError) and "row 3 (user 'w', column feature.price): must be a finite number" \
        == str(res[2])


def test_cli_skip_invalid_exit_status_and_summary(artifact_root, known_items, tmp_path, capsys):
    from recsys.batch.cli import main

    df, bad = _messy(known_items)
    df.to_csv(tmp_path / "in.csv", index=False)
    res = run_main(main, ["--input", tmp_path / "in.csv", "--output", tmp_path / "out", "--artifacts", artifact_root,
                          "--audit-log", tmp_path / "a.db", "--skip-invalid", "--no-progress"], capsys)
    assert res.returncode == 0, res.stderr
    assert f"{len(bad)} rows of 2 users rejected" in res.stdout
