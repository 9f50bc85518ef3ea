"""`python -m service.demo`: start the server, wait until healthy, make one real
Rank call for a demo user, print the audited ranking, then stop (or keep serving).

The candidates are 100 catalog movies the user has not seen plus two items a
frontend might send: a harmful user-generated title and an adult-rated one for
an under-18 user, so the audit has something to do.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
from ethicrec.v1 import recommender_pb2 as pb
from ethicrec.v1 import recommender_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys.cli import cli_main

HARMFUL_TEXT = "you stupid bitch, go back where you came from"  # abusive demo text, Davidson-style


def wait_healthy(target: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server exited with status {proc.returncode} before becoming healthy")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.3)
    raise RuntimeError(f"server at {target} not healthy after {timeout:.0f}s")


def stop_process(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM (the server drains), then SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


def demo_request(artifacts: Path, user_id: str | None = None, n: int = 100, seed: int = 0) -> tuple[pb.RankRequest, dict]:
    from recsys.artifacts import resolve_version_dir
    from recsys.catalog import Catalog

    vdir = resolve_version_dir(artifacts)
    catalog = Catalog.load(vdir / "catalog.parquet")
    users = json.loads((vdir / "users.json").read_text())
    user_id = user_id or sorted(users, key=lambda u: (-len(users[u]), int(u) if u.isdigit() else 0))[0]
    seen = set(users.get(user_id, []))
    rng = np.random.default_rng(seed)
    pool = [i for i in np.argsort(-catalog.stats.log_pop)[:2000] if catalog.item_ids[i] not in seen]
    picks = rng.choice(pool, size=min(n, len(pool)), replace=False)
    titles = {catalog.item_ids[i]: catalog.titles[i] for i in picks}
    cands = [pb.Candidate(item_id=catalog.item_ids[i]) for i in picks]
    cands.append(pb.Candidate(item_id="ugc-1", text=HARMFUL_TEXT, group="user_generated"))
    cands.append(pb.Candidate(item_id="adult-1", text="Late Night Motel: an explicit adult drama",
                              attributes={"content_rating": "adult"}))
    titles["ugc-1"], titles["adult-1"] = HARMFUL_TEXT, "Late Night Motel (adult)"
    req = pb.RankRequest(user=pb.User(user_id=user_id, audit_attributes={"age_band": "under_18"}),
                         candidates=cands, top_k=10)
    return req, titles


def show(resp: pb.RankResponse, titles: dict[str, str], seconds: float) -> None:
    print(f"\nRank -> model {resp.model_version}, request {resp.request_id}, {seconds * 1000:.1f} ms")
    print(f"{'rank':>4}  {'score':>7}  {'BERT':>6}  {'LGBM':>7}  item")
    for it in resp.items:
        print(f"{it.rank:>4}  {it.score:7.3f}  {it.interest_score:6.3f}  {it.ranker_score:7.3f}  "
              f"{it.item_id}: {titles.get(it.item_id, '')}")
    for r in resp.removed:
        print(f"removed {r.item_id}: {r.reason} — {r.message}")
    print(f"audit {resp.audit.audit_id}: verdict {pb.Verdict.Name(resp.audit.verdict)} "
          f"(policy {resp.audit.policy_version})")
    for f in resp.audit.findings:
        print(f"  finding {f.code} [{f.metric}={f.value:.3f}, threshold {f.threshold:.3f}, {f.group}] {f.message}")


@cli_main(errors=(RuntimeError, grpc.RpcError), code=1, prefix="demo failed: ")
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m service.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=50051)
    ap.add_argument("--user", default=None, help="user id (default: the most active user)")
    ap.add_argument("--keep-serving", action="store_true", help="leave the server running (Ctrl-C stops it)")
    ap.add_argument("--startup-timeout", type=float, default=180.0)
    args = ap.parse_args(argv)
    target = f"{args.host}:{args.port}"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "service", "--artifacts", str(args.artifacts),
                             "--host", args.host, "--port", str(args.port)], env=env)
    try:
        wait_healthy(target, args.startup_timeout, proc)
        req, titles = demo_request(args.artifacts, args.user)
        with grpc.insecure_channel(target) as ch:
            stub = pb_grpc.RecommenderStub(ch)
            t0 = time.perf_counter()
            resp = stub.Rank(req, timeout=60)
            show(resp, titles, time.perf_counter() - t0)
        if args.keep_serving:
            print(f"\nserving on {target}; audit log var/audit.db; Ctrl-C stops", flush=True)
            proc.wait()
    except KeyboardInterrupt:
        pass   # Ctrl-C ends --keep-serving: a normal end
    finally:
        stop_process(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
