"""The Rank core (proto -> domain, pipeline, domain -> proto) behind a bare gRPC server, sync or asyncio.

A measurement peer for bench/aio_vs_sync.py, not a way to run ethicrec: no interceptors (auth, metrics,
error mapping, drain), no per-request log line, no reload. Both transports run exactly the same core,
so the difference between them is the transport's threading model:

  sync   grpc.server with a thread pool (what `python -m service` uses)
  aio    grpc.aio.server; the pipeline runs inline on the event loop thread (it is CPU-bound Python
         under the GIL, so an executor hop would only add a thread switch)

    python bench/minimal_server.py --transport aio --port 50070 --artifacts artifacts
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import threading
from concurrent import futures
from pathlib import Path

import grpc
from ethicrec.v1 import recommender_pb2 as pb
from ethicrec.v1 import recommender_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from recsys.device import freeze_loaded_objects  # noqa: E402
from service.config import ServiceConfig  # noqa: E402
from service.convert import request_from_proto, response_to_proto  # noqa: E402
from service.server import load_app  # noqa: E402


def rank_core(app, request: pb.RankRequest) -> pb.RankResponse:
    with app.current.use() as snap:
        ctx = snap.pipeline.run(request_from_proto(request))
    return response_to_proto(ctx.response)


class SyncRank(pb_grpc.RecommenderServicer):
    def __init__(self, app) -> None:
        self.app = app

    def Rank(self, request, context):
        return rank_core(self.app, request)


class AioRank(pb_grpc.RecommenderServicer):
    def __init__(self, app) -> None:
        self.app = app

    async def Rank(self, request, context):
        return rank_core(self.app, request)


def _health():
    from grpc_health.v1 import health

    h = health.HealthServicer()
    h.set("", health_pb2.HealthCheckResponse.SERVING)
    return h


async def _serve_aio(app, port: int) -> None:
    from grpc_health.v1._async import HealthServicer

    server = grpc.aio.server()
    pb_grpc.add_RecommenderServicer_to_server(AioRank(app), server)
    h = HealthServicer()
    await h.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(h, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transport", choices=["sync", "aio"], required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    ap.add_argument("--max-workers", type=int, default=8)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = Path(tempfile.mkdtemp(prefix="ethicrec-minimal-"))
    app = load_app(ServiceConfig(artifacts=args.artifacts, audit_log=tmp / "audit.db", port=args.port))
    freeze_loaded_objects()
    try:
        if args.transport == "aio":
            asyncio.run(_serve_aio(app, args.port))
            return 0
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.max_workers))
        pb_grpc.add_RecommenderServicer_to_server(SyncRank(app), server)
        health_pb2_grpc.add_HealthServicer_to_server(_health(), server)
        server.add_insecure_port(f"127.0.0.1:{args.port}")
        server.start()
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        done.wait()
        server.stop(1).wait()
        return 0
    finally:
        app.close()


if __name__ == "__main__":
    sys.exit(main())
