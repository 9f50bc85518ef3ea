"""`python -m audit.train_harm --out ARTIFACTS [--quick] [--max-rows N] [--epochs E]`: fine-tune a BERT
harm classifier on the Davidson set and add it to the latest artifact as a NEW version.

Split (fixed seed, stratified by class): 80 % train, 10 % validation, 10 % held-out test
(`audit.harm_bert.split_indices`; seed, fractions, data sha256 and the test row indices are
stored in harm_bert/harm_bert.json, and `python -m audit.evaluate_harm` re-derives and checks
them). `--max-rows` subsamples the training rows (stratified), `--max-val-rows` the validation
rows; the test split is never touched. Unless `--no-augment`, benign identity-group sentences
(`TRAIN_TEMPLATES` x `IDENTITY_GROUPS`, templates disjoint from the evaluation's) are added as
'neither' examples (counterfactual augmentation against identity-term false positives).

After fine-tuning: temperature scaling fitted on validation; the threshold on P(harm) maximises
validation F1 (harmful vs neither) and is then raised, if needed, so that at most 0.4 % of the
artifact's catalog texts, of the MovieLens titles and of the distinct tag strings are flagged.
The new version (`recsys.artifact_update.derive_version`: copy LATEST, change, re-hash,
load-check, publish atomically) holds `harm_bert/` and a catalog.parquet whose harm scores come
from the new model; recsys.compose.load_artifacts prefers harm_bert/ over the n-gram harm/.

Profiles: --quick (CPU, 2 cores, ~10 min): 3000 training rows, 1500 validation rows, 1 epoch,
max_length 64. Full (GPU): all 19.8k training rows, all 2.5k validation rows, 3 epochs,
`--max-rows 0 --max-val-rows 0 --epochs 3 --device cuda`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT / "data" / "hate-speech-davidson" / "labeled_data.csv"
DEFAULT_MOVIELENS = ROOT / "data" / "ml-latest-small"


def _log(msg: str) -> None:
    print(f"[train_harm {datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def benign_sets(catalog_texts: list[str], movielens: Path | None) -> dict[str, list[str]]:
    """The benign strings the false-positive cap applies to: catalog texts, MovieLens titles, tag strings."""
    import pandas as pd

    sets = {"catalog_texts": list(catalog_texts)}
    if movielens is not None and (movielens / "movies.csv").is_file():
        sets["movielens_titles"] = pd.read_csv(movielens / "movies.csv")["title"].astype(str).tolist()
    if movielens is not None and (movielens / "tags.csv").is_file():
        tags = pd.read_csv(movielens / "tags.csv")["tag"].dropna().astype(str).str.strip()
        sets["movielens_tags"] = sorted(set(t for t in tags if t))
    return sets


def train_harm(artifacts: Path, *, data: Path = DEFAULT_DATA, movielens: Path | None = DEFAULT_MOVIELENS,
               base_model: Path | None = None, max_rows: int | None = 3000, max_val_rows: int | None = 1500,
               epochs: int = 1, batch_size: int = 32, lr: float = 5e-5, max_length: int = 64, seed: int = 0,
               augment: bool = True, max_benign_flag_rate: float = 0.004, device: str = "auto",
               max_steps: int | None = None, publish: bool = True):
    import numpy as np

    from audit.harm import HARM_CATEGORIES, load_davidson
    from audit.harm_bert import (IDENTITY_GROUPS, TRAIN_TEMPLATES, BertHarmClassifier, calibrate_and_threshold,
                                 fine_tune, identity_texts, softmax, split_indices, stratified_subsample)
    from recsys.artifact_update import base_version_dir, derive_version
    from recsys.catalog import Catalog
    from recsys.compose import check_servable
    from recsys.encoder import base_model_path

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t_start = time.perf_counter()
    vdir = base_version_dir(artifacts) if publish else None
    df = load_davidson(data)
    labels = df["label"].to_numpy()
    tr, va, te = split_indices(labels, seed=seed)
    tr_used = stratified_subsample(tr, labels, max_rows or None, seed)
    va_used = stratified_subsample(va, labels, max_val_rows or None, seed)
    texts = df["text"].tolist()
    train_texts = [texts[i] for i in tr_used]
    train_labels = labels[tr_used]
    n_aug = 0
    if augment:
        aug, _ = identity_texts(TRAIN_TEMPLATES, IDENTITY_GROUPS)
        train_texts += aug
        train_labels = np.concatenate([train_labels, np.full(len(aug), 2)])
        n_aug = len(aug)
    base = base_model or base_model_path()
    clf = BertHarmClassifier.from_base(base, device=device, seed=seed)
    clf.max_length = max_length
    _log(f"fine-tuning {base} on {len(train_texts)} rows ({n_aug} augmentation) on {clf.device}; "
         f"{len(va_used)} validation rows, {len(te)} test rows held out")
    summary = fine_tune(clf, train_texts, train_labels, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                        max_steps=max_steps, log=_log)
    _log(f"loss {summary['loss_first']:.3f} -> {summary['loss_last']:.3f} in {summary['seconds']:.0f}s")
    catalog = Catalog.load(vdir / "catalog.parquet") if vdir is not None else None
    benign = benign_sets(list(catalog.texts) if catalog is not None else [], movielens)
    t_cal = time.perf_counter()
    benign_logits = {k: clf.logits(v) for k, v in benign.items()}   # each set scored once
    cal = calibrate_and_threshold(clf, [texts[i] for i in va_used], labels[va_used], None, max_benign_flag_rate,
                                  benign_logits=benign_logits)
    _log(f"temperature {clf.temperature:.3f}, threshold {clf.threshold:.4f} (F1-best {cal['f1_best_threshold']}, "
         f"raised by {cal['raised_by']}), val AUC {cal['val_auc']:.4f}, benign flag rates "
         f"{ {k: round(v, 5) for k, v in cal['benign_flag_rate'].items()} } ({time.perf_counter() - t_cal:.0f}s)")
    clf.split = {"seed": seed, "test_frac": 0.1, "val_frac": 0.1, "data_sha256": file_sha256(data),
                 "n_rows": int(len(df)), "max_rows": max_rows or None, "max_val_rows": max_val_rows or None,
                 "augment": augment, "test_indices": te.tolist()}
    clf.metrics = {"training": summary, "calibration": cal, "n_augmentation": n_aug, "base_model": str(base),
                   "max_length": max_length, "seconds_total": None}
    if not publish:
        clf.metrics["seconds_total"] = round(time.perf_counter() - t_start, 1)
        return clf

    def add(staging: Path, meta: dict) -> dict:
        cat = Catalog.load(staging / "catalog.parquet")
        if catalog is not None and list(cat.texts) == list(catalog.texts):   # the copy: reuse its logits
            prob = softmax(benign_logits["catalog_texts"], clf.temperature)
            p = prob[:, 0] + prob[:, 1]
            c = [HARM_CATEGORIES[int(np.argmax(row[:2]))] for row in prob]
        else:
            p, c = clf.score(list(cat.texts))
        cat.harm_score, cat.harm_category = p, np.asarray(c, dtype=object)
        cat.save(staging / "catalog.parquet")
        clf.metrics["catalog_flag_rate"] = float((p >= clf.threshold).mean())
        clf.metrics["seconds_total"] = round(time.perf_counter() - t_start, 1)
        clf.save(staging / "harm_bert")
        meta.setdefault("metrics", {})["harm_bert"] = {
            "threshold": clf.threshold, "temperature": clf.temperature, "val_auc": cal["val_auc"],
            "catalog_flag_rate": clf.metrics["catalog_flag_rate"], "training": summary}
        return {"harm_bert": {"threshold": clf.threshold, "n_train": len(train_texts)}}

    final = derive_version(vdir, "harm_bert", add, check=check_servable)
    _log(f"published {final} (LATEST) with harm_bert/; catalog flag rate {clf.metrics['catalog_flag_rate']:.4%}; "
         f"{clf.metrics['seconds_total']:.0f}s in all")
    return final


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m audit.train_harm", description=__doc__.splitlines()[0])
    ap.add_argument("--out", "--artifacts", dest="out", type=Path, required=True,
                    help="artifact root (LATEST is extended with a new version)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Davidson labeled_data.csv")
    ap.add_argument("--movielens", type=Path, default=DEFAULT_MOVIELENS,
                    help="MovieLens dir whose movies.csv titles / tags.csv tags the false-positive cap covers")
    ap.add_argument("--quick", action="store_true", help="CPU profile (the defaults): 3000 train rows, 1500 "
                    "validation rows, 1 epoch")
    ap.add_argument("--max-rows", type=int, default=3000, help="training rows (0 = all)")
    ap.add_argument("--max-val-rows", type=int, default=1500, help="validation rows (0 = all)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--no-augment", action="store_true", help="no identity-template 'neither' examples")
    ap.add_argument("--base-model", type=Path, default=None, help="BERT dir (default: shipped all-MiniLM-L6-v2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    args = ap.parse_args(argv)
    from recsys.device import set_cpu_threads
    from recsys.errors import ArtifactError

    if not args.data.is_file():
        print(f"error: --data {args.data} not found", file=sys.stderr)
        return 2
    if args.base_model is not None and not (args.base_model / "config.json").is_file():
        print(f"error: --base-model {args.base_model} has no config.json", file=sys.stderr)
        return 2
    if args.epochs < 1 or args.max_rows < 0 or args.max_val_rows < 0:
        print("error: --epochs must be >= 1 and --max-rows/--max-val-rows >= 0", file=sys.stderr)
        return 2
    set_cpu_threads(args.threads)
    try:
        train_harm(args.out, data=args.data, movielens=args.movielens, base_model=args.base_model,
                   max_rows=args.max_rows, max_val_rows=args.max_val_rows, epochs=args.epochs,
                   batch_size=args.batch_size, lr=args.lr, max_length=args.max_length, seed=args.seed,
                   augment=not args.no_augment, device=args.device, max_steps=args.max_steps)
    except (ArtifactError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
