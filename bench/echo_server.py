"""A trivial Recommender that echoes the first top_k candidates back: the
transport floor that `Rank` is compared with (same proto, same payload)."""
from __future__ import annotations

import argparse
import signal
import threading
from concurrent import futures

import grpc
from ethicrec.v1 import recommender_pb2 as pb
from ethicrec.v1 import recommender_pb2_grpc as pb_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


class Echo(pb_grpc.RecommenderServicer):
    def Rank(self, request, context):
        k = request.top_k if request.HasField("top_k") else 10
        ids = [c.item_id for c in request.candidates[:k]]
        if len(ids) < k:   # then the id-only candidates, as Rank orders them
            ids += request.candidate_ids[: k - len(ids)]
        return pb.RankResponse(
            items=[pb.RankedItem(item_id=i, score=1.0, interest_score=1.0, ranker_score=1.0, rank=r)
                   for r, i in enumerate(ids, start=1)],
            audit=pb.Audit(audit_id="0" * 32, verdict=pb.VERDICT_PASS, policy_version="echo"),
            model_version="echo", request_id=request.request_id or "0" * 32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--max-workers", type=int, default=8)
    args = ap.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.max_workers))
    pb_grpc.add_RecommenderServicer_to_server(Echo(), server)
    h = health.HealthServicer()
    h.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(h, server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop(1).wait()


if __name__ == "__main__":
    main()
