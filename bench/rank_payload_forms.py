"""Rank with the same 100 catalog candidates sent two ways, on one server: as `Candidate` messages and as the
packed `candidate_ids` field. The client alternates blocks between the two forms so machine noise hits both
alike; reports p50 latency of each and the ratio ids / messages.

    python bench/rank_payload_forms.py --artifacts artifacts [--blocks 10] [--block 100] [--out FILE]
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

import grpc
import numpy as np
from ethicrec.v1 import recommender_pb2 as pb
from ethicrec.v1 import recommender_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from rank_vs_echo import free_port  # noqa: E402
from service.demo import demo_request, stop_process, wait_healthy  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    ap.add_argument("--blocks", type=int, default=10, help="blocks per form, alternating")
    ap.add_argument("--block", type=int, default=100, help="calls per block")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    port, tmp = free_port(), tempfile.mkdtemp(prefix="ethicrec-bench-")
    proc = subprocess.Popen([sys.executable, "-m", "service", "--artifacts", str(args.artifacts), "--port", str(port),
                             "--audit-log", f"{tmp}/audit.db"], cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        target = f"127.0.0.1:{port}"
        wait_healthy(target, 180, proc)
        messages, _ = demo_request(args.artifacts, n=100)
        del messages.candidates[100:]     # catalog candidates only, as rank_vs_echo
        messages.user.audit_attributes.clear()
        ids = pb.RankRequest()
        ids.CopyFrom(messages)
        del ids.candidates[:]
        ids.candidate_ids.extend(c.item_id for c in messages.candidates)
        forms = {"messages": messages, "ids": ids}
        with grpc.insecure_channel(target) as ch:
            stub = pb_grpc.RecommenderStub(ch)
            first = {name: stub.Rank(req, timeout=30) for name, req in forms.items()}
            assert [i.item_id for i in first["messages"].items] == [i.item_id for i in first["ids"].items]
            for req in forms.values():
                for _ in range(50):   # warm-up
                    stub.Rank(req, timeout=30)
            lat: dict[str, list[float]] = {name: [] for name in forms}
            for _ in range(args.blocks):
                for name, req in forms.items():
                    for _ in range(args.block):
                        t0 = time.perf_counter()
                        stub.Rank(req, timeout=30)
                        lat[name].append(time.perf_counter() - t0)
    finally:
        stop_process(proc)
    res = {name: {"bytes": forms[name].ByteSize(), "p50_ms": float(np.median(v) * 1e3),
                  "p99_ms": float(np.percentile(v, 99) * 1e3), "calls": len(v)} for name, v in lat.items()}
    res["p50_ratio_ids_over_messages"] = res["ids"]["p50_ms"] / res["messages"]["p50_ms"]
    for name in forms:
        r = res[name]
        print(f"{name:<9} {r['bytes']:4d} bytes  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
              f"({r['calls']} calls)")
    print(f"p50 ids / messages: {res['p50_ratio_ids_over_messages']:.3f}")
    if args.out:
        args.out.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
