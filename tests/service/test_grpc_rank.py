"""Rank and RankStream over a real channel."""
from ethicrec.v1 import recommender_pb2 as pb

from audit.log import read_records

ABUSE = "you stupid bitch ass hoe, shut up"


def _request(items, **kw):
    return pb.RankRequest(user=pb.User(user_id="1"), candidates=[pb.Candidate(item_id=i) for i in items], **kw)


def test_rank_returns_audited_top_k(stub, server, known_items):
    app, _ = server
    resp = stub.Rank(_request(known_items[:30], top_k=7, request_id="req-1"), timeout=30)
    assert resp.request_id == "req-1"
    assert resp.model_version == app.artifacts.version
    assert [i.rank for i in resp.items] == list(range(1, 8))
    assert all(i.score == i.ranker_score for i in resp.items)
    assert resp.audit.audit_id and resp.audit.policy_version == app.policy.version
    app.audit_log.flush()  # journal mode (the default policy): records reach SQLite in the background
    recs = list(read_records(app.audit_log.path))
    assert [r.audit_id for r in recs] == [resp.audit.audit_id]
    assert recs[0].returned_ids == [i.item_id for i in resp.items]


def test_default_top_k_and_generated_request_id(stub, known_items):
    resp = stub.Rank(_request(known_items[:30]), timeout=30)
    assert len(resp.items) == 10
    assert len(resp.request_id) == 32 and int(resp.request_id, 16) >= 0
    again = stub.Rank(_request(known_items[:30]), timeout=30)
    assert again.request_id != resp.request_id and len(again.request_id) == 32


def test_enforce_removes_and_flag_only_keeps(stub, known_items):
    req = _request(known_items[:10], top_k=11)
    req.candidates.append(pb.Candidate(item_id="ugc", text=ABUSE))
    enforced = stub.Rank(req, timeout=30)
    assert [r.item_id for r in enforced.removed] == ["ugc"]
    assert enforced.audit.verdict == pb.VERDICT_ENFORCED
    req.audit_mode = pb.AUDIT_MODE_FLAG_ONLY
    flagged = stub.Rank(req, timeout=30)
    assert not flagged.removed
    assert "ugc" in [i.item_id for i in flagged.items]
    assert flagged.audit.verdict == pb.VERDICT_FLAGGED
    assert any(f.code == "HARMFUL_TEXT" and f.group == "ugc" for f in flagged.audit.findings)


def test_unknown_item_with_text_is_scored(stub, known_items):
    req = _request(known_items[:5], top_k=6)
    req.candidates.append(pb.Candidate(item_id="brand-new", text="A heartwarming animated film about toys"))
    resp = stub.Rank(req, timeout=30)
    assert "brand-new" in [i.item_id for i in resp.items]


def test_rank_stream_answers_each_request_in_order(stub, known_items):
    reqs = [_request(known_items[k:k + 15], top_k=3, request_id=f"s{k}") for k in range(4)]
    out = list(stub.RankStream(iter(reqs), timeout=60))
    assert [r.request_id for r in out] == ["s0", "s1", "s2", "s3"]
    assert all(len(r.items) == 3 for r in out)
