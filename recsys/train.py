"""`python -m recsys.train --data DIR --out ARTIFACTS [--quick]`: build one versioned artifact.

Steps (recsys/split.py has the per-user temporal split): fine-tune the bi-encoder on history->item pairs of
each user's fit part -> encode the catalog -> choose the ALS (features and retrieval stage) on the validation
users -> train the LightGBM ranker on every user's label part, features from fit-part models, its grid and
tree count chosen on the validation users' holdout -> score the test users' holdout once (uniform, retrieval
and cold-start lists) -> train the harm classifier -> write and publish. The artifact serves the models refit
on every user's train part (fit + label); no holdout interaction reaches it.
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
from recsys.cli import cli_main, fail

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HARM_DATA = ROOT / "data" / "hate-speech-davidson" / "labeled_data.csv"
GRIDS = ("quick", "full")


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
    n_candidates: int = 100               # negatives per uniform list, items per retrieval list
    seed: int = 0
    device: str = "auto"
    encode_precision: str = "auto"        # text encoding (catalog, users, mining): auto | fp32 | bf16
    harm_data: Path = DEFAULT_HARM_DATA
    harm_max_rows: int | None = None
    item_features: Path | None = None     # CSV: item_id + numeric columns, declared as request features
    hard_negatives: bool = True           # one mined hard negative per pair (recsys/interest_training.py)
    val_share: float = 0.1                # BERT pairs of this share of users: early stopping on Recall@10
    eval_every: int = 100                 # steps between validation checks
    patience: int = 3                     # checks without improvement before stopping
    logq_correction: bool = True          # in-batch sampling-bias correction (recsys/interest_training.py)
    popular_val_pool: bool = True         # validation pool drawn like the evaluation's negatives
    freeze_layers: int = 0                # bottom BERT layers (and embeddings) left as they are while fine-tuning
    label_cuts: int = 2                   # each user's label part cut in this many ranker training lists per kind
    holdout_share: float = 0.2            # each user's last share of interactions: validation / test targets
    label_share: float = 0.25             # of each user's train part: the ranker's training targets
    val_user_share: float = 0.3           # users whose holdout chooses hyper-parameters (the rest: test)
    cold_item_share: float = 0.05         # items whose every interaction is held out: the cold-start slice
    fit_cold_item_share: float = 0.05     # items new to the fit state only: cold-start lessons for the ranker
    als_grid: str = "full"                # quick | full (recsys/model_selection.py)
    ranker_grid: str = "full"

    def __post_init__(self) -> None:
        for name in ("als_grid", "ranker_grid"):
            if getattr(self, name) not in GRIDS:
                raise ValueError(f"{name} must be one of {', '.join(GRIDS)}; got {getattr(self, name)!r}")
        if self.n_candidates < 10:
            raise ValueError(f"n_candidates must be at least 10; got {self.n_candidates!r}")

    @property
    def split_config(self):
        from recsys.split import SplitConfig

        return SplitConfig(holdout_share=self.holdout_share, label_share=self.label_share,
                           val_user_share=self.val_user_share, cold_item_share=self.cold_item_share,
                           fit_cold_item_share=self.fit_cold_item_share, seed=self.seed)

    @classmethod
    def quick(cls, **kw) -> "TrainConfig":
        """The demo profile: about ten minutes on 2 CPU cores."""
        base = dict(max_pairs=3000, batch_size=32, lr=1e-4, eval_every=25, patience=4, als_grid="quick",
                    ranker_grid="quick", freeze_layers=4, harm_max_rows=4000)
        base.update(kw)
        return cls(**base)


def _log(msg: str) -> None:
    print(f"[train {datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _versions() -> dict:
    import fairlearn
    import implicit
    import lightgbm
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "lightgbm": lightgbm.__version__, "fairlearn": fairlearn.__version__, "implicit": implicit.__version__,
            "ethicrec": "0.1.0"}


def train(cfg: TrainConfig) -> Path:
    import torch

    from audit.harm_fit import fit_artifact_harm
    from recsys.artifacts import file_hashes, publish
    from recsys.data import load_dataset
    from recsys.data.movielens import DatasetError
    from recsys.device import pick_device
    from recsys.embedding_store import EmbeddingStore
    from recsys.encoder import TextEncoder, base_model_path
    from recsys.features import BASE_FEATURES, FeatureBuilder
    from recsys.interest_training import fine_tune, make_pairs, mine_hard_negatives
    from recsys.model_selection import (ALS_GRID, ALS_GRID_QUICK, RANKER_GRID, RANKER_GRID_QUICK, select_ranker,
                                        tune_als)
    from recsys.offline_scores import score_test_lists
    from recsys.ranking_data import (RankingSet, build_ranking_set, fit_als, histories, holdout_lists,
                                     load_item_features, split_data, training_lists, user_vectors)
    from recsys.known_user_vectors import write_user_vectors

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    ds = load_dataset(cfg.data)
    if cfg.sample_users:
        ds = ds.subset_users(cfg.sample_users, seed=cfg.seed)
    sd = split_data(ds, cfg.split_config)
    sp = sd.split
    catalog_fit, catalog = sd.catalog_fit, sd.catalog
    _log(f"{ds.name}: {len(ds.interactions)} interactions, {len(ds.items)} items, "
         f"{len(sp.val_users)} validation / {len(sp.test_users)} test users; parts "
         + ", ".join(f"{p} {n}" for p, n in sp.interactions["part"].value_counts().items()))

    base = cfg.base_model or base_model_path()
    encoder = TextEncoder.load(base, device=cfg.device, precision=cfg.encode_precision)
    fit = sp.fit
    all_pairs = make_pairs(fit, catalog_fit, int(fit["timestamp"].max()) + 1, max_pairs=cfg.max_pairs, seed=cfg.seed)
    if len(all_pairs.item_rows) == 0:
        raise DatasetError("no BERT training pairs in the users' fit parts; use more data")
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
                                 logq_correction=cfg.logq_correction, freeze_layers=cfg.freeze_layers)
    _log(f"loss {interest_summary['loss_first']:.3f} -> {interest_summary['loss_last']:.3f} "
         f"in {interest_summary['seconds']:.0f}s; validation Recall@10 {interest_summary['val_recall@10_base']} "
         f"(base) -> {interest_summary['val_recall@10_best']} (best, step {interest_summary['best_step']})")

    _log(f"encoding {len(catalog)} catalog items")
    vectors_fit, vectors = encode_catalogs(encoder, catalog_fit, catalog)

    n = cfg.n_candidates
    val_uniform = holdout_lists(sd, "val", "uniform", n, cfg.seed)
    if not val_uniform:
        raise DatasetError("no validation users with a held-out positive; use more data")
    als_params, als_table = tune_als(sd, {"uniform": val_uniform}, ALS_GRID if cfg.als_grid == "full" else
                                     ALS_GRID_QUICK, seed=cfg.seed, log=_log)
    _log(f"ALS chosen on validation: {als_params}")
    als_fit = fit_als(fit, catalog_fit, als_params, seed=cfg.seed)
    als = fit_als(sp.train, catalog, als_params, seed=cfg.seed)
    val_lists = {"uniform": val_uniform, "retrieval": holdout_lists(sd, "val", "retrieval", n, cfg.seed, als)}
    test_lists = {kind: holdout_lists(sd, "test", kind, n, cfg.seed, als) for kind in ("uniform", "retrieval", "cold")}
    tr_lists = training_lists(sd, als_fit, n, cfg.seed, cuts=cfg.label_cuts)

    extra = load_item_features(cfg.item_features, catalog) if cfg.item_features else None
    extra_names, extra_matrix = extra if extra else ((), None)
    fb_fit = FeatureBuilder(catalog_fit, sd.cooc_fit, als_fit, extra_names)
    fb = FeatureBuilder(catalog, sd.cooc, als, extra_names)
    _log(f"features: {len(tr_lists)} training lists, validation "
         + ", ".join(f"{k} {len(v)}" for k, v in val_lists.items()) + ", test "
         + ", ".join(f"{k} {len(v)}" for k, v in test_lists.items()))
    train_set = build_ranking_set(tr_lists, fb_fit, vectors_fit, user_vectors(encoder, catalog_fit, tr_lists),
                                  graded=True, item_features=extra_matrix)
    every = [cl for ls in (*val_lists.values(), *test_lists.values()) for cl in ls]
    users = user_vectors(encoder, catalog, every)
    val_sets = {k: build_ranking_set(v, fb, vectors, users, graded=False, item_features=extra_matrix)
                for k, v in val_lists.items()}
    test_sets = {k: build_ranking_set(v, fb, vectors, users, graded=False, item_features=extra_matrix)
                 for k, v in test_lists.items()}
    if len(train_set) == 0:
        raise DatasetError("no ranker training lists (label parts without a known item); use more data")
    val_set = RankingSet.concat(list(val_sets.values()))
    ranker, ranker_table = select_ranker(train_set, val_set, RANKER_GRID if cfg.ranker_grid == "full" else
                                         RANKER_GRID_QUICK, seed=cfg.seed, log=_log)
    names = list(train_set.names)
    _log(f"ranker: {ranker.best_iteration_} trees, validation NDCG@10 {ranker.best_validation_ndcg_:.4f}")
    offline = score_test_lists(test_sets, ranker, seed=cfg.seed)
    for kind, models in offline.items():
        _log(f"test {kind}: " + ", ".join(f"{m} {v['ndcg@10']:.4f}" for m, v in models.items()))

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
        als.save(staging / "als.npz")
        harm.save(staging / "harm")
        # Known users' histories: their train part only (no holdout interaction reaches the artifact), exactly
        # the histories the evaluation's requests carry (recsys.ranking_data.histories).
        users_hist = {u: [str(catalog.item_ids[r]) for r in rows if r >= 0]
                      for u, rows in histories(sp.train, catalog).items()}
        users_json = json.dumps(users_hist)
        (staging / "users.json").write_text(users_json)
        # From the JSON, as serving reads it (string user and item ids), so the user texts match.
        user_vecs = write_user_vectors(staging, encoder, catalog, json.loads(users_json), progress=True)
        meta = {
            "version": version,
            "created_at": datetime.now(timezone.utc).isoformat(),
            "dataset": {"name": ds.name, "path": str(cfg.data), "sha256": ds.sha256,
                        "n_interactions": int(len(ds.interactions)), "n_items": int(len(ds.items)),
                        "n_users": int(ds.interactions["user_id"].nunique())},
            "split": {"protocol": "per-user temporal", **asdict(cfg.split_config),
                      "n_val_users": len(sp.val_users), "n_test_users": len(sp.test_users),
                      "doc": "each user's last holdout_share of interactions is held out (validation users: "
                             "selection; test users: reported); of the rest, the last label_share are the "
                             "ranker's training targets with features from models fit on the part before; "
                             "served models are refit on fit + label"},
            "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
            "user_vectors": user_vecs["user_vectors"],
            # What the item and user vectors were encoded in (auto resolved on the training machine).
            "encode_precision": encoder.precision,
            "features": {"names": list(names), "extra": [n for n in names if n not in BASE_FEATURES]},
            "selection": {"als": als_params, "als_table": als_table, "ranker_table": ranker_table},
            "metrics": {
                "interest_training": {k: v for k, v in interest_summary.items() if k != "loss_curve"},
                "interest_loss_curve": [round(x, 4) for x in interest_summary["loss_curve"]],
                "ranker": {"best_iteration": ranker.best_iteration_, "feature_importance_gain":
                           ranker.feature_importance_, "validation_ndcg@10": ranker.best_validation_ndcg_},
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


def config_from_argv(argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    """The TrainConfig the command line asks for: the profile's values (TrainConfig.quick with --quick) and
    only the options given on top of them."""
    ap = argparse.ArgumentParser(prog="python -m recsys.train", description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "ml-latest-small",
                    help="MovieLens latest-small or 100K directory")
    ap.add_argument("--out", type=Path, default=Path("artifacts"), help="artifact root (versions go inside)")
    ap.add_argument("--quick", action="store_true", help="demo profile: about ten minutes on 2 CPU cores")
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
    ap.add_argument("--harm-max-rows", type=int, default=None,
                    help="Davidson training rows for the harm classifier (default: 4000 with --quick, else all; 0 = all)")
    ap.add_argument("--n-candidates", type=int, default=None,
                    help="negatives per uniform list and items per retrieval list (default 100)")
    ap.add_argument("--als-grid", choices=GRIDS, default=None, help="ALS grid searched on validation users "
                    "(default: quick with --quick, else full)")
    ap.add_argument("--ranker-grid", choices=GRIDS, default=None, help="LightGBM grid searched on validation users")
    ap.add_argument("--item-features", type=Path, default=None,
                    help="CSV of item_id + numeric columns; declared as request features of the artifact")
    ap.add_argument("--no-logq", action="store_true",
                    help="ablation: no in-batch sampling-bias (logQ) correction in BERT fine-tuning")
    ap.add_argument("--uniform-val-pool", action="store_true",
                    help="ablation: validation Recall@10 against a uniform pool instead of popularity + uniform")
    ap.add_argument("--no-hard-negatives", action="store_true", help="ablation: in-batch negatives only")
    ap.add_argument("--freeze-layers", type=int, default=None,
                    help="bottom BERT layers frozen while fine-tuning (default: 0, --quick: see TrainConfig.quick)")
    args = ap.parse_args(argv)
    kw = dict(data=args.data, out=args.out, base_model=args.base_model, sample_users=args.sample_users,
              seed=args.seed, device=args.device, encode_precision=args.encode_precision, harm_data=args.harm_data,
              item_features=args.item_features,
              logq_correction=not args.no_logq, popular_val_pool=not args.uniform_val_pool,
              hard_negatives=not args.no_hard_negatives)
    if args.max_pairs is not None:
        kw["max_pairs"] = args.max_pairs
    if args.epochs is not None:
        kw["epochs"] = args.epochs
    for name in ("n_candidates", "als_grid", "ranker_grid", "freeze_layers"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    if args.harm_max_rows is not None:   # not given: the profile's (--quick: 4000), not None over it
        kw["harm_max_rows"] = args.harm_max_rows or None
    return (TrainConfig.quick(**kw) if args.quick else TrainConfig(**kw)), args


def _known_errors() -> tuple[type[BaseException], ...]:
    from recsys.data.movielens import DatasetError

    return (DatasetError, ValueError)


@cli_main(errors=_known_errors)
def main(argv: list[str] | None = None) -> int:
    from recsys.device import set_cpu_threads

    cfg, args = config_from_argv(argv)
    set_cpu_threads(args.threads)
    if not cfg.harm_data.is_file():
        fail(f"harm training data not found: {cfg.harm_data}")
    if cfg.item_features is not None and not cfg.item_features.is_file():
        fail(f"--item-features file not found: {cfg.item_features}")
    if cfg.base_model is not None and not (cfg.base_model / "config.json").is_file():
        fail(f"--base-model {cfg.base_model} has no config.json")
    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
