"""`python -m recsys.evaluate --data DIR --artifacts DIR [--out FILE]`

Compares, on the artifact's own temporal split and candidate lists (rebuilt
exactly as at training time), cross-fitted over the two halves of the users
active after t_val (see `evaluate`), so every such user is a test user once:

    popularity        time-decayed item popularity (the item_log_pop feature)
    als               implicit's ALS, fit on interactions before t_val; test users'
                      factors recomputed from their request-time history; factors and
                      alpha tuned on the other half's users (grid in ALS_GRID)
    bert_base         the base all-MiniLM-L6-v2 (not fine-tuned), same user/item texts
    bert_only         the fine-tuned bi-encoder's interest score
    lightgbm_no_bert  the same LambdaRanker, trained without the BERT features (interest, interest_max)
    blend             the artifact's LambdaRanker recipe (LightGBM with the BERT scores as features)
    blend_linear      0.5 * norm(interest) + 0.5 * norm(blend ranker), per request

Metrics: NDCG@10, Recall@10, MRR, catalog coverage of the top 10. With user
demographics (MovieLens 100K) each row is also split by gender and age band
(Fairlearn MetricFrame) and written to the JSON for the bias report.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.errors import EthicrecError


ALS_GRID = {"factors": (32, 64, 128), "alpha": (1.0, 10.0, 40.0)}


def tune_als(sd, stop, *, iterations: int, regularization: float, seed: int) -> dict:
    """Give the baseline a fair chance: pick factors and alpha by NDCG@10 on the early-stopping users."""
    best, best_ndcg = None, -1.0
    for f in ALS_GRID["factors"]:
        for a in ALS_GRID["alpha"]:
            sc = als_scores(sd, stop, factors=f, iterations=iterations, regularization=regularization, alpha=a,
                            seed=seed)
            ndcg = float(per_query(stop, sc)["ndcg@10"].mean())
            if ndcg > best_ndcg:
                best, best_ndcg = {"factors": f, "alpha": a}, ndcg
    return best | {"stop_ndcg@10": best_ndcg}


def als_scores(sd, rs, *, factors: int, iterations: int, regularization: float, alpha: float, seed: int) -> np.ndarray:
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    cat = sd.catalog
    inter = sd.ds.interactions
    before = inter[inter["timestamp"] < sd.cut.t_val]
    cols = cat.lookup(before["item_id"].tolist())
    users, rows = np.unique(before["user_id"].to_numpy(), return_inverse=True)
    ok = cols >= 0
    m = sp.csr_matrix((np.ones(ok.sum(), dtype=np.float32), (rows[ok], cols[ok])), shape=(len(users), len(cat)))
    m.data[:] = 1.0
    with threadpool_limits(1, "blas"):  # implicit's own advice: BLAS threads fight its thread pool
        model = AlternatingLeastSquares(factors=factors, iterations=iterations, regularization=regularization,
                                        alpha=alpha, random_state=seed, num_threads=2)
        model.fit(m, show_progress=False)
    out = np.empty(len(rs.y))
    for (s, e), cands, hist in zip(rs.bounds(), rs.candidates, rs.histories):
        h = np.unique(hist[hist >= 0])
        row = sp.csr_matrix((np.ones(len(h), dtype=np.float32), (np.zeros(len(h), dtype=int), h)),
                            shape=(1, len(cat)))
        ids, sc = model.recommend(0, row, N=len(cands), filter_already_liked_items=False, items=cands,
                                  recalculate_user=True)
        pos = {int(i): float(v) for i, v in zip(ids, sc)}
        out[s:e] = [pos.get(int(c), -np.inf) for c in cands]
    return out


def base_model_scores(sd, rs, base_model: str | None = None, device: str = "cpu",
                      precision: str = "auto") -> np.ndarray:
    """Interest scores of the un-tuned model the artifact was fine-tuned from (default: the shipped
    all-MiniLM-L6-v2) on the same queries and candidates."""
    from recsys.embedding_store import ITEM_MAX_LENGTH, USER_MAX_LENGTH
    from recsys.encoder import TextEncoder, base_model_path
    from recsys.text import user_text

    path = Path(base_model) if base_model else base_model_path()
    if not (path / "config.json").is_file():
        raise EthicrecError(f"the artifact was fine-tuned from {path}, which is not there any more")
    base = TextEncoder.load(path, device=device, precision=precision)
    cat = sd.catalog
    needed = np.unique(np.concatenate(rs.candidates)) if len(rs) else np.zeros(0, dtype=np.int64)
    V = base.encode([cat.texts[i] for i in needed], max_length=ITEM_MAX_LENGTH, batch_size=128)
    row = {int(i): j for j, i in enumerate(needed)}
    U = base.encode([user_text([cat.texts[i] for i in h[h >= 0]]) for h in rs.histories], max_length=USER_MAX_LENGTH,
                    batch_size=32)
    out = np.empty(len(rs.y))
    for (s, e), cands, u in zip(rs.bounds(), rs.candidates, U):
        out[s:e] = V[[row[int(c)] for c in cands]] @ u
    return out


def per_query(rs, scores: np.ndarray, k: int = 10) -> pd.DataFrame:
    from recsys.metrics import ndcg_at_k, recall_at_k, reciprocal_rank, top_k

    rows = []
    for (s, e), uid, cands in zip(rs.bounds(), rs.user_ids, rs.candidates):
        y, sc = rs.y[s:e], scores[s:e]
        rows.append({"user_id": uid, f"ndcg@{k}": ndcg_at_k(y, sc, k), f"recall@{k}": recall_at_k(y, sc, k),
                     "mrr": reciprocal_rank(y, sc), "top": cands[top_k(sc, k)]})
    return pd.DataFrame(rows)


def by_group(q: pd.DataFrame, users: pd.DataFrame, attribute: str) -> dict:
    from fairlearn.metrics import MetricFrame

    df = q.merge(users[["user_id", attribute]], on="user_id", how="left")
    df[attribute] = df[attribute].fillna("(unknown)")
    z = np.zeros(len(df))

    def mean_of(y_true, y_pred, *, values):
        return float(np.mean(values))

    cols = ["ndcg@10", "recall@10", "mrr"]
    mf = MetricFrame(metrics={c: mean_of for c in cols} | {"n": lambda yt, yp: float(len(yt))}, y_true=z, y_pred=z,
                     sensitive_features=df[attribute], sample_params={c: {"values": df[c].to_numpy()} for c in cols})
    return {str(g): {k: float(v) for k, v in row.items()} for g, row in mf.by_group.iterrows()} | {
        "_difference": {c: float(mf.difference()[c]) for c in cols},
        "_ratio_min_over_max": {c: float(mf.ratio()[c]) for c in cols}}


def evaluate(data: Path, artifacts_path: Path, *, device: str = "cpu", encode_precision: str = "auto",
             als_factors: int | None = None, als_iterations: int = 15, als_regularization: float = 0.05,
             als_alpha: float | None = None) -> dict:
    """Cross-fitted over the two halves of the users active after t_val.

    Each half is evaluated once, with everything that is tuned or early-stopped (both LightGBM rankers,
    ALS factors/alpha unless given) fitted on the other half; per-user results are pooled, so every
    user active after t_val is a test user exactly once and no model ever sees its own test users.
    The BERT model and the LightGBM training queries come from before t_val and are shared by both
    halves. The deployed ranker (early-stopped on the first half) is also scored on the second half
    alone, as `deployed_ranker_second_half`.
    """
    from recsys.artifacts import load_artifacts
    from recsys.blend import Blend
    from recsys.data import load_dataset
    from recsys.features import BERT_FEATURES
    from recsys.offline import check_dataset_matches
    from recsys.ranker import LambdaRanker
    from recsys.ranking_data import ranking_sets, split_data
    from recsys.train import encode_catalogs

    art = load_artifacts(artifacts_path, device=device, encode_precision=encode_precision)
    params = art.metadata["params"]
    seed = int(params["seed"])
    ds = load_dataset(data)
    if params.get("sample_users"):
        ds = ds.subset_users(int(params["sample_users"]), seed=seed)
    check_dataset_matches(art, ds)
    sd = split_data(ds, params.get("max_eval_queries"))
    encoder = art.store.encoder
    vectors_fit, vectors = encode_catalogs(encoder, sd.catalog_fit, sd.catalog)
    feats = params.get("item_features")
    if feats and not Path(feats).is_file():
        raise EthicrecError(f"the artifact was trained with --item-features {feats}, which is not there any more")
    train, half_a, half_b = ranking_sets(sd, encoder, vectors_fit, vectors, int(params["n_candidates"]), seed, feats)
    if len(half_a) == 0 or len(half_b) == 0:
        raise EthicrecError("too few users after t_val to evaluate (both halves need at least one)")
    names = list(train.names)
    i_int, i_pop = names.index("interest"), names.index("item_log_pop")
    keep = [j for j in range(len(names)) if names[j] not in BERT_FEATURES]
    linear = Blend("linear", 0.5)
    fixed_als = als_factors is not None and als_alpha is not None
    per_model: dict[str, list[pd.DataFrame]] = {}
    als_chosen = []
    for tune_on, test in ((half_a, half_b), (half_b, half_a)):
        blend = LambdaRanker(random_state=seed).fit(train.X, train.y, train.groups, feature_names=names,
                                                     eval_set=(tune_on.X, tune_on.y, tune_on.groups))
        no_bert = LambdaRanker(random_state=seed).fit(
            train.X[:, keep], train.y, train.groups, feature_names=[names[j] for j in keep],
            eval_set=(tune_on.X[:, keep], tune_on.y, tune_on.groups))
        if fixed_als:
            als = {"factors": als_factors, "alpha": als_alpha}
        else:
            als = tune_als(sd, tune_on, iterations=als_iterations, regularization=als_regularization, seed=seed)
        als_chosen.append(als)
        blend_scores = blend.predict(test.X)
        scores = {
            "popularity": test.X[:, i_pop],
            "als": als_scores(sd, test, factors=als["factors"], iterations=als_iterations,
                              regularization=als_regularization, alpha=als["alpha"], seed=seed),
            "bert_base": base_model_scores(sd, test, params.get("base_model"), device=device,
                                           precision=encode_precision),
            "bert_only": test.X[:, i_int],
            "lightgbm_no_bert": no_bert.predict(test.X[:, keep]),
            "blend": blend_scores,
            "blend_linear": np.concatenate([linear.combine(test.X[s:e, i_int], blend_scores[s:e])
                                            for s, e in test.bounds()]),
        }
        for name, sc in scores.items():
            per_model.setdefault(name, []).append(per_query(test, sc))
    rows, groups = {}, {}
    for name, parts in per_model.items():
        q = pd.concat(parts, ignore_index=True)
        rows[name] = _summary(q, len(sd.catalog))
        if len(ds.users):
            groups[name] = {a: by_group(q, ds.users, a) for a in ("gender", "age_band") if a in ds.users.columns}
    deployed = _summary(per_query(half_b, art.ranker.predict(half_b.X)), len(sd.catalog))
    return {"dataset": ds.name, "artifact_version": art.version, "split": art.metadata["split"],
            "protocol": "cross-fitted: users active after t_val split in two halves by user hash; each half "
                        "evaluated with rankers early-stopped and ALS tuned on the other half; results pooled",
            "n_candidates": int(params["n_candidates"]), "test_users": int(len(half_a) + len(half_b)),
            "als": {"chosen_per_half": als_chosen, "iterations": als_iterations,
                    "regularization": als_regularization},
            "models": rows, "deployed_ranker_second_half": deployed, "by_group": groups}


def _summary(q: pd.DataFrame, n_items: int) -> dict:
    covered = len({int(i) for top in q["top"] for i in top})
    return {"ndcg@10": float(q["ndcg@10"].mean()), "recall@10": float(q["recall@10"].mean()),
            "mrr": float(q["mrr"].mean()), "coverage@10": covered / n_items, "n_queries": int(len(q))}


def markdown(result: dict) -> str:
    lines = [f"{result['dataset']} — artifact {result['artifact_version']}, {result['test_users']} test users "
             f"(cross-fitted halves), {result['n_candidates']} candidates each", "",
             "| model | NDCG@10 | Recall@10 | MRR | coverage@10 |", "|---|---:|---:|---:|---:|"]
    for name, m in result["models"].items():
        lines.append(f"| {name} | {m['ndcg@10']:.4f} | {m['recall@10']:.4f} | {m['mrr']:.4f} | {m['coverage@10']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(prog="python -m recsys.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="the dataset the artifact was trained on")
    ap.add_argument("--artifacts", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=None, help="JSON output (default: reports/evaluation-<dataset>.json)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--encode-precision", dest="encode_precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="text encoding precision (auto: bf16 on CUDA and on CPUs with native bf16)")
    ap.add_argument("--als-factors", type=int, default=None, help="with --als-alpha: skip tuning")
    ap.add_argument("--als-iterations", type=int, default=15)
    ap.add_argument("--als-regularization", type=float, default=0.05)
    ap.add_argument("--als-alpha", type=float, default=None)
    args = ap.parse_args(argv)
    try:
        import implicit  # noqa: F401
    except ImportError:
        print("error: the ALS baseline needs the dev extra: pip install -e '.[dev]'", file=sys.stderr)
        return 2
    from recsys.data.movielens import DatasetError

    try:
        result = evaluate(args.data, args.artifacts, device=args.device, encode_precision=args.encode_precision,
                          als_factors=args.als_factors,
                          als_iterations=args.als_iterations, als_regularization=args.als_regularization,
                          als_alpha=args.als_alpha)
    except (EthicrecError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or Path("reports") / f"evaluation-{result['dataset']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out)
    print(markdown(result), end="")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
