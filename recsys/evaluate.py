"""`python -m recsys.evaluate --data DIR --artifacts DIR [--out FILE]`

Evaluates an artifact the way frontends use the plugin, on the artifact's own per-user temporal split
(recsys/split.py): each test user's last interactions are held out; their earlier ones are the request's
history. Three candidate-list kinds (recsys/ranking_data.py): `uniform` (held-out positives + 100 items the
user never rated), `retrieval` (the ALS retrieval stage's top 100 unseen items, positives not injected) and
`cold` (held-out positives among items with no training interaction at all, + cold items the user never
rated). Positives: rating >= 4. Ties are broken at random and their share reported.

Models:

    random            the exact expected score of a uniformly random order
    popularity        training-part item popularity (time-decayed)
    als               implicit's ALS, fit on every user's train part, users from all their training
                      interactions; factors, alpha and regularization tuned *per list kind* on the validation
                      users over a grid wider than ours (recsys/model_selection.py ALS_GRID)
    bpr               implicit's BPR, tuned the same way (BPR_GRID)
    bert_base         the base all-MiniLM-L6-v2 (not fine-tuned) as the same bi-encoder: user text vs item text
    bert_only         the artifact's fine-tuned bi-encoder alone
    lightgbm_no_bert  the artifact's ranker recipe and selection, trained without the BERT features
    blend             the artifact's ranker as served (the BERT scores among its features)

Every choice is made on the validation users; the test users are scored once. Each model is compared with
the best baseline (the best non-ethicrec row on that list kind) and with ALS by a paired bootstrap over the
test lists; the issue's goals are checked and written down as met or missed. JSON to
`reports/evaluation-<dataset>.json` (`audit.report --evaluation` reads it), a table to stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.atomic import write_text_atomic
from recsys.cli import cli_main, fail
from recsys.errors import EthicrecError

BASELINES = ("random", "popularity", "als", "bpr", "bert_base")
OURS = ("bert_only", "lightgbm_no_bert", "blend")
#: models that cannot score an item without training interactions (cold lists: all ties)
NEEDS_INTERACTIONS = ("popularity", "als", "bpr")


def bpr_scores(sd, lists, point: dict, seed: int, matrix, users: np.ndarray) -> list[np.ndarray]:
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        model = BayesianPersonalizedRanking(factors=int(point["factors"]), learning_rate=float(point["learning_rate"]),
                                            regularization=float(point["regularization"]),
                                            iterations=int(point.get("iterations", 100)), random_state=seed,
                                            num_threads=2)
        model.fit(matrix, show_progress=False)
    U, V = np.asarray(model.user_factors), np.asarray(model.item_factors)
    row = {str(u): i for i, u in enumerate(users)}
    out = []
    for cl in lists:
        i = row.get(cl.user_id)
        out.append(V[cl.candidates] @ U[i] if i is not None else np.zeros(len(cl.candidates)))
    return out


def tune_baseline(name: str, sd, val: dict, grid: dict, seed: int, score_fn, log) -> dict[str, dict]:
    """Best grid point per list kind, by validation NDCG@10 (one fit per point, all kinds scored)."""
    from recsys.model_selection import grid_points, mean_ndcg

    best: dict[str, tuple[float, dict]] = {}
    for point in grid_points(grid):
        per_kind = score_fn(point, val)
        for kind, scores in per_kind.items():
            v = mean_ndcg(val[kind], scores, seed=seed)
            if kind not in best or v > best[kind][0]:
                best[kind] = (v, point)
        log(f"{name} {point}: " + ", ".join(f"{k} {mean_ndcg(val[k], s, seed=seed):.4f}" for k, s in per_kind.items()))
    return {kind: point | {"val_ndcg@10": v} for kind, (v, point) in best.items()}


def base_bert_scores(encoder_path, catalog, lists: list, device: str, precision: str) -> list[np.ndarray]:
    """The base model as the same bi-encoder (user text from the history, item texts): what fine-tuning adds."""
    from recsys.embedding_store import ITEM_MAX_LENGTH, USER_MAX_LENGTH
    from recsys.encoder import TextEncoder, base_model_path
    from recsys.text import history_user_text

    path = Path(encoder_path) if encoder_path else base_model_path()
    if not (path / "config.json").is_file():
        raise EthicrecError(f"the artifact was fine-tuned from {path}, which is not there any more")
    base = TextEncoder.load(path, device=device, precision=precision)
    needed = np.unique(np.concatenate([cl.candidates for cl in lists])) if lists else np.zeros(0, np.int64)
    V = base.encode([catalog.texts[i] for i in needed], max_length=ITEM_MAX_LENGTH, batch_size=128)
    row = {int(i): j for j, i in enumerate(needed)}
    keys, texts = {}, []
    for cl in lists:
        k = cl.history.tobytes()
        if k not in keys:
            keys[k] = len(texts)
            texts.append(history_user_text(catalog.texts, cl.history))
    U = base.encode(texts, max_length=USER_MAX_LENGTH, batch_size=32)
    return [V[[row[int(c)] for c in cl.candidates]] @ U[keys[cl.history.tobytes()]] for cl in lists]


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


def _goal(name: str, ok: bool, detail: str) -> dict:
    return {"goal": name, "met": bool(ok), "detail": detail}


def check_goals(kinds: dict) -> list[dict]:
    """The issue's goals (README "Ranking quality"), each met or missed with its figures."""
    goals = []
    for kind in ("uniform", "retrieval"):
        if kind not in kinds:
            continue
        c = kinds[kind]["comparisons"]["blend_vs_als"]
        goals.append(_goal(f"{kind}: blend >= 1.05x ALS NDCG@10, paired CI of the difference above 0",
                           c["ratio"] >= 1.05 and c["diff_lo"] > 0,
                           f"{c['ratio']:.3f}x, diff {c['diff']:+.4f} [{c['diff_lo']:+.4f}, {c['diff_hi']:+.4f}]"))
        c = kinds[kind]["comparisons"]["blend_vs_lightgbm_no_bert"]
        goals.append(_goal(f"{kind}: blend beats the same blend without BERT, paired CI above 0", c["diff_lo"] > 0,
                           f"diff {c['diff']:+.4f} [{c['diff_lo']:+.4f}, {c['diff_hi']:+.4f}]"))
        c = kinds[kind]["comparisons"]["bert_only_vs_bert_base"]
        goals.append(_goal(f"{kind}: fine-tuned bi-encoder >= 1.30x base MiniLM NDCG@10", c["ratio"] >= 1.30,
                           f"{c['ratio']:.3f}x [{c['ratio_lo']:.3f}, {c['ratio_hi']:.3f}]"))
    if "cold" in kinds:
        c = kinds["cold"]["comparisons"]
        r = c["blend_vs_random"]
        goals.append(_goal("cold: blend >= 2x random NDCG@10", r["ratio"] >= 2.0,
                           f"{r['ratio']:.3f}x [{r['ratio_lo']:.3f}, {r['ratio_hi']:.3f}]"))
        b = c["blend_vs_bert_base"]
        goals.append(_goal("cold: blend beats the base-MiniLM content profile, paired CI above 0", b["diff_lo"] > 0,
                           f"diff {b['diff']:+.4f} [{b['diff_lo']:+.4f}, {b['diff_hi']:+.4f}]"))
    return goals


