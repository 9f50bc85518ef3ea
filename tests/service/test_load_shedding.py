"""Load shedding: past max_workers running + max_queue waiting, Rank calls are
refused with RESOURCE_EXHAUSTED at once instead of queueing without bound
(service/lanes.py; streams and health checks have room of their own)."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from tests.service.support import config, held_rank, rank_request, running, stub


def test_flood_beyond_capacity_is_refused_fast(artifact_root, tmp_path, known_items):
    # Capacity 2: one running, one waiting. Two Rank calls whose client holds back the request message
    # fill it (the first on the only worker, the second queued); a flood of Rank calls must be refused,
    # not queued.
    cfg = config(artifact_root, tmp_path, max_workers=1, max_queue=1)
    with running(cfg) as (app, target), grpc.insecure_channel(target) as ch:
        s = stub(ch)
        release = threading.Event()
        held = [held_rank(ch, rank_request(known_items[:5], request_id=f"hold-{i}"), release) for i in range(2)]
        deadline = time.monotonic() + 10
        while app.lanes.lanes["unary"].in_use < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.lanes.lanes["unary"].in_use == 2

        def one_call(i):
            t0 = time.monotonic()
            try:
                s.Rank(rank_request(known_items[:10], request_id=f"flood-{i}"), timeout=30)
                code = grpc.StatusCode.OK
            except grpc.RpcError as err:
                code = err.code()
            return code, time.monotonic() - t0

        with ThreadPoolExecutor(12) as pool:
            flood = [f for f in pool.map(one_call, range(12), timeout=60)]
        refused = [t for code, t in flood if code == grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert len(refused) == 12                          # the lane's room is exact
        assert max(refused) < 2.0                          # refused at once, not after waiting
        # Health has its own lane: answered while Rank's is full.
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        assert health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1
        release.set()
        assert [f.result(timeout=60).request_id for f in held] == ["hold-0", "hold-1"]   # they finish normally
        # Capacity is back: the next call is served.
        assert s.Rank(rank_request(known_items[:5]), timeout=30).items
        refused_metric = app.metrics.registry.get_sample_value("ethicrec_rpc_lane_refused_total", {"lane": "unary"})
        assert refused_metric == 12


def test_many_slow_clients_none_hang(artifact_root, tmp_path, known_items):
    """More concurrent real calls than capacity: each ends OK or RESOURCE_EXHAUSTED, none hangs."""
    cfg = config(artifact_root, tmp_path, max_workers=2, max_queue=2)
    with running(cfg) as (_, target), grpc.insecure_channel(target) as ch:
        s = stub(ch)
        req = rank_request(known_items[:40])

        def one_call(_):
            try:
                s.Rank(req, timeout=60)
                return grpc.StatusCode.OK
            except grpc.RpcError as err:
                return err.code()

        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(one_call, range(32), timeout=120))
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert codes.count(grpc.StatusCode.OK) >= 4
        assert time.monotonic() - t0 < 120
