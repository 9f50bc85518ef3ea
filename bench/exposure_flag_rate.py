"""How often the default policy's per-request exposure check fires, on the demo artifact's real requests.

Three kinds of request, each `--requests` times, through the in-process serving pipeline (the same stages
and audit the server runs), default policy, top_k 10, a random known user and 100 random catalog candidates:

  real     the catalog's own groups (popularity bucket head / long_tail): the ranker's popularity bias
  random   every candidate's group drawn 50/50 at random: the ranking cannot depend on it, so every
           EXPOSURE_DISPARITY here is a false flag
  planted  group A = the model's own top 50 of the 100, B = the rest: a bias that must be flagged

Run it against another checkout's code (e.g. main, for a before/after) with --code DIR.

    python bench/exposure_flag_rate.py --artifacts artifacts [--requests 300] [--code DIR] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--code", type=Path, default=Path(__file__).resolve().parent.parent,
                    help="checkout whose audit/recsys code to run (default: this one)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(args.code.resolve()))

    import numpy as np

    from audit.log import AuditLog
    from audit.policy import load_policy
    from recsys.compose import build_pipeline, load_artifacts
    from recsys.domain import AuditMode, Candidate, RankRequest, UserContext

    import audit
    code_at = str(Path(audit.__file__).resolve().parent.parent)
    artifacts = load_artifacts(args.artifacts, device="cpu")
    policy = load_policy()
    tmp = Path(tempfile.mkdtemp(prefix="ethicrec-flag-rate-"))
    log = AuditLog(tmp / "audit.db", salt=b"bench")
    pipe = build_pipeline(artifacts, policy=policy, audit_log=log)
    rng = np.random.default_rng(args.seed)
    cat = artifacts.catalog
    users = list(artifacts.users)
    result: dict = {"code": code_at, "policy": policy.version, "artifact": artifacts.version,
                    "requests_per_scenario": args.requests, "scenarios": {}}
    tallies = {s: Counter() for s in ("real", "random", "planted")}
    head_sizes = []
    for i in range(args.requests):
        user = UserContext(users[int(rng.integers(len(users)))])
        ids = [cat.item_ids[j] for j in rng.choice(len(cat.item_ids), size=100, replace=False)]
        full = pipe.run(RankRequest(user, tuple(Candidate(x) for x in ids), top_k=100,
                                    audit_mode=AuditMode.FLAG_ONLY))
        top50 = {full.item_ids[p] for p in full.order[:50]}
        head_sizes.append(int((full.groups == "head").sum()))
        random_groups = rng.choice(["a", "b"], size=100)
        requests = {
            "real": tuple(Candidate(x) for x in ids),
            "random": tuple(Candidate(x, group=g) for x, g in zip(ids, random_groups)),
            "planted": tuple(Candidate(x, group="A" if x in top50 else "B") for x in ids),
        }
        for name, cands in requests.items():
            resp = pipe.rank(RankRequest(user, cands, top_k=10, audit_mode=AuditMode.FLAG_ONLY))
            codes = {f.code for f in resp.audit.findings}
            t = tallies[name]
            t["requests"] += 1
            t["exposure_disparity"] += "EXPOSURE_DISPARITY" in codes
            t["insufficient_evidence"] += "INSUFFICIENT_EVIDENCE" in codes
            # The amortised window's finding rides on every later response (shared across the scenarios here).
            t["amortised_window_finding"] += "AMORTISED_EXPOSURE_DISPARITY" in codes
            t["verdict_" + resp.audit.verdict.value] += 1
    for name, t in tallies.items():
        n = t["requests"]
        result["scenarios"][name] = {"requests": n, **{k: v for k, v in t.items() if k != "requests"},
                                     "exposure_disparity_rate": t["exposure_disparity"] / n,
                                     "insufficient_evidence_rate": t["insufficient_evidence"] / n}
    result["real_head_candidates_mean"] = float(np.mean(head_sizes))
    print(f"code {code_at}, policy {policy.version}, artifact {artifacts.version}, {args.requests} requests each; "
          f"real requests hold {np.mean(head_sizes):.1f} head candidates of 100 on average")
    print(f"{'scenario':<9} {'EXPOSURE_DISPARITY':>19} {'INSUFFICIENT_EVIDENCE':>22} {'window finding':>15}  verdicts")
    for name, r in result["scenarios"].items():
        verdicts = ", ".join(f"{k[8:]} {v}" for k, v in sorted(r.items()) if k.startswith("verdict_"))
        print(f"{name:<9} {r['exposure_disparity_rate']:>18.1%} {r['insufficient_evidence_rate']:>22.1%} "
              f"{r.get('amortised_window_finding', 0) / r['requests']:>15.1%}  {verdicts}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