def evaluate(data: Path, artifacts_path: Path, *, device: str = "cpu", encode_precision: str = "auto",
             n_boot: int = 2000, min_slice_users: int = 20, baseline_grid: str = "full", log=None) -> dict:
    from recsys.compose import load_artifacts
    from recsys.data import load_dataset
    from recsys.features import BERT_FEATURES, FeatureBuilder
    from recsys.model_selection import (ALS_GRID, ALS_GRID_QUICK, BPR_GRID, RANKER_GRID, RANKER_GRID_QUICK,
                                        als_list_scores, select_ranker)
    from recsys.offline import check_dataset_matches, split_of
    from recsys.offline_scores import paired_bootstrap, per_list, random_ndcg, summary
    from recsys.ranking_data import (RankingSet, build_ranking_set, fit_als, full_histories, holdout_lists,
                                     load_item_features, training_lists, user_vectors)

    log = log or (lambda msg: print(f"[evaluate] {msg}", file=sys.stderr, flush=True))
    art = load_artifacts(artifacts_path, device=device, encode_precision=encode_precision)
    meta, params = art.metadata, art.metadata["params"]
    if meta.get("split", {}).get("protocol") != "per-user temporal":
        raise EthicrecError(f"artifact {art.version} was trained with the old global-time split; retrain it "
                            "(python -m recsys.train) to evaluate it on the per-user protocol")
    seed = int(params["seed"])
    ds = load_dataset(data)
    if params.get("sample_users"):
        ds = ds.subset_users(int(params["sample_users"]), seed=seed)
    check_dataset_matches(art, ds)
    split = meta["split"]
    sd = split_of(art, ds)
    if not (np.array_equal(sd.catalog.texts, art.catalog.texts)
            and np.allclose(sd.catalog.stats.log_pop, art.catalog.stats.log_pop, rtol=1e-12, atol=0)):
        raise EthicrecError(f"the catalog rebuilt from {data} differs from artifact {art.version}'s (texts or "
                            "statistics): it was trained by another version of ethicrec; retrain it")
    n = int(params["n_candidates"])
    feats = params.get("item_features")
    if feats and not Path(feats).is_file():
        raise EthicrecError(f"the artifact was trained with --item-features {feats}, which is not there any more")
    extra_names, extra = load_item_features(feats, sd.catalog) if feats else ((), None)
    encoder, vectors, als = art.store.encoder, np.asarray(art.store.item_vectors), art.als
    als_fit = fit_als(sd.split.fit, sd.catalog_fit, meta["selection"]["als"], seed=seed)
    val = {"uniform": holdout_lists(sd, "val", "uniform", n, seed),
           "retrieval": holdout_lists(sd, "val", "retrieval", n, seed, als)}
    test = {k: holdout_lists(sd, "test", k, n, seed, als) for k in ("uniform", "retrieval", "cold")}
    for kind, ls in test.items():
        if len(ls) < min_slice_users:
            raise EthicrecError(f"the {kind} slice has {len(ls)} test users with a held-out positive; at least "
                                f"{min_slice_users} are needed (--min-slice-users)")
    fb = FeatureBuilder(sd.catalog, sd.cooc, als, extra_names)
    every = [cl for ls in (*val.values(), *test.values()) for cl in ls]
    users = user_vectors(encoder, sd.catalog, every)
    val_sets = {k: build_ranking_set(v, fb, vectors, users, graded=False, item_features=extra) for k, v in val.items()}
    test_sets = {k: build_ranking_set(v, fb, vectors, users, graded=False, item_features=extra)
                 for k, v in test.items()}
    log(f"{ds.name}: test lists " + ", ".join(f"{k} {len(v)}" for k, v in test_sets.items()))

    # The no-BERT ablation: the same recipe and selection as the artifact's ranker, without BERT columns (so the
    # training set's BERT columns are never read: the train-state vectors stand in for the fit-state ones).
    tr_lists = training_lists(sd, als_fit, n, seed, cuts=int(params.get("label_cuts", 1)))
    fb_fit = FeatureBuilder(sd.catalog_fit, sd.cooc_fit, als_fit, extra_names)
    train_set = build_ranking_set(tr_lists, fb_fit, vectors, user_vectors(encoder, sd.catalog_fit, tr_lists),
                                  graded=True, item_features=extra)
    names = list(train_set.names)
    keep = [j for j, nm in enumerate(names) if nm not in BERT_FEATURES]
    grid = RANKER_GRID if params.get("ranker_grid", "full") == "full" else RANKER_GRID_QUICK
    no_bert, _ = select_ranker(train_set, RankingSet.concat(list(val_sets.values())), grid, seed=seed, columns=keep,
                               log=log)

    full = full_histories(sd)
    als_grid = ALS_GRID if baseline_grid == "full" else ALS_GRID_QUICK
    als_best = tune_baseline("ALS", sd, val, als_grid, seed, lambda p, v: {
        k: als_list_scores(fit_als(sd.split.train, sd.catalog, p, seed), ls, full_history=full) for k, ls in v.items()},
        log) if baseline_grid else {}
    from recsys.als import interaction_matrix

    matrix, matrix_users = interaction_matrix(sd.split.train, sd.catalog.item_ids)
    bpr_grid = BPR_GRID if baseline_grid == "full" else {k: v[:1] for k, v in BPR_GRID.items()}
    bpr_best = tune_baseline("BPR", sd, val, bpr_grid, seed, lambda p, v: {
        k: bpr_scores(sd, ls, p, seed, matrix, matrix_users) for k, ls in v.items()}, log)

    import tempfile

    from audit.log import AuditLog
    from audit.policy import load_policy
    from recsys.compose import build_pipeline
    from recsys.offline import served_scores

    kinds: dict[str, dict] = {}
    per_list_rows: dict[str, dict[str, pd.DataFrame]] = {}
    tmp = tempfile.TemporaryDirectory(prefix="ethicrec-evaluate-")
    audit_log = AuditLog(Path(tmp.name) / "evaluate-audit.db", salt=b"evaluate")
    pipe = build_pipeline(art, policy=load_policy(), audit_log=audit_log)
    served_gap = 0.0
    for kind, rs in test_sets.items():
        X = rs.X
        tune_kind = kind if kind != "cold" else "uniform"   # cold lists: the uniform choice (no cold validation)
        ap = {k: v for k, v in als_best[tune_kind].items() if k != "val_ndcg@10"}
        bp = {k: v for k, v in bpr_best[tune_kind].items() if k != "val_ndcg@10"}
        scores = {
            "popularity": X[:, names.index("item_log_pop")],
            "als": np.concatenate(als_list_scores(fit_als(sd.split.train, sd.catalog, ap, seed), rs.lists,
                                                  full_history=full)),
            "bpr": np.concatenate(bpr_scores(sd, rs.lists, bp, seed, matrix, matrix_users)),
            "bert_base": np.concatenate(base_bert_scores(params.get("base_model"), sd.catalog, rs.lists, device,
                                                         encode_precision)),
            "bert_only": X[:, names.index("interest")],
            "lightgbm_no_bert": no_bert.predict(X[:, keep]),
            # the blend as the server computes it (the whole serving pipeline, per list)
            "blend": np.concatenate(served_scores(pipe, art.catalog, rs.lists)),
        }
        served_gap = max(served_gap, float(np.max(np.abs(scores["blend"] - art.ranker.predict(X)))))
        if kind == "cold":
            # No training interaction: ALS solves a cold item's factors to zero, popularity is zero, and BPR
            # leaves them at their random initialisation. None of them can tell cold items apart; they are
            # scored as one tie (broken at random) rather than credited with their initial noise.
            for m in NEEDS_INTERACTIONS:
                scores[m] = np.zeros(len(X))
        q = {"random": random_ndcg(rs)} | {m: per_list(rs, sc, seed=seed) for m, sc in scores.items()}
        per_list_rows[kind] = q
        rows = {m: summary(v, len(sd.catalog)) for m, v in q.items()}
        best = max(BASELINES, key=lambda m: rows[m]["ndcg@10"])
        nd = {m: v["ndcg@10"].to_numpy() for m, v in q.items()}
        comps = {f"{m}_vs_best_baseline": paired_bootstrap(nd[m], nd[best], n_boot=n_boot, seed=seed)
                 for m in (*BASELINES, *OURS) if m != best}
        for a, b in (("blend", "als"), ("blend", "lightgbm_no_bert"), ("bert_only", "bert_base"), ("blend", "random"),
                     ("blend", "bert_base"), ("lightgbm_no_bert", "als")):
            comps[f"{a}_vs_{b}"] = paired_bootstrap(nd[a], nd[b], n_boot=n_boot, seed=seed)
        kinds[kind] = {"models": rows, "best_baseline": best, "comparisons": comps, "n_lists": int(len(rs)),
                       "tuned": {"als": als_best.get(tune_kind), "bpr": bpr_best.get(tune_kind)},
                       "cannot_score": list(NEEDS_INTERACTIONS) if kind == "cold" else []}
    pipe.close()
    audit_log.close()
    tmp.cleanup()
    groups = {}
    if len(ds.users):
        for m in ("als", "blend"):
            q = per_list_rows["uniform"][m]
            groups[m] = {a: by_group(q, ds.users, a) for a in ("gender", "age_band") if a in ds.users.columns}
    return {"dataset": ds.name, "artifact_version": art.version, "split": split,
            "protocol": "per-user temporal holdout; validation users choose, test users reported once; "
                        "lists: uniform, retrieval (ALS top-N, positives not injected), cold-start items; "
                        "binary relevance (rating >= 4); random tie-breaking",
            "n_candidates": n, "test_users": len(sd.split.test_users), "kinds": kinds,
            # the uniform lists, in the shape audit.report --evaluation reads
            "models": kinds["uniform"]["models"], "by_group": groups, "goals": check_goals(kinds),
            "n_boot": n_boot,
            # |served blend score - offline feature-matrix score|, max over every test candidate: the served
            # order is what was evaluated (the blend column comes from the serving pipeline itself)
            "served_vs_offline_max_abs_diff": served_gap}


