"""Do idle RankStreams starve Rank and health? Against `python -m service` from a given checkout (default:
this one): open 3x max_workers RankStreams that send one request and then stay silent with no deadline (a
stuck frontend), then time Rank and Health/Check calls with a 1 s deadline, and report how the idle streams
ended.

    python bench/idle_streams.py --artifacts artifacts [--tree ../main] [--workers 2] [--calls 20]
        [--idle-timeout 5] [--out FILE]

`--idle-timeout` sets stream_idle_timeout_s for trees that know it (passed as ETHICREC_STREAM_IDLE_TIMEOUT_S);
the streams are released by the client after the measurement either way.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from ethicrec.v1 import recommender_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from rank_vs_echo import free_port  # noqa: E402

from service.demo import demo_request, stop_process, wait_healthy  # noqa: E402


def timed(fn) -> tuple[str, float]:
    t0 = time.perf_counter()
    try:
        fn()
        code = "OK"
    except grpc.RpcError as err:
        code = err.code().name
    return code, (time.perf_counter() - t0) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    ap.add_argument("--tree", type=Path, default=ROOT)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--idle-timeout", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    env = dict(os.environ, HF_HUB_OFFLINE="1", ETHICREC_MAX_WORKERS=str(args.workers),
               ETHICREC_AUDIT_KEY=secrets.token_hex(32), ETHICREC_STREAM_IDLE_TIMEOUT_S=str(args.idle_timeout))
    tmp = tempfile.mkdtemp(prefix="ethicrec-idle-")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "service", "--artifacts", str(args.artifacts.resolve()), "--port",
                             str(port), "--audit-log", f"{tmp}/audit.db"], env=env, cwd=args.tree.resolve(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = f"127.0.0.1:{port}"
    try:
        wait_healthy(target, 240, proc)
        req, _ = demo_request(args.artifacts, n=20)
        del req.candidates[20:]
        with grpc.insecure_channel(target) as ch:
            stub, health = pb_grpc.RecommenderStub(ch), health_pb2_grpc.HealthStub(ch)
            stub.Rank(req, timeout=30)
            release, ended = threading.Event(), []

            def idle():
                yield req
                release.wait(600)

            def drain(call):
                t0 = time.monotonic()
                try:
                    for _ in call:
                        pass
                    ended.append(("OK", "", time.monotonic() - t0))
                except grpc.RpcError as err:
                    ended.append((err.code().name, err.details(), time.monotonic() - t0))

            n_idle = 3 * args.workers
            threads = [threading.Thread(target=drain, args=(stub.RankStream(idle()),), daemon=True)
                       for _ in range(n_idle)]
            for t in threads:
                t.start()
            time.sleep(1.0)
            rank = [timed(lambda: stub.Rank(req, timeout=1)) for _ in range(args.calls)]
            check = [timed(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=1)) for _ in range(args.calls)]
            for t in threads:
                t.join(args.idle_timeout + 5)
            release.set()
            for t in threads:
                t.join(10)
        res = {"tree": str(args.tree.resolve()), "workers": args.workers, "idle_streams": n_idle}
        for name, calls in (("rank", rank), ("health_check", check)):
            ok = [ms for code, ms in calls if code == "OK"]
            res[name] = {"ok": len(ok), "calls": len(calls), "codes": sorted({c for c, _ in calls}),
                         "p50_ms": statistics.median(ms for _, ms in calls), "max_ms": max(ms for _, ms in calls)}
        res["streams_ended"] = [{"code": c, "details": d, "after_s": round(s, 2)} for c, d, s in ended]
        print(json.dumps(res, indent=2))
        if args.out:
            args.out.write_text(json.dumps(res, indent=2))
    finally:
        stop_process(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
