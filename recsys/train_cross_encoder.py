"""`python -m recsys.train_cross_encoder --data DIR --artifacts ARTIFACTS [--quick]`: add a BERT
cross-encoder to the latest artifact, as a new version.

The cross-encoder learns on the same per-user split as the artifact's bi-encoder
(recsys/split.py): the data must be the one the artifact was trained on (its sha256,
with the artifact's `sample_users`, is checked), positives are `make_pairs` pairs from
each user's fit part with item texts as of the fit state, negatives are sampled
uniformly from items with an interaction in some user's fit part. It starts from the shipped all-MiniLM-L6-v2
(`--base-model` to change; a fresh one-logit head is added) and is saved with
safetensors as `cross_encoder/` in a NEW version derived from LATEST
(`recsys.artifact_update`: copy, add, re-hash, verify, publish atomically; the
version it came from stays untouched). Servers load it on reload; the re-scoring
stage runs by default only when the artifact is loaded on a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path

from recsys.cli import cli_main, fail

ROOT = Path(__file__).resolve().parent.parent


def _log(msg: str) -> None:
    print(f"[train_cross_encoder {datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def train_cross_encoder(data: Path, artifacts: Path, *, base_model: Path | None = None, max_pairs: int = 20_000,
                        negatives_per_positive: int = 3, epochs: int = 1, batch_size: int = 32, lr: float = 3e-5,
                        seed: int = 0, device: str = "auto", max_steps: int | None = None,
                        progress: bool = True) -> Path:
    import numpy as np
    import torch

    from recsys.artifact_update import base_version_dir, derive_version
    from recsys.compose import check_servable
    from recsys.data import load_dataset
    from recsys.encoder import base_model_path
    from recsys.interest import CrossEncoder, fine_tune_cross_encoder
    from recsys.interest_training import make_pairs
    from recsys.offline import split_from_metadata

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    vdir = base_version_dir(artifacts)
    meta = json.loads((vdir / "metadata.json").read_text())
    ds = load_dataset(data)
    params = meta.get("params", {})
    if params.get("sample_users"):
        ds = ds.subset_users(int(params["sample_users"]), seed=int(params.get("seed", 0)))
    if ds.sha256 != meta["dataset"]["sha256"]:
        raise ValueError(f"--data {data} is not the data artifact {meta['version']} was trained on "
                         f"(sha256 {ds.sha256[:12]}… vs {meta['dataset']['sha256'][:12]}…)")
    from recsys.errors import EthicrecError

    try:
        sd = split_from_metadata(meta, ds)
    except EthicrecError as exc:
        raise ValueError(str(exc)) from None
    catalog_fit = sd.catalog_fit
    fit = sd.split.fit
    torch.manual_seed(seed)
    np.random.seed(seed)
    pairs = make_pairs(fit, catalog_fit, int(fit["timestamp"].max()) + 1, max_pairs=max_pairs, seed=seed)
    if len(pairs.item_rows) == 0:
        raise ValueError("no training pairs in the users' fit parts; use more data")
    seen = np.flatnonzero(catalog_fit.stats.n_ratings > 0)
    base = base_model or base_model_path()
    model = CrossEncoder.from_base(base, device=device, seed=seed)
    _log(f"fine-tuning a cross-encoder from {base} on {len(pairs.item_rows)} positives x "
         f"(1 + {negatives_per_positive}) on {model.device}")
    summary = fine_tune_cross_encoder(model, pairs, catalog_fit, negatives_per_positive=negatives_per_positive,
                                      epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, max_steps=max_steps,
                                      negative_rows=seen if len(seen) >= 2 else None, progress=progress)
    _log(f"loss {summary['loss_first']:.3f} -> {summary['loss_last']:.3f} in {summary['seconds']:.0f}s")

    def add(staging: Path, m: dict) -> dict:
        model.save(staging / "cross_encoder")
        info = {k: v for k, v in summary.items() if k != "loss_curve"}
        info.update(base_model=str(base), max_pairs=max_pairs, epochs=epochs, batch_size=batch_size, lr=lr,
                    seed=seed, split="per-user fit part", output="logit")
        m.setdefault("metrics", {})["cross_encoder_training"] = info
        return {"cross_encoder": {"n_positives": info["n_positives"], "loss_last": info["loss_last"]}}

    final = derive_version(vdir, "cross_encoder", add, check=check_servable)
    _log(f"published {final} (LATEST) with cross_encoder/")
    return final


def _known_errors() -> tuple[type[BaseException], ...]:
    from recsys.data.movielens import DatasetError
    from recsys.errors import ArtifactError

    return (ArtifactError, DatasetError, ValueError)


@cli_main(errors=_known_errors)
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m recsys.train_cross_encoder", description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "ml-latest-small",
                    help="the MovieLens directory the artifact was trained on")
    ap.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="artifact root (LATEST is extended)")
    ap.add_argument("--quick", action="store_true", help="demo profile: 256 positives, a few minutes on 2 CPU cores")
    ap.add_argument("--base-model", type=Path, default=None, help="BERT dir (default: shipped all-MiniLM-L6-v2)")
    ap.add_argument("--max-pairs", type=int, default=None, help="positives (default 20000, --quick 256)")
    ap.add_argument("--negatives", type=int, default=3, help="sampled negatives per positive")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    args = ap.parse_args(argv)
    from recsys.device import set_cpu_threads

    if args.base_model is not None and not (args.base_model / "config.json").is_file():
        fail(f"--base-model {args.base_model} has no config.json")
    set_cpu_threads(args.threads)
    max_pairs = args.max_pairs if args.max_pairs is not None else (256 if args.quick else 20_000)
    train_cross_encoder(args.data, args.artifacts, base_model=args.base_model, max_pairs=max_pairs,
                        negatives_per_positive=args.negatives, epochs=args.epochs, batch_size=args.batch_size,
                        lr=args.lr, seed=args.seed, device=args.device, max_steps=args.max_steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
