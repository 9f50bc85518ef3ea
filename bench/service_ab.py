"""`python -m service` from this checkout vs from another checkout (e.g. a `git worktree` of main), side by
side: same artifact, same venv, same request, latency blocks alternating between the two servers and
throughput rounds alternating A/B, B/A; also each server's own CPU time per call during the latency blocks
(from /proc), which a busy shared machine disturbs less than wall-clock latency. For changes on the request
path that must not cost anything.

    python bench/service_ab.py --baseline-tree ../main --artifacts artifacts [--requests 800] [--rounds 4]
        [--seconds 8] [--payload messages|ids] [--baseline-artifacts DIR] [--cold-texts] [--out FILE]

`--baseline-artifacts`: the baseline server's artifact, when the two trees need different ones (a change to
what an artifact holds, e.g. issue 25's harm model, which the tree before cannot load); both must be trained on
the same data with the same settings. `--cold-texts`: every call brings 80 catalog movies and 20 texts no
server has seen (bench/rank_cold_texts.py's requests, unique per call and per server), so each call pays the
text encoding and harm scoring of 20 new texts; sequential latency and CPU per call only (a throughput run would
repeat one request, whose texts are cached after its first call).

Each server runs with its tree as the working directory, so `python -m service` imports that tree's
`service`, `recsys` and `audit` packages. The audit key comes from a random ETHICREC_AUDIT_KEY (trees
without keyed pseudonyms ignore it and make a salt in the temporary log directory).
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
import time
from pathlib import Path

import grpc
import numpy as np
from ethicrec.v1 import recommender_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from rank_vs_echo import free_port, latency, throughput  # noqa: E402

from service.config import ServiceConfig  # noqa: E402
from service.demo import demo_request, stop_process, wait_healthy  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc: CPU spent, however busy the machine is."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-tree", type=Path, required=True)
    ap.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    ap.add_argument("--requests", type=int, default=800, help="sequential requests per server (in 8 blocks)")
    ap.add_argument("--rounds", type=int, default=4, help="throughput rounds per server (16 clients)")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--payload", choices=("messages", "ids"), default="messages")
    ap.add_argument("--baseline-artifacts", type=Path, default=None, help="default: --artifacts")
    ap.add_argument("--cold-texts", action="store_true", help="20 never-seen texts per call (latency only)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    artifacts = {"this": args.artifacts.resolve(), "baseline": (args.baseline_artifacts or args.artifacts).resolve()}
    workers = ServiceConfig().rpc_workers
    env = dict(os.environ, HF_HUB_OFFLINE="1", ETHICREC_MAX_WORKERS=str(workers),
               ETHICREC_AUDIT_KEY=secrets.token_hex(32), ETHICREC_LOG_LEVEL="INFO")
    tmp = tempfile.mkdtemp(prefix="ethicrec-ab-")
    trees = {"this": ROOT, "baseline": args.baseline_tree.resolve()}
    ports = {name: free_port() for name in trees}
    procs = {name: subprocess.Popen([sys.executable, "-m", "service", "--artifacts", str(artifacts[name]),
                                     "--port", str(ports[name]), "--audit-log", f"{tmp}/{name}/audit.db"],
                                    env=env, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for name, tree in trees.items()}
    targets = {name: f"127.0.0.1:{p}" for name, p in ports.items()}
    try:
        for name, t in targets.items():
            wait_healthy(t, 240, procs[name])
        req, _ = demo_request(args.artifacts, n=100)
        del req.candidates[100:]
        req.user.audit_attributes.clear()
        if args.payload == "ids":
            ids = [c.item_id for c in req.candidates]
            del req.candidates[:]
            req.candidate_ids.extend(ids)
        chans = {k: grpc.insecure_channel(v) for k, v in targets.items()}
        stubs = {k: pb_grpc.RecommenderStub(c) for k, c in chans.items()}
        block = max(1, args.requests // 8)
        if args.cold_texts:
            from rank_cold_texts import cold_requests

            # warm-up: 10 calls with their own new texts (the first inferences of each model), then 8 blocks
            cold = {name: iter(cold_requests(args.artifacts, 10 + 8 * block, tag=f"{name}-")) for name in trees}

            def calls(name: str, n: int) -> list[float]:
                out = []
                for _ in range(n):
                    r = next(cold[name])
                    t0 = time.perf_counter()
                    stubs[name].Rank(r, timeout=60)
                    out.append(time.perf_counter() - t0)
                return out
        else:
            def calls(name: str, n: int) -> list[float]:
                return latency(stubs[name], req, n)
        for name in stubs:
            calls(name, 10 if args.cold_texts else 50)
        lat: dict[str, list[float]] = {name: [] for name in trees}
        cpu: dict[str, float] = {name: 0.0 for name in trees}
        for i in range(8):
            for name in (("this", "baseline") if i % 2 == 0 else ("baseline", "this")):
                c0 = cpu_seconds(procs[name].pid)
                lat[name] += calls(name, block)
                cpu[name] += cpu_seconds(procs[name].pid) - c0
        rps: dict[str, list[float]] = {name: [] for name in trees}
        for i in range(0 if args.cold_texts else args.rounds):
            for name in (("this", "baseline") if i % 2 == 0 else ("baseline", "this")):
                rps[name].append(throughput(targets[name], req, 16, args.seconds))
        res: dict = {"payload": "cold_texts (80 catalog + 20 new texts)" if args.cold_texts else args.payload,
                     "payload_bytes": req.ByteSize(), "max_workers": workers,
                     "baseline_tree": str(trees["baseline"]), "artifacts": {k: str(v) for k, v in artifacts.items()}}
        for name in trees:
            a = np.array(lat[name]) * 1000
            res[name] = {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
                         "server_cpu_ms_per_call": 1000 * cpu[name] / len(lat[name]),
                         "rps_16_rounds": rps[name],
                         "rps_16_median": statistics.median(rps[name]) if rps[name] else float("nan")}
        res["ratio_this_over_baseline"] = {
            "p50": res["this"]["p50_ms"] / res["baseline"]["p50_ms"],
            "p99": res["this"]["p99_ms"] / res["baseline"]["p99_ms"],
            "server_cpu_per_call": res["this"]["server_cpu_ms_per_call"] / res["baseline"]["server_cpu_ms_per_call"],
            "rps_16": res["this"]["rps_16_median"] / res["baseline"]["rps_16_median"]}
        print(f"{'server':<10} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/call':>12} {'rps@16 (median of rounds)':>28}")
        for name in ("this", "baseline"):
            r = res[name]
            print(f"{name:<10} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['server_cpu_ms_per_call']:12.3f} "
                  f"{r['rps_16_median']:10.0f} ({', '.join(f'{x:.0f}' for x in r['rps_16_rounds'])})")
        q = res["ratio_this_over_baseline"]
        print(f"{'ratio':<10} {q['p50']:8.3f} {q['p99']:8.3f} {q['server_cpu_per_call']:12.3f} {q['rps_16']:10.3f}")
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
