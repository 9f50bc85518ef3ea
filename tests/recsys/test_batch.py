"""Batch rescoring: same answers as the gRPC Rank, chunking never changes an answer,
clear errors before anything is written."""
import grpc
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ethicrec.v1 import recommender_pb2 as pb
from ethicrec.v1 import recommender_pb2_grpc as pb_grpc

from recsys.batch import BatchInputError, build_batch_pipeline, run_batch
from tests.cli import run_main

ABUSE = "you stupid bitch ass hoe, shut up"


def _input(known_items) -> pd.DataFrame:
    rows = []
    for u, items in (("1", known_items[:15]), ("7", known_items[10:30]), ("nobody", known_items[5:12])):
        rows += [{"user_id": u, "item_id": i, "text": None, "audit.age_band": "25-34"} for i in items]
    rows.insert(3, {"user_id": "1", "item_id": "ugc", "text": ABUSE, "audit.age_band": "25-34"})
    return pd.DataFrame(rows)


def _pipeline(artifacts, audit_log):
    from audit.policy import load_policy

    return build_batch_pipeline(artifacts, load_policy(), audit_log)


def _run(artifacts, audit_log, src, out, **kw):
    kw.setdefault("progress", False)
    return run_batch(_pipeline(artifacts, audit_log), artifacts.catalog.index, artifacts.extra_features, src, out,
                     **kw)


def test_batch_output_columns_and_ranks(artifacts, audit_log, known_items, tmp_path):
    df = _input(known_items)
    df.to_parquet(tmp_path / "in.parquet")
    summary = _run(artifacts, audit_log, tmp_path / "in.parquet", tmp_path / "out")
    out = pd.read_parquet(tmp_path / "out")
    assert summary.users == 3 and summary.rows == len(df) == len(out) and summary.parts == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        [".lock", "_SUCCESS", "_manifest.json", "part-00000.parquet"]
    assert list(out.columns[: len(df.columns)]) == list(df.columns)
    pd.testing.assert_frame_equal(out[df.columns], df, check_dtype=False)   # input order kept
    assert {"score", "interest_score", "ranker_score", "rank", "removed", "reason", "verdict", "audit_id"} <= set(out)
    ugc = out[out["item_id"] == "ugc"].iloc[0]
    assert ugc["removed"] and ugc["reason"] == "HARMFUL_TEXT" and ugc["rank"] == 0
    for _, grp in out[~out["removed"]].groupby("user_id"):
        assert sorted(grp["rank"]) == list(range(1, len(grp) + 1))
        assert grp.sort_values("rank")["score"].is_monotonic_decreasing
        assert grp["audit_id"].nunique() == 1
    assert summary.verdicts.get("ENFORCED") == 1 and sum(summary.verdicts.values()) == 3


def test_batch_equals_grpc_rank(artifacts, audit_log, known_items, tmp_path, server):
    df = _input(known_items)
    df.to_csv(tmp_path / "in.csv", index=False)
    _run(artifacts, audit_log, tmp_path / "in.csv", tmp_path / "out", top_k=5, chunk_users=2)
    out = pd.read_parquet(tmp_path / "out")
    assert len(list((tmp_path / "out").glob("part-*.parquet"))) == 2
    _, target = server
    with grpc.insecure_channel(target) as ch:
        stub = pb_grpc.RecommenderStub(ch)
        for user, grp in df.groupby("user_id", sort=False):
            cands = [pb.Candidate(item_id=r.item_id, **({"text": r.text} if isinstance(r.text, str) else {}))
                     for r in grp.itertuples()]
            resp = stub.Rank(pb.RankRequest(user=pb.User(user_id=user, audit_attributes={"age_band": "25-34"}),
                                            candidates=cands, top_k=5), timeout=30)
            mine = out[(out["user_id"] == user) & (out["rank"] > 0)].sort_values("rank")
            assert list(mine["item_id"]) == [i.item_id for i in resp.items]
            for (_, row), item in zip(mine.iterrows(), resp.items):
                assert row["score"] == item.score                      # exactly: same stages, same numbers
                assert row["interest_score"] == item.interest_score
                assert row["ranker_score"] == item.ranker_score
            assert sorted(out[(out["user_id"] == user) & out["removed"]]["item_id"]) == \
                sorted(r.item_id for r in resp.removed)
            assert set(out[out["user_id"] == user]["verdict"]) == {pb.Verdict.Name(resp.audit.verdict)[8:]}


