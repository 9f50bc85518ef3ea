"""How close benign identity-group sentences come to being flagged, for one or more harm classifiers:
mean P(harmful) by group and the share flagged at 0.5 and at each model's own threshold.

Used to compare a model trained with the identity-template augmentation against one trained with
`--no-augment`: at the chosen threshold both may flag nothing, so the margin is what shows the bias.

    python bench/harm_identity_margin.py artifacts/<version> artifacts-noaug/<version> [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("versions", nargs="+", type=Path, help="artifact version directories with harm_bert/")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from audit.harm_bert import EVAL_TEMPLATES, BertHarmClassifier, identity_texts

    texts, groups = identity_texts(EVAL_TEMPLATES)
    g = np.asarray(groups)
    names = sorted(set(groups))
    results = {}
    for vdir in args.versions:
        if not (vdir / "harm_bert").is_dir():
            print(f"error: {vdir} has no harm_bert/", file=sys.stderr)
            return 2
        clf = BertHarmClassifier.load(vdir / "harm_bert", device="cpu")
        p = np.asarray(clf.score(texts)[0])
        res = {"threshold": float(clf.threshold), "n_augmentation": clf.metrics.get("n_augmentation"),
               "mean_p": float(p.mean()), "mean_p_by_group": {k: float(p[g == k].mean()) for k in names},
               "flagged_at_0.5": float(np.mean(p >= 0.5)),
               "flagged_at_threshold": float(np.mean(p >= clf.threshold))}
        results[str(vdir)] = res
        worst = max(res["mean_p_by_group"].items(), key=lambda kv: kv[1])
        print(f"{vdir}: augmentation rows {res['n_augmentation']}, threshold {res['threshold']:.3f}; benign identity "
              f"sentences: mean P(harmful) {res['mean_p']:.3f} (highest group {worst[0]} {worst[1]:.3f}), flagged "
              f"{res['flagged_at_0.5']:.0%} at 0.5, {res['flagged_at_threshold']:.0%} at the threshold")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
