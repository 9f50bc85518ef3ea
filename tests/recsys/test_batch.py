"""Batch rescoring: same answers as the gRPC Rank, clear errors, nothing half-written."""
import subprocess
import sys

import grpc
import pandas as pd
import pytest
from ethicrec.v1 import recommender_pb2 as pb
from ethicrec.v1 import recommender_pb2_grpc as pb_grpc

from recsys.batch import BatchInputError, run_batch
from recsys.pipeline import build_pipeline
from recsys.validation import Limits

ABUSE = "you stupid bitch ass hoe, shut up"


def _input(known_items) -> pd.DataFrame:
    rows = []
    for u, items in (("1", known_items[:15]), ("7", known_items[10:30]), ("nobody", known_items[5:12])):
        rows += [{"user_id": u, "item_id": i, "text": None, "audit.age_band": "25-34"} for i in items]
    rows.append({"user_id": "1", "item_id": "ugc", "text": ABUSE, "audit.age_band": "25-34"})
    return pd.DataFrame(rows)


def _batch_pipeline(artifacts, audit_log):
    from audit.policy import load_policy

    return build_pipeline(artifacts, policy=load_policy(), audit_log=audit_log,
                          limits=Limits(max_candidates=100_000, max_top_k=100_000))


def test_batch_output_columns_and_ranks(artifacts, audit_log, known_items, tmp_path):
    df = _input(known_items)
    df.to_parquet(tmp_path / "in.parquet")
    summary = run_batch(_batch_pipeline(artifacts, audit_log), artifacts.catalog.index, (), tmp_path / "in.parquet",
                        tmp_path / "out.parquet", progress=False)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert summary.users == 3 and summary.rows == len(df) == len(out)
    assert list(out.columns[: len(df.columns)]) == list(df.columns)
    assert {"score", "interest_score", "ranker_score", "rank", "removed", "reason", "verdict", "audit_id"} <= set(out)
    ugc = out[out["item_id"] == "ugc"].iloc[0]
    assert ugc["removed"] and ugc["reason"] == "HARMFUL_TEXT" and ugc["rank"] == 0
    for _, grp in out[~out["removed"]].groupby("user_id"):
        assert sorted(grp["rank"]) == list(range(1, len(grp) + 1))
        assert grp.sort_values("rank")["score"].is_monotonic_decreasing
        assert grp["audit_id"].nunique() == 1


def test_batch_equals_grpc_rank(artifacts, audit_log, known_items, tmp_path, server):
    df = _input(known_items)
    df.to_csv(tmp_path / "in.csv", index=False)
    run_batch(_batch_pipeline(artifacts, audit_log), artifacts.catalog.index, (), tmp_path / "in.csv",
              tmp_path / "out.parquet", top_k=5, progress=False)
    out = pd.read_parquet(tmp_path / "out.parquet")
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
                assert row["score"] == pytest.approx(item.score, abs=1e-9)
                assert row["interest_score"] == pytest.approx(item.interest_score, abs=1e-6)
            assert sorted(out[(out["user_id"] == user) & out["removed"]]["item_id"]) == \
                sorted(r.item_id for r in resp.removed)
            assert set(out[out["user_id"] == user]["verdict"]) == {pb.Verdict.Name(resp.audit.verdict)[8:]}


@pytest.mark.parametrize("frame, message", [
    (pd.DataFrame({"user_id": ["1"], "item": ["2"]}), "missing required column"),
    (pd.DataFrame({"user_id": ["1"], "item_id": ["no-such-item"]}), "row 0: item 'no-such-item'"),
    (pd.DataFrame({"user_id": ["1"], "item_id": ["1"], "feature.price": [1.0]}), "undeclared feature"),
    (pd.DataFrame({"user_id": ["1"], "item_id": ["1"], "colour": ["red"]}), "unknown column colour"),
])
def test_bad_input_is_rejected_before_any_output(artifacts, audit_log, tmp_path, frame, message):
    frame.to_parquet(tmp_path / "in.parquet")
    with pytest.raises(BatchInputError, match=message):
        run_batch(_batch_pipeline(artifacts, audit_log), artifacts.catalog.index, (), tmp_path / "in.parquet",
                  tmp_path / "out.parquet", progress=False)
    assert not (tmp_path / "out.parquet").exists()
    assert list(tmp_path.glob(".out.parquet*")) == []


def test_cli_one_line_error_and_exit_status(artifact_root, tmp_path):
    pd.DataFrame({"user_id": ["1"], "item": ["2"]}).to_csv(tmp_path / "bad.csv", index=False)
    res = subprocess.run([sys.executable, "-m", "recsys.batch", "--input", str(tmp_path / "bad.csv"),
                          "--output", str(tmp_path / "out.parquet"), "--artifacts", str(artifact_root),
                          "--audit-log", str(tmp_path / "a.db")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "missing required column" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "out.parquet").exists()
