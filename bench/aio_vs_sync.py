"""Does an asyncio gRPC server pay off? The same Rank core behind grpc.aio and behind the thread-pool
server, beside `python -m service` and the echo floor, same request, same machine, one run.

  service     python -m service (thread pool, interceptors, per-request log line, metrics)
  sync        bench/minimal_server.py --transport sync (thread pool, bare: no interceptors, no log line)
  aio         bench/minimal_server.py --transport aio (grpc.aio, pipeline inline on the event loop)
  echo        bench/echo_server.py (transport only)

Request: 100 catalog candidates, known user, top_k 10 (as bench/rank_vs_echo.py). Latency: sequential
calls in blocks rotating between the servers; throughput: closed-loop calls from 1 and 16 client threads.

    python bench/aio_vs_sync.py --artifacts artifacts [--requests 400] [--seconds 8] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
import numpy as np
from ethicrec.v1 import recommender_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rank_vs_echo import free_port, latency, throughput  # noqa: E402
from service.demo import demo_request, stop_process, wait_healthy  # noqa: E402

SERVERS = ("service", "sync", "aio", "echo")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    ap.add_argument("--requests", type=int, default=400, help="sequential requests per server (in 4 blocks)")
    ap.add_argument("--seconds", type=float, default=8.0, help="duration of each throughput run")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    tmp = tempfile.mkdtemp(prefix="ethicrec-bench-")
    ports = {name: free_port() for name in SERVERS}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    minimal = [sys.executable, str(ROOT / "bench" / "minimal_server.py"), "--artifacts", str(args.artifacts)]
    procs = {
        "service": subprocess.Popen([sys.executable, "-m", "service", "--artifacts", str(args.artifacts),
                                     "--port", str(ports["service"]), "--audit-log", f"{tmp}/audit.db"],
                                    env=env, cwd=ROOT, **quiet),
        "sync": subprocess.Popen([*minimal, "--transport", "sync", "--port", str(ports["sync"])], env=env, cwd=ROOT,
                                 **quiet),
        "aio": subprocess.Popen([*minimal, "--transport", "aio", "--port", str(ports["aio"])], env=env, cwd=ROOT,
                                **quiet),
        "echo": subprocess.Popen([sys.executable, str(ROOT / "bench" / "echo_server.py"), "--port",
                                  str(ports["echo"])], env=env, cwd=ROOT),
    }
    targets = {k: f"127.0.0.1:{p}" for k, p in ports.items()}
    try:
        for name, t in targets.items():
            wait_healthy(t, 240, procs[name])
        req, _ = demo_request(args.artifacts, n=100)
        del req.candidates[100:]
        req.user.audit_attributes.clear()
        chans = {k: grpc.insecure_channel(v) for k, v in targets.items()}
        stubs = {k: pb_grpc.RecommenderStub(c) for k, c in chans.items()}
        for name in SERVERS:
            latency(stubs[name], req, 30)
        lat: dict[str, list[float]] = {name: [] for name in SERVERS}
        block = max(1, args.requests // 4)
        for _ in range(4):
            for name in SERVERS:
                lat[name] += latency(stubs[name], req, block)
        tput = {name: {c: throughput(targets[name], req, c, args.seconds) for c in (1, 16)} for name in SERVERS}
        res: dict = {"requests": block * 4, "seconds": args.seconds}
        for name in SERVERS:
            a = np.array(lat[name]) * 1000
            res[name] = {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
                         "rps_1": tput[name][1], "rps_16": tput[name][16]}
        keys = ("p50_ms", "p99_ms", "rps_1", "rps_16")
        res["ratio"] = {f"{a}/{b}": {k: res[a][k] / res[b][k] for k in keys}
                        for a, b in (("aio", "sync"), ("service", "sync"), ("aio", "echo"), ("service", "echo"))}
        print(f"{'server':<9} {'p50 ms':>8} {'p99 ms':>8} {'rps@1':>8} {'rps@16':>8}")
        for name in SERVERS:
            r = res[name]
            print(f"{name:<9} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['rps_1']:8.0f} {r['rps_16']:8.0f}")
        for key, q in res["ratio"].items():
            print(f"{key:<14} p50 {q['p50_ms']:.2f}  p99 {q['p99_ms']:.2f}  rps@1 {q['rps_1']:.2f}  "
                  f"rps@16 {q['rps_16']:.2f}")
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
