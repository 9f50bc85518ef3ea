"""No number of idle or slow streams starves unary calls or health (service/lanes.py): streams run on
threads of their own, at most max_streams at once (RESOURCE_EXHAUSTED beyond), and a stream that makes no
progress for stream_idle_timeout_s is ended by the server with UNAVAILABLE saying why."""
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.service.support import config, held_rank, rank_request, running, stub

WORKERS = 2


def _idle_client(request, release: threading.Event):
    """Sends one request, then nothing, with no deadline: a stuck frontend."""
    yield request
    release.wait(120)


def _drain(call, out: dict, key) -> None:
    try:
        out[key] = ("OK", [r.request_id for r in call], time.monotonic())
    except grpc.RpcError as err:
        out[key] = (err.code().name, err.details(), time.monotonic())


def _timed(fn):
    t0 = time.monotonic()
    result = fn()
    return result, time.monotonic() - t0


def test_three_times_max_workers_idle_streams_starve_nothing(artifact_root, tmp_path, known_items):
    idle_s = 2.0
    cfg = config(artifact_root, tmp_path, max_workers=WORKERS, stream_idle_timeout_s=idle_s)
    with running(cfg) as (app, target), grpc.insecure_channel(target) as ch:
        s, health = stub(ch), health_pb2_grpc.HealthStub(ch)
        s.Rank(rank_request(known_items[:5]), timeout=30)   # warm
        release, results = threading.Event(), {}
        t_open = time.monotonic()
        calls = [s.RankStream(_idle_client(rank_request(known_items[:5], request_id=f"idle-{i}"), release))
                 for i in range(3 * WORKERS)]
        threads = [threading.Thread(target=_drain, args=(c, results, i)) for i, c in enumerate(calls)]
        for t in threads:
            t.start()
        time.sleep(0.5)    # every stream has sent its request; the admitted ones now sit idle
        assert app.lanes.lanes["stream"].in_use == WORKERS   # max_streams auto = the RPC workers
        for _ in range(3):
            resp, rank_s = _timed(lambda: s.Rank(rank_request(known_items[:10]), timeout=1))
            check, health_s = _timed(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=1))
            assert len(resp.items) == 10 and rank_s < 1.0
            assert check.status == health_pb2.HealthCheckResponse.SERVING and health_s < 1.0
        for t in threads:
            t.join(30)
        assert len(results) == 3 * WORKERS
        codes = sorted(r[0] for r in results.values())
        assert codes == ["RESOURCE_EXHAUSTED"] * (2 * WORKERS) + ["UNAVAILABLE"] * WORKERS, results
        for code, details, ended in results.values():
            if code == "RESOURCE_EXHAUSTED":    # beyond max_streams: refused at once, saying why
                assert "too many open streams (max_streams = 2)" in details and ended - t_open < 1.5
            else:                               # admitted, then idle: ended by the server after the timeout
                assert "stream_idle_timeout_s" in details and "open a new stream" in details
                assert idle_s <= ended - t_open < idle_s + 3
        release.set()
        assert app.lanes.lanes["stream"].in_use == 0
        sample = app.metrics.registry.get_sample_value
        assert sample("ethicrec_rpc_idle_closed_total", {"kind": "stream"}) == WORKERS
        assert sample("ethicrec_rpc_lane_refused_total", {"lane": "stream"}) == 2 * WORKERS
        # Streams are usable again once the idle ones are gone.
        again = list(s.RankStream(iter([rank_request(known_items[:5], request_id="again")]), timeout=30))
        assert [r.request_id for r in again] == ["again"]


def test_a_slow_but_live_stream_is_not_cut(artifact_root, tmp_path, known_items):
    """Requests arriving more often than the idle timeout keep a stream open for longer than it."""
    cfg = config(artifact_root, tmp_path, max_workers=WORKERS, stream_idle_timeout_s=1.0)
    with running(cfg) as (_, target), grpc.insecure_channel(target) as ch:
        def slow():
            for i in range(5):
                yield rank_request(known_items[:5], request_id=f"slow-{i}")
                time.sleep(0.5)

        got = [r.request_id for r in stub(ch).RankStream(slow(), timeout=60)]
        assert got == [f"slow-{i}" for i in range(5)]


def test_unary_calls_without_their_message_are_ended_and_do_not_block_health(artifact_root, tmp_path,
                                                                             known_items):
    """A Rank whose client never sends the request message holds a Rank worker only until
    request_read_timeout_s; health checks are answered meanwhile from their own lane."""
    cfg = config(artifact_root, tmp_path, max_workers=1, max_queue=0, request_read_timeout_s=1.5)
    with running(cfg) as (app, target), grpc.insecure_channel(target) as ch:
        never = threading.Event()
        held = held_rank(ch, rank_request(known_items[:5]), never, timeout=30)
        time.sleep(0.3)
        with pytest.raises(grpc.RpcError) as busy:
            stub(ch).Rank(rank_request(known_items[:5]), timeout=5)
        assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        check, health_s = _timed(lambda: health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                                                timeout=1))
        assert check.status == health_pb2.HealthCheckResponse.SERVING and health_s < 1.0
        with pytest.raises(grpc.RpcError) as ended:
            held.result(timeout=10)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "request_read_timeout_s" in ended.value.details()
        never.set()
        assert stub(ch).Rank(rank_request(known_items[:5]), timeout=30).items    # the worker is back
        assert app.lanes.lanes["unary"].in_use == 0


def test_health_watchers_cost_no_worker(artifact_root, tmp_path, known_items):
    """Watch streams (non-blocking) do not hold threads: many of them leave Check and Rank answering; the
    watch lane's room is bounded too."""
    from service.lanes import WATCH_ROOM

    cfg = config(artifact_root, tmp_path, max_workers=1)
    with running(cfg) as (app, target), grpc.insecure_channel(target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=30) for _ in range(WATCH_ROOM + 4)]
        served, refused = [], 0
        for w in watches:
            try:
                assert next(w).status == health_pb2.HealthCheckResponse.SERVING
                served.append(w)
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "health watches" in err.details()
                refused += 1
        assert (len(served), refused) == (WATCH_ROOM, 4)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1
        assert stub(ch).Rank(rank_request(known_items[:5]), timeout=1).items
        for w in served:
            w.cancel()
        deadline = time.monotonic() + 5
        while app.lanes.lanes["watch"].in_use and time.monotonic() < deadline:
            time.sleep(0.02)
        assert app.lanes.lanes["watch"].in_use == 0
