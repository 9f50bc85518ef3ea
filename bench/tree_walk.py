"""Scoring the artifact's LightGBM ranker: QuickScorer (with and without the per-item split memo the rank stage
uses) vs the node-by-node walk vs LightGBM's own predict.

All four score the same rows in one process, in alternating blocks (so machine noise hits them alike), and
must return the same numbers (checked first). Two inputs: a request's feature rows (100 catalog candidates of
one known user, built by the pipeline) and a batch chunk (those rows tiled to 20,000, which takes the
row-parallel kernels as the batch job does).

    python bench/tree_walk.py --artifacts artifacts [--rounds 5] [--out bench/results/tree_walk.json]
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
sys.path.insert(0, str(ROOT / "bench"))

from audit_overhead import _request  # noqa: E402

from audit.log import AuditLog  # noqa: E402
from audit.policy import load_policy  # noqa: E402
from recsys.compose import build_pipeline, load_artifacts  # noqa: E402
from recsys.device import single_threaded_blas  # noqa: E402
from recsys.features import ITEM_FEATURES, item_features  # noqa: E402


def _median_s(fn, X: np.ndarray, calls: int) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn(X)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    ap.add_argument("--rounds", type=int, default=5, help="alternating blocks per scorer and input")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    single_threaded_blas()
    artifacts = load_artifacts(args.artifacts, device="cpu")
    ranker = artifacts.ranker
    quick = ranker.compiled_
    if quick is None or quick.quickscorer is None:
        print("this ranker is not covered by QuickScorer (see recsys/quickscorer.py)", file=sys.stderr)
        return 2
    walk = dataclasses.replace(quick, quickscorer=None)
    with tempfile.TemporaryDirectory() as tmp:
        log = AuditLog(Path(tmp) / "audit.db", salt=b"bench")
        ctx = build_pipeline(artifacts, policy=load_policy(), audit_log=log).run(_request(artifacts))
        log.close()
    request_rows = np.ascontiguousarray(ctx.X, dtype=np.float64)
    batch_rows = np.tile(request_rows, (200, 1))
    memo = ranker.item_memo(ITEM_FEATURES, item_features(artifacts.catalog))
    keys = {len(request_rows): ctx.cand_idx, len(batch_rows): np.tile(ctx.cand_idx, 200)}
    scorers = {
        "quickscorer_item_memo": lambda X: quick.predict(X, keys=keys[len(X)], memo=memo),
        "quickscorer": quick.predict,
        "node_walk": walk.predict,
        "lightgbm": lambda X: ranker.booster_.predict(X, num_iteration=ranker.best_iteration_, num_threads=1),
    }
    result: dict = {"trees": len(quick.node_start) - 1, "leaves_max": int(np.max(np.diff(quick.leaf_start))),
                    "features": quick.n_features, "inputs": {}}
    for name, X, calls in (("request_100_rows", request_rows, 300), ("batch_20000_rows", batch_rows, 3)):
        want = scorers["lightgbm"](X)
        for scorer, fn in scorers.items():
            np.testing.assert_array_equal(fn(X), want, err_msg=f"{scorer} differs from LightGBM on {name}")
        times: dict[str, list[float]] = {s: [] for s in scorers}
        for r in range(args.rounds):
            order = list(scorers) if r % 2 == 0 else list(reversed(scorers))
            for scorer in order:
                times[scorer].append(_median_s(scorers[scorer], X, calls))
        med = {s: float(np.median(t)) for s, t in times.items()}
        base = med["quickscorer_item_memo"]   # what the rank stage runs
        row = {"rows": len(X), "median_ms": {s: v * 1e3 for s, v in med.items()},
               "over_quickscorer_item_memo": {s: v / base for s, v in med.items()},
               "per_round_over_quickscorer_item_memo": {
                   s: [a / b for a, b in zip(times[s], times["quickscorer_item_memo"])] for s in scorers}}
        result["inputs"][name] = row
        print(f"{name}: QuickScorer with the item memo {base * 1e3:.3f} ms; time over it (median, per round):")
        for scorer in scorers:
            print(f"  {scorer:<22} {row['over_quickscorer_item_memo'][scorer]:5.2f}x  "
                  + ", ".join(f"{x:.2f}" for x in row["per_round_over_quickscorer_item_memo"][scorer]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
