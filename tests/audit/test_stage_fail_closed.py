"""Fail-closed: a check that raises or runs past the time budget withholds the answer,
with the policy's status, and writes no audit record of an answer that never left."""
import grpc
import pytest

from audit.log import read_records
from audit.policy import parse_policy
from recsys.compose import build_pipeline
from recsys.domain import Candidate, RankRequest, UserContext
from recsys.errors import AuditFailure


def _req(items):
    return RankRequest(UserContext("42"), tuple(Candidate(i) for i in items), top_k=5)


def test_time_budget_overrun_withholds_the_answer(artifacts, audit_log, known_items):
    policy = parse_policy({"version": "t", "time_budget_ms": 0.0001, "failure_status": "UNAVAILABLE"})
    pipe = build_pipeline(artifacts, policy=policy, audit_log=audit_log)
    with pytest.raises(AuditFailure, match="time budget") as err:
        pipe.rank(_req(known_items[:10]))
    assert err.value.status == "UNAVAILABLE"
    assert list(read_records(audit_log.path)) == []


def test_exposure_check_crash_withholds_the_answer(artifacts, audit_log, known_items, monkeypatch):
    pipe = build_pipeline(artifacts, policy=parse_policy({"version": "t"}), audit_log=audit_log)
    audit = next(s for s in pipe.stages if s.name == "audit")

    def broken(*a, **k):
        raise FloatingPointError("injected")

    monkeypatch.setattr(audit, "_exposure", broken)
    with pytest.raises(AuditFailure, match="FloatingPointError") as err:
        pipe.rank(_req(known_items[:10]))
    assert err.value.status == "INTERNAL"
    assert list(read_records(audit_log.path)) == []


def test_audit_log_write_failure_withholds_the_answer(artifacts, audit_log, known_items):
    pipe = build_pipeline(artifacts, policy=parse_policy({"version": "t"}), audit_log=audit_log)
    audit_log.close()   # the next append fails: the answer must not leave without its record
    with pytest.raises(AuditFailure):
        pipe.rank(_req(known_items[:10]))


def test_grpc_caller_gets_the_policys_status(artifact_root, tmp_path, known_items):
    from ethicrec.v1 import recommender_pb2 as pb
    from ethicrec.v1 import recommender_pb2_grpc as pb_grpc

    from service.config import ServiceConfig
    from service.server import create_server, load_app

    pol = tmp_path / "policy.toml"
    pol.write_text('version = "slow"\nfailure_status = "UNAVAILABLE"\ntime_budget_ms = 0.0001\n')
    cfg = ServiceConfig(host="127.0.0.1", port=0, artifacts=artifact_root, audit_log=tmp_path / "a.db",
                        policy=pol, device="cpu", max_workers=2)
    app = load_app(cfg)
    srv, port = create_server(cfg, app)
    srv.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.RecommenderStub(ch)
            with pytest.raises(grpc.RpcError) as err:
                stub.Rank(pb.RankRequest(user=pb.User(user_id="1"),
                                         candidates=[pb.Candidate(item_id=i) for i in known_items[:5]]), timeout=30)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "time budget" in err.value.details()
    finally:
        srv.stop(0).wait()
        app.close()
