"""Load shedding: past max_workers running + max_queue waiting, calls are
refused with RESOURCE_EXHAUSTED at once instead of queueing without bound."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from tests.service.support import config, rank_request, running, stub


def test_flood_beyond_capacity_is_refused_fast(artifact_root, tmp_path, known_items):
    # Capacity 2: one running, one waiting. Two slow streams (their client keeps
    # them open) fill it; a flood of Rank calls must be refused, not queued.
    cfg = config(artifact_root, tmp_path, max_workers=1, max_queue=1)
    with running(cfg) as (app, target), grpc.insecure_channel(target) as ch:
        s = stub(ch)
        release = threading.Event()

        def slow_client(name):
            yield rank_request(known_items[:5], request_id=name)
            release.wait(60)

        # One after the other, so that hold-0 is the one running and hold-1 the one waiting.
        streams = [s.RankStream(slow_client("hold-0"), timeout=90)]
        assert next(streams[0]).request_id == "hold-0"   # running on the only worker
        streams.append(s.RankStream(slow_client("hold-1"), timeout=90))
        time.sleep(0.5)                                  # hold-1 has arrived and waits for the worker

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
        assert {code for code, _ in flood} <= {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OK}
        assert len(refused) >= 10                          # at most a stray one slipped in before hold-1
        assert max(refused) < 2.0                          # refused at once, not after waiting
        release.set()
        done = ThreadPoolExecutor(2).map(lambda st: [r.request_id for r in st], streams, timeout=60)
        assert [ids for ids in done] == [[], ["hold-1"]]   # the held calls themselves finish normally
        # Capacity is back: the next call is served.
        assert s.Rank(rank_request(known_items[:5]), timeout=30).items


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
