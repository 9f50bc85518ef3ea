"""Every hyper-parameter is chosen here, on the validation users' lists only (recsys/split.py): the ALS that
makes the ranker's features and the retrieval stage, the ranker's grid and tree count, and — in
`recsys.evaluate` — the baselines' grids, each as wide as ours or wider, so no baseline is tuned less.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from recsys.als import ImplicitALS
from recsys.metrics import ndcg_at_k_ordered, random_tie_order
from recsys.ranking_data import CandidateList, RankingSet, SplitData, fit_als
from recsys.split import POSITIVE_RATING

#: ALS grids: `quick` for the demo profile, the full one for `recsys.train` without --quick and for the
#: ALS *baseline* of `recsys.evaluate` (always the full grid: a baseline is never tuned less than ours).
ALS_GRID_QUICK = {"factors": (16, 32, 64), "alpha": (1.0,), "regularization": (0.05, 1.0)}
ALS_GRID = {"factors": (16, 32, 64, 128), "alpha": (0.5, 1.0, 2.0, 5.0, 10.0, 20.0),
            "regularization": (0.01, 0.1, 1.0)}
BPR_GRID = {"factors": (32, 64, 128), "learning_rate": (0.01, 0.05), "regularization": (0.001, 0.01)}
RANKER_GRID_QUICK = ({"num_leaves": 63, "min_child_samples": 100},)
RANKER_GRID = tuple({"num_leaves": n, "min_child_samples": m} for n in (31, 63, 127) for m in (50, 200))


def grid_points(grid: dict[str, Sequence]) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def mean_ndcg(lists: list[CandidateList], scores: list[np.ndarray], k: int = 10, seed: int = 0) -> float:
    """Mean NDCG@k over the lists with a positive, ties broken at random (seeded)."""
    rng = np.random.default_rng(seed)
    vals = [ndcg_at_k_ordered((cl.ratings >= POSITIVE_RATING).astype(float), random_tie_order(s, rng), k)
            for cl, s in zip(lists, scores) if (cl.ratings >= POSITIVE_RATING).any()]
    return float(np.mean(vals)) if vals else float("nan")


def als_list_scores(als: ImplicitALS, lists: list[CandidateList], *, full_history: dict[str, np.ndarray] | None = None
                    ) -> list[np.ndarray]:
    """ALS preference of each list's candidates; the user folded in from `full_history[user]` when given
    (the baseline: every training interaction), else from the list's request history."""
    out = []
    for cl in lists:
        hist = full_history.get(cl.user_id, cl.history) if full_history is not None else cl.history
        out.append(als.scores(als.user_vector(hist), cl.candidates))
    return out


def tune_als(sd: SplitData, lists: dict[str, list[CandidateList]], grid: dict[str, Sequence], *, seed: int,
             full_history: dict[str, np.ndarray] | None = None, log: Callable[[str], None] | None = None
             ) -> tuple[dict, list[dict]]:
    """The grid point with the best mean validation NDCG@10 over `lists`' kinds (ALS fit on the train part)."""
    table = []
    for point in grid_points(grid):
        als = fit_als(sd.split.train, sd.catalog, point, seed=seed)
        per_kind = {kind: mean_ndcg(ls, als_list_scores(als, ls, full_history=full_history), seed=seed)
                    for kind, ls in lists.items() if ls}
        table.append(point | {f"val_ndcg@10_{k}": v for k, v in per_kind.items()}
                     | {"val_ndcg@10": float(np.mean(list(per_kind.values())))})
        if log:
            log(f"ALS {point}: validation NDCG@10 {table[-1]['val_ndcg@10']:.4f}")
    best = max(table, key=lambda r: r["val_ndcg@10"])
    return {k: best[k] for k in grid}, table


def select_ranker(train: RankingSet, val: RankingSet, grid: Sequence[dict], *, seed: int,
                  columns: list[int] | None = None, log: Callable[[str], None] | None = None):
    """Fit one LambdaRanker per grid point (its tree count chosen on `val`) and keep the best by validation
    NDCG@10. `columns`: a feature subset (the no-BERT ablation)."""
    from recsys.ranker import LambdaRanker

    cols = list(range(train.X.shape[1])) if columns is None else list(columns)
    names = [train.names[c] for c in cols]
    best, table = None, []
    for point in grid:
        r = LambdaRanker(random_state=seed, **point).fit(train.X[:, cols], train.y, train.groups, feature_names=names,
                                                          eval_set=(val.X[:, cols], val.y, val.groups))
        ndcg = mean_ndcg(val.lists, _split_scores(val, r.predict(val.X[:, cols])), seed=seed)
        table.append(dict(point) | {"best_iteration": r.best_iteration_, "val_ndcg@10": ndcg})
        if log:
            log(f"ranker {point}: {r.best_iteration_} trees, validation NDCG@10 {ndcg:.4f}")
        if best is None or ndcg > best[1]:
            best = (r, ndcg)
    assert best is not None
    return best[0], table


def _split_scores(rs: RankingSet, scores: np.ndarray) -> list[np.ndarray]:
    return [scores[s:e] for s, e in rs.bounds()]
