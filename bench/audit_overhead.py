"""Audit overhead per request: the numpy fast path vs Fairlearn MetricFrame per request.

Two pipelines on the same artifact, identical except for how the audit
stage computes each request's group exposure metrics, are run on the same
requests in alternating blocks (so machine noise hits both alike). Every
call goes through the whole in-process pipeline, audit log write included.
The audit's share is reported against the in-process pipeline and against
the end-to-end gRPC `Rank` latency, measured in the same run on an
in-process server running the fast path; and, most robustly, as the audit
stage's own time inside the very `Rank` calls whose latency is measured.

    python bench/audit_overhead.py --artifacts artifacts [--requests 600] [--out bench/results/audit_overhead.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audit.log import AuditLog  # noqa: E402
from audit.policy import load_policy  # noqa: E402
from audit.stage import AuditStage  # noqa: E402
from recsys.compose import build_pipeline, load_artifacts  # noqa: E402
from recsys.device import single_threaded_blas  # noqa: E402
from recsys.domain import AuditMode, Candidate, RankRequest, UserContext  # noqa: E402
from service.server import freeze_loaded_objects  # noqa: E402


def _request(artifacts, n: int = 100) -> RankRequest:
    cat = artifacts.catalog
    order = np.argsort(-cat.stats.log_pop, kind="stable")
    ids = [cat.item_ids[i] for i in order[: n * 3 : 3]]
    user = next(iter(artifacts.users))
    return RankRequest(UserContext(user, audit_attributes={"gender": "F", "age_band": "25-34"}),
                       tuple(Candidate(i) for i in ids), top_k=10, audit_mode=AuditMode.ENFORCE)


def _pipeline(artifacts, policy, log, mode: str):
    pipe = build_pipeline(artifacts, policy=policy, audit_log=log)
    i = next(j for j, s in enumerate(pipe.stages) if s.name == "audit")
    pipe.stages[i] = AuditStage(artifacts, policy, log, exposure_metrics=mode)
    return pipe


class _Timed:
    """A pipeline stage that also keeps its own duration per call (the servicer's ctx is not returned)."""

    def __init__(self, stage) -> None:
        self.stage = stage
        self.times: list[float] = []

    def __getattr__(self, name: str):
        return getattr(self.stage, name)

    def __call__(self, ctx) -> None:
        t0 = time.perf_counter()
        self.stage(ctx)
        self.times.append(time.perf_counter() - t0)


def _grpc_rank(artifacts_dir: Path, req: RankRequest, n: int, tmp: Path) -> tuple[np.ndarray, np.ndarray]:
    """Latency of n sequential `Rank` calls on an in-process server (default policy, fast path, journal)
    and the audit stage's time inside each of those same calls."""
    import grpc
    from ethicrec.v1 import recommender_pb2 as pb
    from ethicrec.v1 import recommender_pb2_grpc as pb_grpc

    from service.config import ServiceConfig
    from service.server import create_server, freeze_loaded_objects, load_app

    cfg = ServiceConfig(host="127.0.0.1", port=0, artifacts=artifacts_dir, audit_log=tmp / "grpc.db", device="cpu")
    app = load_app(cfg)
    stages = app.current.get().pipeline.stages
    i = next(j for j, st in enumerate(stages) if st.name == "audit")
    timed = stages[i] = _Timed(stages[i])
    freeze_loaded_objects()
    server, port = create_server(cfg, app)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.RecommenderStub(ch)
            msg = pb.RankRequest(
                user=pb.User(user_id=req.user.user_id, audit_attributes=req.user.audit_attributes),
                candidates=[pb.Candidate(item_id=c.item_id) for c in req.candidates], top_k=req.top_k,
                audit_mode=pb.AUDIT_MODE_ENFORCE)
            for _ in range(30):
                stub.Rank(msg, timeout=30)
            del timed.times[:]
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                stub.Rank(msg, timeout=30)
                out.append(time.perf_counter() - t0)
        return np.array(out), np.array(timed.times)
    finally:
        server.stop(0).wait()
        app.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    ap.add_argument("--requests", type=int, default=600, help="requests per mode, in blocks of 50")
    ap.add_argument("--grpc-requests", type=int, default=600, help="sequential gRPC Rank calls")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    single_threaded_blas()   # as the server (service/server.py: load_app) runs
    artifacts = load_artifacts(args.artifacts, device="cpu")
    # The time budget is raised so that a slow MetricFrame call in the reference mode (a GC pause, another
    # thread holding the GIL) is measured rather than failing the run; it does not change what is computed.
    policy = dataclasses.replace(load_policy(), time_budget_ms=60_000.0)
    tmp = Path(tempfile.mkdtemp(prefix="ethicrec-audit-bench-"))
    # (exposure metrics, audit-log write) per mode: the server's configuration (fast path, journal per the
    # default policy), the same with the SQLite transaction on the request path, and the reference.
    modes = {"fast": ("fast", policy.log.write), "fast-direct": ("fast", "direct"),
             "fairlearn": ("fairlearn", policy.log.write)}
    logs = {m: AuditLog(tmp / f"{m}.db", salt=b"bench", journal=w == "journal") for m, (_, w) in modes.items()}
    pipes = {m: _pipeline(artifacts, policy, logs[m], metrics) for m, (metrics, _) in modes.items()}
    req = _request(artifacts)
    freeze_loaded_objects()   # as `python -m service` does once loaded
    for pipe in pipes.values():
        for _ in range(20):
            pipe.run(req)
    timings: dict[str, list[dict[str, float]]] = {m: [] for m in pipes}
    for _ in range(args.requests // 50):
        for mode, pipe in pipes.items():
            for _ in range(50):
                timings[mode].append(pipe.run(req).timings)
    rank_s, server_audit_s = _grpc_rank(args.artifacts, req, args.grpc_requests, tmp)
    if len(server_audit_s) != len(rank_s):
        raise SystemExit(f"{len(rank_s)} Rank calls but {len(server_audit_s)} audit timings")
    grpc_p50 = float(np.median(rank_s))
    result: dict[str, object] = {"requests_per_mode": len(timings["fast"]), "candidates": len(req.candidates),
                                 "grpc_rank_p50_ms": grpc_p50 * 1e3, "modes": {}}
    # The robust figure: the audit stage's own time inside the very Rank calls whose latency is measured
    # (the in-process modes above and the gRPC run are minutes apart, and this machine's speed drifts).
    result["same_requests"] = {
        "grpc_requests": len(rank_s), "rank_p50_ms": grpc_p50 * 1e3,
        "audit_p50_ms": float(np.median(server_audit_s) * 1e3),
        "audit_share_of_rank_p50": float(np.median(server_audit_s) / grpc_p50),
        "audit_share_per_request_p50": float(np.median(server_audit_s / rank_s)),
        "audit_share_per_request_p90": float(np.percentile(server_audit_s / rank_s, 90)),
    }
    for mode, rows in timings.items():
        stages = [k for k in rows[0] if not k.startswith("audit.")]
        total = np.array([sum(r[k] for k in stages) for r in rows])
        audit = np.array([r["audit"] for r in rows])
        log_w = np.array([r["audit.log_write"] for r in rows])
        result["modes"][mode] = {
            "pipeline_p50_ms": float(np.median(total) * 1e3),
            "audit_p50_ms": float(np.median(audit) * 1e3),
            "audit_checks_p50_ms": float(np.median(audit - log_w) * 1e3),
            "audit_log_write_p50_ms": float(np.median(log_w) * 1e3),
            "audit_share_of_pipeline": float(np.median(audit / total)),
            "audit_share_of_grpc_rank_p50": float(np.median(audit) / grpc_p50),
            "audit_checks_share_of_grpc_rank_p50": float(np.median(audit - log_w) / grpc_p50),
        }
    f, r = result["modes"]["fast"], result["modes"]["fairlearn"]
    result["fairlearn_over_fast_audit"] = r["audit_p50_ms"] / f["audit_p50_ms"]
    result["log_write"] = {m: w for m, (_, w) in modes.items()}
    print(f"{'mode':<12} {'pipeline':>9} {'audit':>7} {'checks':>7} {'log':>6} {'audit/pipe':>10} {'audit/Rank':>10}")
    for mode, m in result["modes"].items():
        print(f"{mode:<12} {m['pipeline_p50_ms']:>8.2f}ms {m['audit_p50_ms']:>6.2f}ms {m['audit_checks_p50_ms']:>6.2f}ms "
              f"{m['audit_log_write_p50_ms']:>5.2f}ms {m['audit_share_of_pipeline']:>10.1%} "
              f"{m['audit_share_of_grpc_rank_p50']:>10.1%}")
    print(f"gRPC Rank p50 (fast path, same run): {grpc_p50 * 1e3:.2f} ms; "
          f"MetricFrame audit / fast audit: {result['fairlearn_over_fast_audit']:.1f}x")
    sr = result["same_requests"]
    print(f"same {sr['grpc_requests']} gRPC Rank calls: audit stage p50 {sr['audit_p50_ms']:.3f} ms of Rank p50 "
          f"{sr['rank_p50_ms']:.2f} ms = {sr['audit_share_of_rank_p50']:.1%}; per request audit/Rank p50 "
          f"{sr['audit_share_per_request_p50']:.1%}, p90 {sr['audit_share_per_request_p90']:.1%}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    for log in logs.values():
        log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
