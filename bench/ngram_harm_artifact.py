"""A copy of an artifact root whose LATEST carries the harm classifier `recsys.train` shipped before issue 25
(the char-n-gram of audit/harm.py, trained exactly as that code trained it: every Davidson row, threshold capped
on the catalog's titles, catalog texts re-scored), everything else byte for byte the same.

Why: a tree from before issue 25 cannot load this branch's harm model (harm/harm_model.json), so an A/B of the
two trees (bench/service_ab.py --baseline-artifacts) needs an artifact each. Training the baseline's separately
would also change nothing but the harm model (same data, seed and ranking code), at the price of a second
training run; this derives it in a minute and keeps the interest model, ranker and vectors identical, so the
servers differ only in their code and harm classifier.

    python bench/ngram_harm_artifact.py --artifacts /tmp/a/this --out /tmp/a/ngram
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DAVIDSON = ROOT / "data" / "hate-speech-davidson" / "labeled_data.csv"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, required=True, help="artifact root to copy")
    ap.add_argument("--out", type=Path, required=True, help="new artifact root (must not exist)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.out.exists():
        print(f"error: --out {args.out} exists", file=sys.stderr)
        return 2

    from audit.harm import load_davidson, train_harm_classifier
    from recsys.artifact_update import base_version_dir, derive_version
    from recsys.catalog import Catalog

    shutil.copytree(args.artifacts, args.out)
    vdir = base_version_dir(args.out)
    titles = list(Catalog.load(vdir / "catalog.parquet").titles)
    clf = train_harm_classifier(load_davidson(DAVIDSON), benign_texts=titles, seed=args.seed)

    def change(staging: Path, meta: dict) -> dict:
        cat = Catalog.load(staging / "catalog.parquet")
        p, c = clf.score(list(cat.texts))
        cat.harm_score, cat.harm_category = np.asarray(p, dtype=np.float64), np.asarray(c, dtype=object)
        cat.save(staging / "catalog.parquet")
        shutil.rmtree(staging / "harm")
        shutil.rmtree(staging / "harm_bert", ignore_errors=True)
        clf.save(staging / "harm")
        rate = float((np.asarray(p) >= clf.threshold).mean())
        meta.setdefault("metrics", {})["harm"] = clf.metrics | {"threshold": clf.threshold, "catalog_flag_rate": rate}
        return {"harm": {"kind": "char-ngram (before issue 25)", "threshold": clf.threshold}}

    final = derive_version(vdir, "harm", change)
    print(f"{final}: n-gram harm, threshold {clf.threshold:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
