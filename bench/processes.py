"""Throughput of `python -m service --processes N` vs one process, beside the echo server run the same ways.

The kernel spreads *connections* over processes that share a port (SO_REUSEPORT), so here each client thread
opens its own connection (a local subchannel pool), as many frontends would; with one shared connection a
second process would get nothing to do. Rounds alternate the four servers (ethicrec and echo, 1 and N
processes), each started fresh: rps with 16 client threads, and with 1.

    python bench/processes.py --artifacts artifacts [--processes 2] [--rounds 2] [--seconds 8] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rank_vs_echo import free_port, throughput  # noqa: E402  (bench/ is this script's directory)
from service.config import ServiceConfig  # noqa: E402
from service.demo import demo_request, stop_process, wait_healthy  # noqa: E402


def start(kind: str, n: int, port: int, args, workers: int, tmp: str) -> list[subprocess.Popen]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", ETHICREC_MAX_WORKERS=str(workers))
    if kind == "ethicrec":
        return [subprocess.Popen([sys.executable, "-m", "service", "--artifacts", str(args.artifacts), "--port",
                                  str(port), "--processes", str(n), "--audit-log", f"{tmp}/audit-{port}.db"],
                                 env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    # The echo server as n processes on one port (gRPC's servers set SO_REUSEPORT by default).
    return [subprocess.Popen([sys.executable, str(ROOT / "bench" / "echo_server.py"), "--port", str(port),
                              "--max-workers", str(workers)], env=env, cwd=ROOT) for _ in range(n)]


def wait_all(target: str, procs: list[subprocess.Popen], req, settle: float) -> None:
    for p in procs:
        wait_healthy(target, 300, p)
    # Health answers once one process is up; give the others time to load, then warm every connection path.
    time.sleep(settle)
    throughput(target, req, 16, 3.0, own_connections=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    workers = ServiceConfig().rpc_workers
    req, _ = demo_request(args.artifacts, n=100)
    del req.candidates[100:]
    req.user.audit_attributes.clear()
    tmp = tempfile.mkdtemp(prefix="ethicrec-bench-")
    runs: dict[str, list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for kind in ("ethicrec", "echo"):
            for n in (1, args.processes):
                port = free_port()
                target = f"127.0.0.1:{port}"
                procs = start(kind, n, port, args, workers, tmp)
                try:
                    wait_all(target, procs, req, settle=20.0 if kind == "ethicrec" and n > 1 else 2.0)
                    r = {"rps_16": throughput(target, req, 16, args.seconds, own_connections=True),
                         "rps_1": throughput(target, req, 1, args.seconds / 2, own_connections=True)}
                finally:
                    for p in procs:
                        stop_process(p)
                runs.setdefault(f"{kind}_x{n}", []).append(r)
                print(f"{kind:9s} x{n}: rps@16 {r['rps_16']:7.0f}  rps@1 {r['rps_1']:6.0f}", flush=True)
    med = {k: {m: float(np.median([r[m] for r in v])) for m in ("rps_16", "rps_1")} for k, v in runs.items()}
    n = args.processes
    ratios = {
        f"ethicrec_x{n}_over_x1": med[f"ethicrec_x{n}"]["rps_16"] / med["ethicrec_x1"]["rps_16"],
        f"echo_x{n}_over_x1": med[f"echo_x{n}"]["rps_16"] / med["echo_x1"]["rps_16"],
        "ethicrec_over_echo_x1": med["ethicrec_x1"]["rps_16"] / med["echo_x1"]["rps_16"],
        f"ethicrec_x{n}_over_echo_x1": med[f"ethicrec_x{n}"]["rps_16"] / med["echo_x1"]["rps_16"],
        f"ethicrec_x{n}_over_echo_x{n}": med[f"ethicrec_x{n}"]["rps_16"] / med[f"echo_x{n}"]["rps_16"],
    }
    print("medians (rps@16 with a connection per client thread): " +
          ", ".join(f"{k} {v['rps_16']:.0f}" for k, v in med.items()))
    print("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    if args.out:
        args.out.write_text(json.dumps({"processes": n, "max_workers": workers, "seconds": args.seconds,
                                        "runs": runs, "median": med, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
