"""Rank with 100 catalog candidates vs a trivial echo server, side by side.

Both servers run as subprocesses of this script on the same machine; the
client alternates between them in blocks so machine noise hits both alike.
Reports p50/p99 latency (1 client) and throughput (1 and 16 concurrent
clients), and the ratios ethicrec / echo.

    python bench/rank_vs_echo.py --artifacts artifacts [--requests 400] [--seconds 10] [--payload messages|ids]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
from ethicrec.v1 import recommender_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.config import ServiceConfig  # noqa: E402
from service.demo import demo_request, stop_process, wait_healthy  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def latency(stub, req, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        stub.Rank(req, timeout=30)
        out.append(time.perf_counter() - t0)
    return out


def throughput(target: str, req, clients: int, seconds: float, *, own_connections: bool = False) -> float:
    """Closed-loop calls per second from `clients` threads: by default over one shared connection (gRPC's
    global subchannel pool, as one frontend process would), else each thread on its own connection."""
    count = [0] * clients
    stop = time.perf_counter() + seconds
    options = [("grpc.use_local_subchannel_pool", 1)] if own_connections else []

    def worker(i: int) -> None:
        with grpc.insecure_channel(target, options=options) as ch:
            stub = pb_grpc.RecommenderStub(ch)
            while time.perf_counter() < stop:
                stub.Rank(req, timeout=30)
                count[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(count) / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    ap.add_argument("--requests", type=int, default=400, help="sequential requests per server (in 4 blocks)")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each throughput run")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    ap.add_argument("--payload", choices=("messages", "ids"), default="messages",
                    help="candidates as Candidate messages (default) or as the packed candidate_ids field")
    ap.add_argument("--max-workers", type=int, default=0,
                    help="gRPC worker threads of both servers (0: the service's auto count, see service/config.py)")
    args = ap.parse_args()
    # Both servers get the same pool size: fewer threads raise both servers' throughput on a small machine.
    workers = ServiceConfig(max_workers=args.max_workers).rpc_workers
    env = dict(os.environ, HF_HUB_OFFLINE="1", ETHICREC_MAX_WORKERS=str(workers))
    tmp = tempfile.mkdtemp(prefix="ethicrec-bench-")
    p_rank, p_echo = free_port(), free_port()
    procs = {
        "ethicrec": subprocess.Popen([sys.executable, "-m", "service", "--artifacts", str(args.artifacts),
                                      "--port", str(p_rank), "--audit-log", f"{tmp}/audit.db"],
                                     env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        "echo": subprocess.Popen([sys.executable, str(ROOT / "bench" / "echo_server.py"), "--port", str(p_echo),
                                  "--max-workers", str(workers)],
                                 env=env, cwd=ROOT),
    }
    targets = {"ethicrec": f"127.0.0.1:{p_rank}", "echo": f"127.0.0.1:{p_echo}"}
    try:
        for name, t in targets.items():
            wait_healthy(t, 180, procs[name])
        req, _ = demo_request(args.artifacts, n=100)
        # 100 catalog candidates only: drop the demo's two extra (harmful / adult) items.
        del req.candidates[100:]
        req.user.audit_attributes.clear()
        if args.payload == "ids":
            ids = [c.item_id for c in req.candidates]
            del req.candidates[:]
            req.candidate_ids.extend(ids)
        lat: dict[str, list[float]] = {"ethicrec": [], "echo": []}
        chans = {k: grpc.insecure_channel(v) for k, v in targets.items()}
        stubs = {k: pb_grpc.RecommenderStub(c) for k, c in chans.items()}
        for name in stubs:
            latency(stubs[name], req, 30)  # warm-up (also fills the user-vector cache)
        block = max(1, args.requests // 4)
        for _ in range(4):
            for name in ("ethicrec", "echo"):
                lat[name] += latency(stubs[name], req, block)
        tput = {name: {c: throughput(targets[name], req, c, args.seconds) for c in (1, 16)} for name in targets}
        res = {"payload_bytes": req.ByteSize(), "payload": args.payload, "max_workers": workers,
               "candidates": len(req.candidates) + len(req.candidate_ids), "requests": block * 4}
        for name in targets:
            a = np.array(lat[name]) * 1000
            res[name] = {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
                         "rps_1": tput[name][1], "rps_16": tput[name][16]}
        res["ratio"] = {
            "p50": res["ethicrec"]["p50_ms"] / res["echo"]["p50_ms"],
            "p99": res["ethicrec"]["p99_ms"] / res["echo"]["p99_ms"],
            "rps_1": res["ethicrec"]["rps_1"] / res["echo"]["rps_1"],
            "rps_16": res["ethicrec"]["rps_16"] / res["echo"]["rps_16"],
        }
        print(f"payload {res['payload_bytes']} bytes ({args.payload}), {res['candidates']} candidates, "
              f"{res['requests']} sequential requests per server, {workers} worker threads each")
        print(f"{'server':<10} {'p50 ms':>8} {'p99 ms':>8} {'rps@1':>8} {'rps@16':>8}")
        for name in ("ethicrec", "echo"):
            r = res[name]
            print(f"{name:<10} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['rps_1']:8.0f} {r['rps_16']:8.0f}")
        q = res["ratio"]
        print(f"{'ratio':<10} {q['p50']:8.2f} {q['p99']:8.2f} {q['rps_1']:8.2f} {q['rps_16']:8.2f}")
        if args.out:
            args.out.write_text(json.dumps(res, indent=2))
        for c in chans.values():
            c.close()
    finally:
        for p in procs.values():
            stop_process(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