def markdown(result: dict) -> str:
    lines = [f"{result['dataset']} — artifact {result['artifact_version']}, {result['test_users']} test users, "
             f"{result['n_candidates']} candidates per list", ""]
    for kind, r in result["kinds"].items():
        best = r["best_baseline"]
        lines += [f"### {kind} lists ({r['n_lists']}; best baseline: {best})", "",
                  "| model | NDCG@10 | Recall@10 | MRR | tie share | vs best baseline (95 % CI) |",
                  "|---|---:|---:|---:|---:|---|"]
        for name, m in r["models"].items():
            c = r["comparisons"].get(f"{name}_vs_best_baseline")
            vs = "—" if c is None else f"{c['ratio']:.3f}x, {c['diff']:+.4f} [{c['diff_lo']:+.4f}, {c['diff_hi']:+.4f}]"
            note = " (cannot score: ties)" if name in r.get("cannot_score", []) else ""
            mrr = "—" if np.isnan(m["mrr"]) else f"{m['mrr']:.4f}"
            lines.append(f"| {name}{note} | {m['ndcg@10']:.4f} | {m['recall@10']:.4f} | {mrr} | "
                         f"{m['tie_share']:.3f} | {vs} |")
        lines.append("")
    lines += ["| goal | met | figures |", "|---|---|---|"]
    for g in result["goals"]:
        lines.append(f"| {g['goal']} | {'yes' if g['met'] else '**no**'} | {g['detail']} |")
    return "\n".join(lines) + "\n"


