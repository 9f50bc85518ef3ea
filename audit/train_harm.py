"""`python -m audit.train_harm --out ARTIFACTS [--profile quick|full] [--backbone frozen|finetuned]`: retrain the
artifact's harm classifier (audit/harm_model.py) and publish it as a NEW derived version.

What `recsys.train` trains is `--profile quick --backbone frozen`; this command trains the same recipe on
more data (`--profile full`: every Davidson training row) or the fine-tuned backbone (`--backbone
finetuned`: the whole MiniLM with the 7-way head; meant for a GPU, `--device cuda`). Data, split,
calibration and thresholds: audit/harm_fit.py (Davidson 80/10/10, seed 0, the test split untouched; the
functional suite's train templates, split again by template for validation; its held-out templates and
HateCheck never read). The false-positive caps cover the artifact's catalog texts, titles and tags.

The new version (`recsys.artifact_update.derive_version`: copy LATEST, change, re-hash, load-check,
publish atomically) holds the new harm/ and a catalog.parquet whose harm scores and categories come from
it; an older harm_bert/ is dropped from the copy so the new model is the one served. Bad input: one line on
stderr, exit 2, nothing published.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

from recsys.cli import cli_main, fail, first_line
from recsys.digest import sha256_file

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT / "data" / "hate-speech-davidson" / "labeled_data.csv"


def _log(msg: str) -> None:
    print(f"[train_harm {datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def train_harm(artifacts: Path, *, data: Path = DEFAULT_DATA, base_model: Path | None = None,
               profile: str = "quick", backbone: str | None = None, max_rows: int | None | str = "profile",
               epochs: int = 2, lr: float = 5e-5, seed: int = 0, device: str = "auto",
               log=_log) -> Path:
    """Train on the latest version's catalog and publish a derived version; returns its directory."""
    import numpy as np

    from audit.harm_fit import benign_sets_of, fit_harm_model
    from recsys.artifact_update import base_version_dir, derive_version
    from recsys.catalog import Catalog
    from recsys.compose import check_servable
    from recsys.encoder import base_model_path

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    vdir = base_version_dir(artifacts)
    catalog = Catalog.load(vdir / "catalog.parquet")
    model = fit_harm_model(data, encoder_path=base_model or base_model_path(), benign=benign_sets_of(catalog),
                           profile=profile, backbone=backbone, max_rows=max_rows, epochs=epochs, lr=lr, seed=seed,
                           device=device, log=log)
    model.metrics["data_sha256"] = sha256_file(data)

    def change(staging: Path, meta: dict) -> dict:
        cat = Catalog.load(staging / "catalog.parquet")
        p, c = model.score(list(cat.texts))
        cat.harm_score, cat.harm_category = np.asarray(p, dtype=np.float64), np.asarray(c, dtype=object)
        cat.save(staging / "catalog.parquet")
        shutil.rmtree(staging / "harm")
        shutil.rmtree(staging / "harm_bert", ignore_errors=True)
        model.metrics["catalog_flag_rate"] = float((p >= model.threshold).mean())
        model.metrics["seconds_command"] = round(time.perf_counter() - t0, 1)
        model.save(staging / "harm")
        meta.setdefault("metrics", {})["harm"] = model.metrics | {"threshold": model.threshold}
        return {"harm": {"backbone": model.backbone, "profile": profile, "threshold": model.threshold}}

    final = derive_version(vdir, "harm", change, check=check_servable)
    log(f"published {final} (LATEST); catalog flag rate {model.metrics['catalog_flag_rate']:.4%}; "
        f"{time.perf_counter() - t0:.0f}s in all")
    return final


def _known_errors() -> tuple[type[BaseException], ...]:
    from audit.harm_suite import SuiteError
    from recsys.errors import ArtifactError

    return (ArtifactError, SuiteError, ValueError, KeyError, OSError)


@cli_main(errors=_known_errors, message=first_line)
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m audit.train_harm", description=__doc__.splitlines()[0])
    ap.add_argument("--out", "--artifacts", dest="out", type=Path, required=True,
                    help="artifact root (LATEST is extended with a new version)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Davidson labeled_data.csv")
    ap.add_argument("--profile", choices=["quick", "full"], default="full",
                    help="quick: 4000 Davidson training rows (what recsys.train --quick ships); full: all")
    ap.add_argument("--quick", action="store_true", help="same as --profile quick")
    ap.add_argument("--backbone", choices=["frozen", "finetuned"], default=None,
                    help="frozen MiniLM + logistic-regression head (default) or the whole MiniLM fine-tuned")
    ap.add_argument("--max-rows", type=int, default=None, help="Davidson training rows (0 = all; default: profile)")
    ap.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs (--backbone finetuned)")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--base-model", type=Path, default=None, help="BERT dir (default: shipped all-MiniLM-L6-v2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    args = ap.parse_args(argv)
    from recsys.device import set_cpu_threads

    if not args.data.is_file():
        fail(f"--data {args.data} not found")
    if args.base_model is not None and not (args.base_model / "config.json").is_file():
        fail(f"--base-model {args.base_model} has no config.json")
    if args.epochs < 1 or (args.max_rows is not None and args.max_rows < 0):
        fail("--epochs must be >= 1 and --max-rows >= 0")
    set_cpu_threads(args.threads)
    max_rows = "profile" if args.max_rows is None else (args.max_rows or None)
    train_harm(args.out, data=args.data, base_model=args.base_model,
               profile="quick" if args.quick else args.profile, backbone=args.backbone, max_rows=max_rows,
               epochs=args.epochs, lr=args.lr, seed=args.seed, device=args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