def test_chunk_size_never_changes_an_answer(artifacts, audit_log, known_items, tmp_path):
    df = _input(known_items)
    df = pd.concat([df, df.assign(user_id=df["user_id"] + "-b")], ignore_index=True)
    df.to_parquet(tmp_path / "in.parquet")
    _run(artifacts, audit_log, tmp_path / "in.parquet", tmp_path / "one", chunk_users=1)
    _run(artifacts, audit_log, tmp_path / "in.parquet", tmp_path / "all", chunk_users=1000)
    _run(artifacts, audit_log, tmp_path / "in.parquet", tmp_path / "rows", chunk_rows=10)   # one user per chunk
    one, every, rows = (pd.read_parquet(tmp_path / d).drop(columns="audit_id") for d in ("one", "all", "rows"))
    assert len(list((tmp_path / "one").glob("part-*"))) == 6 and len(list((tmp_path / "all").glob("part-*"))) == 1
    pd.testing.assert_frame_equal(one, every, check_exact=True)
    pd.testing.assert_frame_equal(rows, every, check_exact=True)


def test_audit_records_committed_per_chunk_keep_the_chain(artifacts, known_items, tmp_path):
    from audit.log import AuditLog, read_records

    log = AuditLog(tmp_path / "audit.db", salt=b"s")
    try:
        _input(known_items).to_parquet(tmp_path / "in.parquet")
        _run(artifacts, log, tmp_path / "in.parquet", tmp_path / "out", chunk_users=2)
    finally:
        log.close()
    out = pd.read_parquet(tmp_path / "out")
    recs = {r.audit_id: r for r in read_records(tmp_path / "audit.db")}
    assert set(out["audit_id"]) == set(recs)
    for r in recs.values():
        assert r.request_id.startswith("batch-") and "nobody" not in r.request_id   # no raw user ids in the log
    verify = pytest.importorskip("audit.verify")
    assert verify.verify_log(tmp_path / "audit.db").ok


def _write(frame: pd.DataFrame, path):
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)