def _known_errors() -> tuple[type[BaseException], ...]:
    from recsys.data.movielens import DatasetError

    return (EthicrecError, DatasetError)


@cli_main(errors=_known_errors)
def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(prog="python -m recsys.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="the dataset the artifact was trained on")
    ap.add_argument("--artifacts", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=None, help="JSON output (default: reports/evaluation-<dataset>.json)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--encode-precision", dest="encode_precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="text encoding precision (auto: bf16 on CUDA and on CPUs with native bf16)")
    ap.add_argument("--n-boot", type=int, default=2000, help="paired bootstrap resamples (default 2000)")
    ap.add_argument("--min-slice-users", type=int, default=20,
                    help="fewest test users a list kind needs to be reported (default 20)")
    ap.add_argument("--baseline-grid", choices=["quick", "full"], default="full",
                    help="the ALS / BPR baselines' grids (full: wider than ours; quick: for tests only)")
    args = ap.parse_args(argv)
    if args.n_boot < 100:
        fail(f"--n-boot must be at least 100; got {args.n_boot}")
    if args.min_slice_users < 1:
        fail(f"--min-slice-users must be at least 1; got {args.min_slice_users}")
    try:
        import implicit  # noqa: F401
    except ImportError:
        fail("the ALS and BPR baselines need the implicit package: pip install -e .")
    result = evaluate(args.data, args.artifacts, device=args.device, encode_precision=args.encode_precision,
                      n_boot=args.n_boot, min_slice_users=args.min_slice_users, baseline_grid=args.baseline_grid)
    out = args.out or Path("reports") / f"evaluation-{result['dataset']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(result, indent=2))
    print(markdown(result), end="")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
