"""Rank with 20 uncached item texts per request: micro-batched encoding vs none, and the echo floor.

Four servers run as subprocesses of this script on the same machine:

  batched     `python -m service` as shipped (cache misses of concurrent requests share BERT calls,
              `encode_batch_max` 64, `encode_batch_wait_ms` 0: recsys/microbatch.py; `encode_precision`
              auto: bf16 autocast on a CPU with native bf16, fp32 elsewhere)
  unbatched   the same with ETHICREC_ENCODE_BATCH_MAX=0 (every request encodes its own misses)
  fp32        the shipped server with ETHICREC_ENCODE_PRECISION=fp32 (on a CPU without native bf16 this
              is what batched runs too: a control)
  echo        bench/echo_server.py (transport only, same payload)

Every request holds 80 catalog movies and 20 items the catalog does not know, each with its own text
(a real catalog text plus a unique edition number), so every one of those 20 texts is a cache miss
(BERT item encode and harm scoring). Each server receives the same sequence of requests. Latency:
sequential calls, alternating blocks between the servers. Throughput: closed-loop calls from 1 and 16
client threads for --seconds each, servers in turn. Bursts: 16 requests sent at once that all bring the
same 20 new texts (new releases shown to many users at the same moment), alternating between the two
ethicrec servers; the time until all 16 are answered.

    python bench/rank_cold_texts.py --artifacts artifacts [--requests 60] [--seconds 15] [--out FILE]
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
from ethicrec.v1 import recommender_pb2 as pb
from ethicrec.v1 import recommender_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rank_vs_echo import free_port  # noqa: E402
from service.demo import demo_request, stop_process, wait_healthy  # noqa: E402

NEW_PER_REQUEST = 20


def cold_requests(artifacts: Path, n: int, share: int = 1, tag: str = "") -> list[pb.RankRequest]:
    """n requests, each 80 catalog candidates plus 20 never-seen texts; `share` consecutive requests
    carry the same 20 (a burst: new releases shown to many users at once), otherwise texts are unique."""
    from recsys.artifacts import resolve_version_dir
    from recsys.catalog import Catalog

    base, _ = demo_request(artifacts, n=100)
    del base.candidates[100 - NEW_PER_REQUEST:]
    base.user.audit_attributes.clear()
    texts = Catalog.load(resolve_version_dir(artifacts) / "catalog.parquet").texts
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        req = pb.RankRequest()
        req.CopyFrom(base)
        req.request_id = f"cold-{k}"
        if k % share == 0:
            rows = rng.integers(0, len(texts), NEW_PER_REQUEST)
        g = k // share
        for j, row in enumerate(rows):
            req.candidates.add(item_id=f"new-{tag}{g}-{j}", text=f"{texts[row]} Edition {tag}{g}-{j}.")
        out.append(req)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    ap.add_argument("--requests", type=int, default=60, help="sequential requests per server (in 3 blocks)")
    ap.add_argument("--seconds", type=float, default=15.0, help="duration of each throughput run")
    ap.add_argument("--bursts", type=int, default=6, help="bursts per server (16 requests sharing 20 new texts)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    tmp = tempfile.mkdtemp(prefix="ethicrec-bench-")
    ports = {name: free_port() for name in ("batched", "unbatched", "fp32", "echo")}
    envs = {"batched": env, "unbatched": dict(env, ETHICREC_ENCODE_BATCH_MAX="0"),
            "fp32": dict(env, ETHICREC_ENCODE_PRECISION="fp32")}
    procs = {name: subprocess.Popen([sys.executable, "-m", "service", "--artifacts", str(args.artifacts),
                                     "--port", str(ports[name]), "--audit-log", f"{tmp}/{name}.db"],
                                    env=envs[name], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for name in envs}
    procs["echo"] = subprocess.Popen([sys.executable, str(ROOT / "bench" / "echo_server.py"),
                                      "--port", str(ports["echo"])], env=env, cwd=ROOT)
    targets = {k: f"127.0.0.1:{p}" for k, p in ports.items()}
    try:
        for name, t in targets.items():
            wait_healthy(t, 180, procs[name])
        # Enough distinct requests for the warm-up, the latency blocks and both throughput runs of the
        # slowest server; each server walks the same list from the start (its own caches are cold).
        reqs = cold_requests(args.artifacts, 5 + args.requests + 4000)
        # The echo server caches nothing, and at its rate would run through the list: it cycles.
        feeds = {name: itertools.cycle(reqs) if name == "echo" else iter(reqs) for name in targets}
        locks = {name: threading.Lock() for name in targets}

        def next_req(name: str) -> pb.RankRequest:
            with locks[name]:
                return next(feeds[name])

        chans = {k: grpc.insecure_channel(v) for k, v in targets.items()}
        stubs = {k: pb_grpc.RecommenderStub(c) for k, c in chans.items()}
        for name in stubs:
            for _ in range(5):   # warm-up: first calls load lazily-built pieces
                stubs[name].Rank(next_req(name), timeout=60)
        lat: dict[str, list[float]] = {name: [] for name in targets}
        block = max(1, args.requests // 3)
        for _ in range(3):
            for name in targets:
                for _ in range(block):
                    req = next_req(name)
                    t0 = time.perf_counter()
                    stubs[name].Rank(req, timeout=60)
                    lat[name].append(time.perf_counter() - t0)

        def throughput(name: str, clients: int) -> float:
            count = [0] * clients
            stop = time.perf_counter() + args.seconds

            def worker(i: int) -> None:
                with grpc.insecure_channel(targets[name]) as ch:
                    stub = pb_grpc.RecommenderStub(ch)
                    while time.perf_counter() < stop:
                        stub.Rank(next_req(name), timeout=120)
                        count[i] += 1

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return sum(count) / (time.perf_counter() - t0)

        tput = {name: {c: throughput(name, c) for c in (1, 16)} for name in targets}

        # Bursts: 16 concurrent requests bring the same 20 new texts (fresh for every burst). Unbatched,
        # each request misses the cache and encodes them; batched, they are encoded once for all 16.
        bursts = cold_requests(args.artifacts, args.bursts * 16, share=16, tag="burst")
        burst_s: dict[str, list[float]] = {name: [] for name in ("batched", "unbatched")}
        for b in range(args.bursts):
            group = bursts[b * 16:(b + 1) * 16]
            for name in (("batched", "unbatched") if b % 2 == 0 else ("unbatched", "batched")):
                barrier = threading.Barrier(16)

                def one(req, name=name, barrier=barrier) -> None:
                    barrier.wait()
                    stubs[name].Rank(req, timeout=120)

                threads = [threading.Thread(target=one, args=(req,)) for req in group]
                t0 = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                burst_s[name].append(time.perf_counter() - t0)
        res = {"new_texts_per_request": NEW_PER_REQUEST, "candidates": len(reqs[0].candidates),
               "payload_bytes": reqs[0].ByteSize(), "requests": block * 3, "seconds": args.seconds,
               "bursts": {name: {"n": len(v), "median_s": float(np.median(v)), "rps": 16 / float(np.median(v))}
                          for name, v in burst_s.items()}}
        res["bursts"]["ratio_rps_batched_over_unbatched"] = (res["bursts"]["batched"]["rps"]
                                                            / res["bursts"]["unbatched"]["rps"])
        for name in targets:
            a = np.array(lat[name]) * 1000
            res[name] = {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
                         "rps_1": tput[name][1], "rps_16": tput[name][16]}
        res["ratio"] = {f"{a}/{b}": {k: res[a][k] / res[b][k] for k in ("p50_ms", "p99_ms", "rps_1", "rps_16")}
                        for a, b in (("batched", "unbatched"), ("batched", "fp32"), ("batched", "echo"),
                                     ("unbatched", "echo"))}
        print(f"{NEW_PER_REQUEST} uncached texts + {100 - NEW_PER_REQUEST} catalog items per request, "
              f"{res['payload_bytes']} bytes, {res['requests']} sequential requests per server")
        print(f"{'server':<10} {'p50 ms':>8} {'p99 ms':>8} {'rps@1':>8} {'rps@16':>8}")
        for name in targets:
            r = res[name]
            print(f"{name:<10} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['rps_1']:8.1f} {r['rps_16']:8.1f}")
        for key, q in res["ratio"].items():
            print(f"{key:<18} p50 {q['p50_ms']:.2f}  p99 {q['p99_ms']:.2f}  rps@1 {q['rps_1']:.2f}  "
                  f"rps@16 {q['rps_16']:.2f}")
        bu = res["bursts"]
        print(f"bursts of 16 requests sharing 20 new texts ({bu['batched']['n']} each): batched "
              f"{bu['batched']['median_s']:.2f} s, unbatched {bu['unbatched']['median_s']:.2f} s per burst -> "
              f"{bu['ratio_rps_batched_over_unbatched']:.2f}x")
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