@pytest.mark.parametrize("name, frame, message", [
    ("in.parquet", pd.DataFrame({"user_id": ["1"], "item": ["2"]}), "missing required column"),
    ("in.parquet", pd.DataFrame({"user_id": ["1"], "item_id": ["no-such-item"]}),
     r"row 0 \(user '1', column item_id\): item 'no-such-item' is not in the catalog and has no text"),
    ("in.csv", pd.DataFrame({"user_id": ["1", "1", "2"], "item_id": ["1", "2", "zzz"]}),
     r"row 2 \(user '2', column item_id\): item 'zzz'"),
    ("in.parquet", pd.DataFrame({"user_id": ["1"], "item_id": ["1"], "feature.price": [1.0]}), "undeclared feature"),
    ("in.parquet", pd.DataFrame({"user_id": ["1"], "item_id": ["1"], "colour": ["red"]}), "unknown column colour"),
    ("in.parquet", pd.DataFrame({"user_id": ["1"], "item_id": ["1"], "text": [3]}), "column text must be text"),
    ("in.parquet", pd.DataFrame({"user_id": [1.5], "item_id": ["1"]}), "column user_id must be text"),
    ("in.parquet", pd.DataFrame({"user_id": ["1", None], "item_id": ["1", "2"]}), "row 1: user_id is empty"),
    ("in.csv", pd.DataFrame({"user_id": ["1", "2", "1"], "item_id": ["1", "2", "3"]}),
     "row 2: user '1' reappears after rows of other users; the input must be grouped by user_id"),
    ("in.parquet", pd.DataFrame({"user_id": ["1", "1"], "item_id": ["1", "1"]}),
     r"row 1 \(user '1', column item_id\): duplicate item id '1'"),
    ("in.parquet", pd.DataFrame({"user_id": ["1", "1"], "item_id": ["1", "2"], "audit.age_band": ["25-34", "under_18"]}),
     r"column audit.age_band\): differs between the user's rows"),
    ("in.parquet", pd.DataFrame({"user_id": ["1"], "item_id": ["new"], "text": ["x" * 2001]}),
     r"column text\): text has 2001 characters"),
])
def test_bad_input_is_rejected_before_any_output(artifacts, audit_log, known_items, tmp_path, name, frame, message):
    _write(frame, tmp_path / name)
    before = set(tmp_path.iterdir())
    with pytest.raises(BatchInputError, match=message):
        _run(artifacts, audit_log, tmp_path / name, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert set(tmp_path.iterdir()) == before


def test_problem_late_in_a_large_input_still_stops_before_any_part(artifacts, audit_log, known_items, tmp_path):
    rows = [{"user_id": f"u{u}", "item_id": i} for u in range(60) for i in known_items[:10]]
    rows.append({"user_id": "u59", "item_id": "not-in-catalog"})
    pd.DataFrame(rows).to_parquet(tmp_path / "in.parquet")
    with pytest.raises(BatchInputError, match="row 600 .*not-in-catalog"):
        _run(artifacts, audit_log, tmp_path / "in.parquet", tmp_path / "out", chunk_users=2)
    assert not (tmp_path / "out").exists()


def test_integer_ids_and_input_types_are_kept(artifacts, audit_log, known_items, tmp_path):
    ids = [int(i) for i in known_items[:8]]
    pq.write_table(pa.table({"user_id": pa.array([1] * 8, pa.int64()), "item_id": pa.array(ids, pa.int64())}),
                   tmp_path / "in.parquet")
    _run(artifacts, audit_log, tmp_path / "in.parquet", tmp_path / "out")
    out = pq.read_table(tmp_path / "out")
    assert out.schema.field("item_id").type == pa.int64() and out.column("item_id").to_pylist() == ids
    assert sorted(out.column("rank").to_pylist()) == list(range(1, 9))


def test_cli_one_line_error_and_exit_status(artifact_root, tmp_path, capsys):
    from recsys.batch.cli import main

    pd.DataFrame({"user_id": ["1"], "item": ["2"]}).to_csv(tmp_path / "bad.csv", index=False)
    res = run_main(main, ["--input", tmp_path / "bad.csv", "--output", tmp_path / "out", "--artifacts", artifact_root,
                          "--audit-log", tmp_path / "a.db"], capsys)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "missing required column" in res.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "a.db").exists()


def test_audit_log_append_many_is_all_or_nothing(tmp_path):
    import dataclasses
    import sqlite3

    from audit.log import AuditLog, AuditRecord, read_records

    rec = AuditRecord("a1", 1.0, "r", "m", "p", "u", "ENFORCE", "PASS", 1, ["x"], [], [], [])
    log = AuditLog(tmp_path / "a.db", salt=b"s")
    try:
        log.append_many([rec, dataclasses.replace(rec, audit_id="a2")])
        with pytest.raises(sqlite3.IntegrityError):
            log.append_many([dataclasses.replace(rec, audit_id="a3"), rec])    # a1 again: unique audit_id
        log.append(dataclasses.replace(rec, audit_id="a4"))
    finally:
        log.close()
    assert [r.audit_id for r in read_records(tmp_path / "a.db")] == ["a1", "a2", "a4"]
    verify = pytest.importorskip("audit.verify")
    assert verify.verify_log(tmp_path / "a.db").ok


def test_empty_input_is_a_complete_empty_job(artifacts, audit_log, tmp_path):
    pq.write_table(pa.table({"user_id": pa.array([], pa.string()), "item_id": pa.array([], pa.string())}),
                   tmp_path / "in.parquet")
    summary = _run(artifacts, audit_log, tmp_path / "in.parquet", tmp_path / "out")
    assert summary.rows == 0 and summary.parts == 0 and (tmp_path / "out" / "_SUCCESS").exists()
