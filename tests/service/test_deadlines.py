"""Deadlines and cancellation: abandoned calls stop between pipeline stages and
answer DEADLINE_EXCEEDED; nothing is audited for an answer nobody receives."""
import contextlib
import threading
import time
import uuid

import grpc
import pytest
from ethicrec.v1 import recommender_pb2 as pb

from audit.log import read_records
from recsys.domain import Candidate, RankRequest, UserContext
from recsys.pipeline import RequestStopped
from tests.service.support import config, held_rank, rank_request, running, stub


def test_should_stop_is_polled_between_stages(pipeline, audit_log, known_items):
    req = RankRequest(UserContext("1"), tuple(Candidate(i) for i in known_items[:10]))
    polls: list[int] = []

    def stop_after_two_stages() -> bool:
        polls.append(1)
        return len(polls) > 2

    with pytest.raises(RequestStopped) as info:
        pipeline.run(req, should_stop=stop_after_two_stages)
    assert info.value.stage == "features"       # resolve and interest ran, nothing after
    assert list(read_records(audit_log.path)) == []
    # Never asked to stop: the same answer as without the hook.
    ctx = pipeline.run(req, should_stop=lambda: False)
    assert {"resolve", "interest", "features", "rank", "harm", "audit", "respond"} <= set(ctx.timings)
    assert [i.item_id for i in ctx.response.items] == [i.item_id for i in pipeline.rank(req).items]


def _wait_for(predicate, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _unseen_texts(n: int) -> list[pb.Candidate]:
    return [pb.Candidate(item_id=f"new-{i}", text=f"unseen film {uuid.uuid4().hex} about sisters " * 20)
            for i in range(n)]


@contextlib.contextmanager
def _slow_bert_server(artifact_root, tmp_path):
    """A running server that only the caller can stop (no audit time budget), its stub, and how long its BERT
    stage took on 1,000 never-seen texts in a first call; skips the test when too fast to interrupt."""
    policy = tmp_path / "policy.toml"
    policy.write_text('version = "no-budget"\ntime_budget_ms = 600000\n')
    with running(config(artifact_root, tmp_path, policy=policy)) as (app, target), \
            grpc.insecure_channel(target) as ch:
        s = stub(ch)
        s.Rank(pb.RankRequest(user=pb.User(user_id="1"), candidates=_unseen_texts(1000)), timeout=120)
        interest_s = app.metrics.registry.get_sample_value("ethicrec_stage_duration_seconds_sum", {"stage": "interest"})
        if interest_s < 0.2:
            pytest.skip(f"the BERT stage took only {interest_s:.3f}s: too fast to interrupt a call inside it")
        yield app, s, interest_s


def test_call_past_its_deadline_stops_mid_pipeline(artifact_root, tmp_path):
    """Never-seen texts make the BERT stage slow. A first call measures how slow;
    a second one, with a deadline half that long, must stop at the next stage
    boundary: DEADLINE_EXCEEDED, and the audit never runs (no record written)."""
    with _slow_bert_server(artifact_root, tmp_path) as (app, s, interest_s):
        sample = app.metrics.registry.get_sample_value
        deadline = min(interest_s / 2, 2.0)
        req = pb.RankRequest(user=pb.User(user_id="1"), candidates=_unseen_texts(1000), request_id="too-slow")
        with pytest.raises(grpc.RpcError) as info:
            s.Rank(req, timeout=deadline)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        rank_deadline = {"method": "ethicrec.v1.Recommender/Rank", "code": "DEADLINE_EXCEEDED"}
        assert _wait_for(lambda: sample("ethicrec_rpc_requests_total", rank_deadline) == 1)
        stopped = {x.labels["stage"]: x.value for m in app.metrics.registry.collect()
                   if m.name == "ethicrec_rank_stopped" for x in m.samples if x.name.endswith("_total")}
        assert sum(stopped.values()) == 1 and not {"audit", "respond"} & {k for k, v in stopped.items() if v}
        app.audit_log.flush()
        assert "too-slow" not in [r.request_id for r in read_records(app.audit_log.path)]


def test_call_whose_deadline_passes_in_the_queue_is_never_computed(artifact_root, tmp_path, known_items):
    """One worker, held by a Rank call whose client holds back its message; a Rank with a 300 ms deadline
    waits behind it. The caller gets DEADLINE_EXCEEDED and, once the worker frees up, the expired call is
    dropped without running the pipeline."""
    cfg = config(artifact_root, tmp_path, max_workers=1, max_queue=4)
    with running(cfg) as (app, target), grpc.insecure_channel(target) as ch:
        s = stub(ch)
        release = threading.Event()
        holder = held_rank(ch, rank_request(known_items[:5], request_id="holder"), release, timeout=60)
        deadline = time.monotonic() + 10
        while app.lanes.lanes["unary"].in_use < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)                                    # the only worker is now waiting for its message
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            s.Rank(rank_request(known_items[:20], request_id="late"), timeout=0.3)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - t0 < 5
        release.set()
        assert holder.result(timeout=30).request_id == "holder"
        # The worker is free again: a fresh call is answered, and only it and the holder were audited.
        assert s.Rank(rank_request(known_items[:5], request_id="after"), timeout=30).request_id == "after"
        app.audit_log.flush()
        assert [r.request_id for r in read_records(app.audit_log.path)] == ["holder", "after"]


def test_generous_deadline_is_answered(stub, known_items):
    resp = stub.Rank(rank_request(known_items[:10]), timeout=30)
    assert len(resp.items) == 10


def test_cancelled_call_stops_at_the_next_stage(artifact_root, tmp_path):
    """The client cancels while BERT encodes never-seen texts: the server learns it from the call's
    termination callback and skips the remaining stages (no audit record for an answer nobody reads)."""
    with _slow_bert_server(artifact_root, tmp_path) as (app, s, interest_s):
        req = pb.RankRequest(user=pb.User(user_id="1"), candidates=_unseen_texts(1000), request_id="cancelled")
        call = s.Rank.future(req, timeout=120)
        time.sleep(interest_s / 2)
        assert call.cancel()

        def stopped() -> float:
            return sum(x.value for m in app.metrics.registry.collect() if m.name == "ethicrec_rank_stopped"
                       for x in m.samples if x.name.endswith("_total"))

        assert _wait_for(lambda: stopped() == 1)
        app.audit_log.flush()
        assert "cancelled" not in [r.request_id for r in read_records(app.audit_log.path)]
