"""`python -m recsys.train --data DIR --out ARTIFACTS [--quick]`: build one versioned artifact.

Steps: temporal split -> fine-tune the bi-encoder on history->item pairs from
before t_fit -> encode the catalog -> train the LightGBM ranker on queries
from [t_fit, t_val) with item statistics from before t_fit -> evaluate on
queries from after t_val -> train the harm classifier -> write and publish.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from recsys.catalog import Catalog
from recsys.ranking_data import ranking_sets, split_data

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HARM_DATA = ROOT / "data" / "hate-speech-davidson" / "labeled_data.csv"


@dataclass(frozen=True)
class TrainConfig:
    data: Path
    out: Path
    base_model: Path | None = None
    sample_users: int | None = None
    max_pairs: int = 20_000
    batch_size: int = 32
    epochs: int = 1
    lr: float = 5e-5
    n_candidates: int = 100
    seed: int = 0
    device: str = "auto"
    encode_precision: str = "auto"        # text encoding (catalog, users, mining): auto | fp32 | bf16
    harm_data: Path = DEFAULT_HARM_DATA
    harm_max_rows: int | None = None
    max_eval_queries: int | None = None
    item_features: Path | None = None     # CSV: item_id + numeric columns, declared as request features
    hard_negatives: bool = True           # one mined hard negative per pair (recsys/interest_training.py)
    val_share: float = 0.1                # pairs of this share of users: early stopping on Recall@10
    eval_every: int = 100                 # steps between validation checks
    patience: int = 3                     # checks without improvement before stopping
    logq_correction: bool = True          # in-batch sampling-bias correction (recsys/interest_training.py)
    popular_val_pool: bool = True         # validation pool drawn like the evaluation's negatives

    @classmethod
    def quick(cls, **kw) -> "TrainConfig":
        """The demo profile: finishes in a few minutes on 2 CPU cores."""
        base = dict(max_pairs=768, batch_size=32, lr=1e-4, eval_every=8, harm_max_rows=4000)
        base.update(kw)
        return cls(**base)


def _log(msg: str) -> None:
    print(f"[train {datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def evaluate_set(rs, scorers: dict, k: int = 10) -> dict:
    """Mean NDCG@k, Recall@k and MRR per scorer over a ranking set (one candidate list per query)."""
    from recsys.metrics import ndcg_at_k, recall_at_k, reciprocal_rank

    out = {}
    for name, fn in scorers.items():
        scores = fn(rs)
        nd, rc, rr = [], [], []
        for s, e in rs.bounds():
            nd.append(ndcg_at_k(rs.y[s:e], scores[s:e], k))
            rc.append(recall_at_k(rs.y[s:e], scores[s:e], k))
            rr.append(reciprocal_rank(rs.y[s:e], scores[s:e]))
        out[name] = {f"ndcg@{k}": float(np.mean(nd)), f"recall@{k}": float(np.mean(rc)), "mrr": float(np.mean(rr)),
                     "n_queries": len(nd)}
    return out


def _versions() -> dict:
    import fairlearn
    import lightgbm
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "lightgbm": lightgbm.__version__, "fairlearn": fairlearn.__version__, "ethicrec": "0.1.0"}


def train(cfg: TrainConfig) -> Path:
    import torch

    from audit.harm_fit import fit_artifact_harm
    from recsys.artifacts import file_hashes, publish
    from recsys.data import load_dataset
    from recsys.device import pick_device
    from recsys.data.movielens import DatasetError
    from recsys.embedding_store import EmbeddingStore
    from recsys.features import BASE_FEATURES
    from recsys.encoder import TextEncoder, base_model_path
    from recsys.interest_training import fine_tune, make_pairs, mine_hard_negatives
    from recsys.ranker import LambdaRanker
    from recsys.user_vectors import write_user_vectors

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    ds = load_dataset(cfg.data)
    if cfg.sample_users:
        ds = ds.subset_users(cfg.sample_users, seed=cfg.seed)
    inter = ds.interactions
    sd = split_data(ds, cfg.max_eval_queries)
    cut = sd.cut
    catalog_fit, catalog = sd.catalog_fit, sd.catalog
    _log(f"{ds.name}: {len(inter)} interactions, {len(ds.items)} items; t_fit={cut.t_fit} t_val={cut.t_val}")

    base = cfg.base_model or base_model_path()
    encoder = TextEncoder.load(base, device=cfg.device, precision=cfg.encode_precision)
    all_pairs = make_pairs(inter, catalog_fit, cut.t_fit, max_pairs=cfg.max_pairs, seed=cfg.seed)
    pairs, val_pairs = all_pairs.split_users(cfg.val_share, seed=cfg.seed) if cfg.val_share > 0 else (all_pairs, None)
    hard = None
    if cfg.hard_negatives:
        _log(f"mining hard negatives for {len(pairs.item_rows)} pairs with the base model")
        hard = mine_hard_negatives(encoder, pairs, catalog_fit, seed=cfg.seed)
    _log(f"fine-tuning {base.name if hasattr(base, 'name') else base} on {len(pairs.item_rows)} pairs "
         f"({len(val_pairs.item_rows) if val_pairs else 0} validation) on {pick_device(cfg.device)}")
    interest_summary = fine_tune(encoder, pairs, catalog_fit, epochs=cfg.epochs, batch_size=cfg.batch_size,
                                 lr=cfg.lr, seed=cfg.seed, hard_negatives=hard, val=val_pairs,
                                 eval_every=cfg.eval_every, patience=cfg.patience,
                                 pool_popularity=catalog_fit.stats.n_ratings if cfg.popular_val_pool else None,
                                 logq_correction=cfg.logq_correction)
    _log(f"loss {interest_summary['loss_first']:.3f} -> {interest_summary['loss_last']:.3f} "
         f"in {interest_summary['seconds']:.0f}s; validation Recall@10 {interest_summary['val_recall@10_base']} "
         f"(base) -> {interest_summary['val_recall@10_best']} (best, step {interest_summary['best_step']})")

    _log(f"encoding {len(catalog)} catalog items")
    vectors_fit, vectors = encode_catalogs(encoder, catalog_fit, catalog)

    _log(f"queries: {len(sd.train_q)} ranker-train, {len(sd.stop_q)} early-stop, {len(sd.test_q)} test")
    train_set, stop_set, test_set = ranking_sets(sd, encoder, vectors_fit, vectors, cfg.n_candidates, cfg.seed,
                                                 cfg.item_features)
    if len(train_set) == 0:
        raise DatasetError("no ranker training queries in [t_fit, t_val); use more data")
    names = list(train_set.names)
    ranker = LambdaRanker(random_state=cfg.seed).fit(
        train_set.X, train_set.y, train_set.groups, feature_names=names,
        eval_set=(stop_set.X, stop_set.y, stop_set.groups) if len(stop_set) else None)
    _log(f"ranker: best iteration {ranker.best_iteration_}")
    offline = evaluate_set(test_set, {
        "popularity": lambda rs: rs.X[:, names.index("item_log_pop")],
        "interest_only": lambda rs: rs.X[:, names.index("interest")],
        "blend": lambda rs: ranker.predict(rs.X),
    }) if len(test_set) else {}
    for name, m in offline.items():
        _log(f"offline {name}: NDCG@10={m['ndcg@10']:.4f} Recall@10={m['recall@10']:.4f} (n={m['n_queries']})")

    _log("training the harm classifier")
    harm = fit_artifact_harm(cfg.harm_data, catalog, max_rows=cfg.harm_max_rows, seed=cfg.seed, device=cfg.device,
                             log=_log)
    scores, categories = harm.score(list(catalog.texts))
    catalog.harm_score, catalog.harm_category = scores, np.asarray(categories, dtype=object)
    _log(f"harm: val AUC {harm.metrics['val_auc']:.3f}, threshold {harm.threshold:.3f}, "
         f"catalog flag rate {float((catalog.harm_score >= harm.threshold).mean()):.4%}")

    version = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{ds.sha256[:8]}"
    cfg.out.mkdir(parents=True, exist_ok=True)
    staging = cfg.out / f".staging-{version}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        encoder.save(staging / "interest")
        EmbeddingStore.save_vectors(staging / "item_vectors.npy", vectors)
        catalog.save(staging / "catalog.parquet")
        ranker.save(staging / "ranker.txt")
        sd.cooc.save(staging / "cooccurrence.npz")
        harm.save(staging / "harm")
        users = (inter.sort_values(["timestamp", "item_id"], ascending=[False, True], kind="mergesort")
                 .drop_duplicates(["user_id", "item_id"]).groupby("user_id", sort=True)["item_id"]
                 .apply(lambda s: list(s.head(50))).to_dict())
        users_json = json.dumps(users)
        (staging / "users.json").write_text(users_json)
        # From the JSON, as serving reads it (string user and item ids), so the user texts match.
        user_vectors = write_user_vectors(staging, encoder, catalog, json.loads(users_json), progress=True)
        iso = lambda t: datetime.fromtimestamp(t, tz=timezone.utc).isoformat()  # noqa: E731
        meta = {
            "version": version,
            "created_at": datetime.now(timezone.utc).isoformat(),
            "dataset": {"name": ds.name, "path": str(cfg.data), "sha256": ds.sha256,
                        "n_interactions": int(len(inter)), "n_items": int(len(ds.items)),
                        "n_users": int(inter["user_id"].nunique())},
            "split": {"t_fit": cut.t_fit, "t_val": cut.t_val, "t_fit_iso": iso(cut.t_fit), "t_val_iso": iso(cut.t_val),
                      "doc": "BERT + ranker-train stats < t_fit; ranker labels [t_fit, t_val); "
                             "eval labels >= t_val; serving stats < t_val"},
            "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
            "user_vectors": user_vectors["user_vectors"],
            # What the item and user vectors were encoded in (auto resolved on the training machine).
            "encode_precision": encoder.precision,
            "features": {"names": list(names), "extra": [n for n in names if n not in BASE_FEATURES]},
            "metrics": {
                "interest_training": {k: v for k, v in interest_summary.items() if k != "loss_curve"},
                "interest_loss_curve": [round(x, 4) for x in interest_summary["loss_curve"]],
                "ranker": {"best_iteration": ranker.best_iteration_, "feature_importance_gain":
                           ranker.feature_importance_},
                "offline": offline,
                "harm": harm.metrics | {"threshold": harm.threshold,
                                        "catalog_flag_rate": float((catalog.harm_score >= harm.threshold).mean())},
                "train_seconds": time.perf_counter() - t_start,
            },
            "versions": _versions(),
        }
        meta["files"] = file_hashes(staging)
        (staging / "metadata.json").write_text(json.dumps(meta, indent=2))
        final = publish(cfg.out, staging, version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _log(f"artifact {final} written in {time.perf_counter() - t_start:.0f}s")
    return final


def encode_catalogs(encoder, catalog_fit: Catalog, catalog: Catalog) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of the t_fit and the t_val catalog texts (encoded once when they are the same)."""
    from recsys.embedding_store import ITEM_MAX_LENGTH

    vectors_fit = encoder.encode(list(catalog_fit.texts), max_length=ITEM_MAX_LENGTH, progress=True)
    if np.array_equal(catalog_fit.texts, catalog.texts):
        return vectors_fit, vectors_fit
    return vectors_fit, encoder.encode(list(catalog.texts), max_length=ITEM_MAX_LENGTH, progress=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m recsys.train", description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "ml-latest-small",
                    help="MovieLens latest-small or 100K directory")
    ap.add_argument("--out", type=Path, default=Path("artifacts"), help="artifact root (versions go inside)")
    ap.add_argument("--quick", action="store_true", help="demo profile: a few minutes on 2 CPU cores")
    ap.add_argument("--base-model", type=Path, default=None, help="BERT dir (default: shipped all-MiniLM-L6-v2)")
    ap.add_argument("--sample-users", type=int, default=None, help="train on a deterministic sample of users")
    ap.add_argument("--max-pairs", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--encode-precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="text encoding precision (auto: bf16 on CUDA and on CPUs with native bf16)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    ap.add_argument("--harm-data", type=Path, default=DEFAULT_HARM_DATA)
    ap.add_argument("--harm-max-rows", type=int, default=None)
    ap.add_argument("--max-eval-queries", type=int, default=None)
    ap.add_argument("--item-features", type=Path, default=None,
                    help="CSV of item_id + numeric columns; declared as request features of the artifact")
    ap.add_argument("--no-logq", action="store_true",
                    help="ablation: no in-batch sampling-bias (logQ) correction in BERT fine-tuning")
    ap.add_argument("--uniform-val-pool", action="store_true",
                    help="ablation: validation Recall@10 against a uniform pool instead of popularity + uniform")
    ap.add_argument("--no-hard-negatives", action="store_true", help="ablation: in-batch negatives only")
    args = ap.parse_args(argv)
    from recsys.data.movielens import DatasetError
    from recsys.device import set_cpu_threads

    set_cpu_threads(args.threads)
    kw = dict(data=args.data, out=args.out, base_model=args.base_model, sample_users=args.sample_users,
              seed=args.seed, device=args.device, encode_precision=args.encode_precision, harm_data=args.harm_data,
              harm_max_rows=args.harm_max_rows, max_eval_queries=args.max_eval_queries, item_features=args.item_features,
              logq_correction=not args.no_logq, popular_val_pool=not args.uniform_val_pool,
              hard_negatives=not args.no_hard_negatives)
    if args.max_pairs is not None:
        kw["max_pairs"] = args.max_pairs
    if args.epochs is not None:
        kw["epochs"] = args.epochs
    cfg = TrainConfig.quick(**kw) if args.quick else TrainConfig(**kw)
    if not cfg.harm_data.is_file():
        print(f"error: harm training data not found: {cfg.harm_data}", file=sys.stderr)
        return 2
    if cfg.item_features is not None and not cfg.item_features.is_file():
        print(f"error: --item-features file not found: {cfg.item_features}", file=sys.stderr)
        return 2
    if cfg.base_model is not None and not (cfg.base_model / "config.json").is_file():
        print(f"error: --base-model {cfg.base_model} has no config.json", file=sys.stderr)
        return 2
    try:
        train(cfg)
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
