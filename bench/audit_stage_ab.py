"""The audit stage alone, this checkout's against a baseline's (e.g. main's), on the same requests, in one process.

bench/audit_overhead.py measures the audit's share of `Rank` end to end, but two runs of it minutes apart
differ by more than the exposure statistics cost on a shared 2-core VM. Here both stages audit the very same
ranked requests (resolve..rank run once per request by this checkout's pipeline), in alternating blocks, each
writing its own audit log as the server does (default policy, journal mode): the difference is the cost of
what changed in the stage. The baseline stage module is loaded from its file; the modules it imports
(audit.fairness, audit.monitor, audit.log, ...) are this checkout's, so keep them unchanged between the two
for a clean comparison (git diff main -- audit/fairness.py audit/monitor.py audit/log.py).

    python bench/audit_stage_ab.py --artifacts artifacts --baseline ../main-checkout/audit/stage.py \\
        [--requests 50] [--rounds 20] [--out FILE]
"""
from __future__ import annotations

import argparse
import importlib.util
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


def _baseline_class(path: Path):
    spec = importlib.util.spec_from_file_location("baseline_audit_stage", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod     # dataclasses in the module look themselves up there
    spec.loader.exec_module(mod)
    return mod.AuditStage


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    ap.add_argument("--baseline", type=Path, required=True, help="the baseline's audit/stage.py")
    ap.add_argument("--requests", type=int, default=50, help="distinct requests")
    ap.add_argument("--rounds", type=int, default=20, help="alternating rounds over all requests")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    single_threaded_blas()
    artifacts = load_artifacts(args.artifacts, device="cpu")
    policy = load_policy()
    tmp = Path(tempfile.mkdtemp(prefix="ethicrec-audit-ab-"))
    journal = policy.log.write == "journal"   # as the server writes its log
    pipe = build_pipeline(artifacts, policy=policy, audit_log=AuditLog(tmp / "prep.db", salt=b"b", journal=journal))
    stages = {"baseline": _baseline_class(args.baseline)(artifacts, policy,
                                                        AuditLog(tmp / "base.db", salt=b"b", journal=journal)),
              "this": AuditStage(artifacts, policy, AuditLog(tmp / "this.db", salt=b"b", journal=journal))}
    rng = np.random.default_rng(0)
    cat, users = artifacts.catalog, list(artifacts.users)
    # Requests as bench/audit_overhead.py sends (100 catalog candidates, top_k 10, ENFORCE, user attributes set),
    # with random users and candidates: the ranked contexts up to the audit, made once.
    ctxs = []
    for _ in range(args.requests):
        ids = [cat.item_ids[j] for j in rng.choice(len(cat.item_ids), size=100, replace=False)]
        req = RankRequest(UserContext(users[int(rng.integers(len(users)))],
                                      audit_attributes={"gender": "F", "age_band": "25-34"}),
                          tuple(Candidate(x) for x in ids), top_k=10, audit_mode=AuditMode.ENFORCE)
        ctx = pipe.run(req)
        ctxs.append(ctx)
    freeze_loaded_objects()
    times: dict[str, list[float]] = {k: [] for k in stages}
    for name, st in stages.items():     # warm-up: tables, caches
        for ctx in ctxs:
            st(ctx)
    for _ in range(args.rounds):
        for name, st in stages.items():
            for ctx in ctxs:
                t0 = time.perf_counter()
                st(ctx)
                times[name].append(time.perf_counter() - t0)
    res = {name: {"p50_us": float(np.median(t) * 1e6), "p90_us": float(np.percentile(t, 90) * 1e6),
                  "mean_us": float(np.mean(t) * 1e6), "calls": len(t)} for name, t in times.items()}
    diff = np.array(times["this"]) - np.array(times["baseline"])
    res["paired_difference_p50_us"] = float(np.median(diff) * 1e6)
    res["baseline"]["path"] = str(args.baseline)
    for name in stages:
        r = res[name]
        print(f"{name:<9} audit stage p50 {r['p50_us']:7.1f} us  p90 {r['p90_us']:7.1f} us  ({r['calls']} calls)")
    print(f"this - baseline, paired by request and round: p50 {res['paired_difference_p50_us']:+.1f} us")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2))
    for st in stages.values():
        st.close()
        st.log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
