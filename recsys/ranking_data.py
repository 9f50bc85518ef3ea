"""Ranker training and evaluation sets, built once here for both
`recsys.train` and `recsys.evaluate` so that every evaluated model sees the
same split, the same queries and the same candidate lists.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from recsys.catalog import Catalog
from recsys.cooccurrence import CoOccurrence
from recsys.data import Dataset
from recsys.embedding_store import USER_MAX_LENGTH
from recsys.features import FeatureBuilder, max_similarity, recent_history
from recsys.split import Cutoffs, Query, build_queries, sample_candidates, temporal_cutoffs
from recsys.text import user_text


def hash_user(user_id: str) -> int:
    """Stable across processes (unlike hash())."""
    return zlib.crc32(user_id.encode())


@dataclass
class SplitData:
    ds: Dataset
    cut: Cutoffs
    catalog_fit: Catalog       # texts and statistics from before t_fit (ranker training)
    catalog: Catalog           # from before t_val (evaluation and serving)
    cooc_fit: CoOccurrence
    cooc: CoOccurrence
    train_q: list[Query]       # labels in [t_fit, t_val), several cuts per user
    stop_q: list[Query]        # half of the users after t_val: early stopping
    test_q: list[Query]        # the other half: reported metrics


def split_data(ds: Dataset, max_eval_queries: int | None = None) -> SplitData:
    inter = ds.interactions
    cut = temporal_cutoffs(inter)
    catalog_fit = Catalog.build(ds.items, ds.tags, inter, cut.t_fit)
    catalog = Catalog.build(ds.items, ds.tags, inter, cut.t_val)
    cooc_fit = CoOccurrence.build(inter, catalog_fit.item_ids, cut.t_fit)
    cooc = CoOccurrence.build(inter, catalog.item_ids, cut.t_val)
    val_q = build_queries(inter, cut.t_val, None)
    stop_q = [q for q in val_q if hash_user(q.user_id) % 2 == 0]
    test_q = [q for q in val_q if hash_user(q.user_id) % 2 == 1]
    if max_eval_queries:
        stop_q, test_q = stop_q[:max_eval_queries], test_q[:max_eval_queries]
    return SplitData(ds, cut, catalog_fit, catalog, cooc_fit, cooc, ranker_train_queries(inter, cut), stop_q, test_q)


TRAIN_CUTS = (0.25, 0.5, 0.75)


def ranker_train_queries(inter, cut: Cutoffs) -> list[Query]:
    """Each user active in [t_fit, t_val) is cut at three points (a quarter, half and three quarters
    of their period's interactions become targets): three times the ranker's training lists on small
    data sets, where one cut per user left early stopping at the mercy of a few dozen validation users."""
    seen: set[tuple[str, int]] = set()
    out: list[Query] = []
    for share in TRAIN_CUTS:
        for q in build_queries(inter, cut.t_fit, cut.t_val, target_share=share):
            if (q.user_id, q.query_time) not in seen:
                seen.add((q.user_id, q.query_time))
                out.append(q)
    return out


@dataclass
class RankingSet:
    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray            # candidates per query
    user_ids: list[str]
    candidates: list[np.ndarray]  # catalog rows of each query's candidates
    histories: list[np.ndarray]   # catalog rows of each query's history
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.groups)

    def bounds(self) -> list[tuple[int, int]]:
        b = np.r_[0, np.cumsum(self.groups)]
        return list(zip(b[:-1].tolist(), b[1:].tolist()))


def load_item_features(path, catalog: Catalog) -> tuple[tuple[str, ...], np.ndarray]:
    """CSV with item_id plus numeric columns -> (names, matrix aligned with catalog rows, NaN where absent)."""
    import pandas as pd

    df = pd.read_csv(path, dtype={"item_id": str})
    if "item_id" not in df.columns:
        raise ValueError(f"{path}: needs an item_id column")
    names = tuple(c for c in df.columns if c != "item_id")
    bad = [c for c in names if not pd.api.types.is_numeric_dtype(df[c])]
    if not names or bad:
        raise ValueError(f"{path}: feature columns must be numeric; got {', '.join(bad) or 'none'}")
    from recsys.features import BASE_FEATURES

    clash = set(names) & set(BASE_FEATURES)
    if clash:
        raise ValueError(f"{path}: column {sorted(clash)[0]} clashes with a built-in feature")
    m = np.full((len(catalog), len(names)), np.nan)
    rows = catalog.lookup(df["item_id"].tolist())
    ok = rows >= 0
    m[rows[ok]] = df.loc[ok, list(names)].to_numpy(np.float64)
    return names, m


def build_ranking_set(queries: list[Query], catalog: Catalog, cooc: CoOccurrence, encoder, item_vectors: np.ndarray,
                      n_candidates: int, rng: np.random.Generator,
                      item_features: tuple[tuple[str, ...], np.ndarray] | None = None) -> RankingSet:
    """Features through the serving FeatureBuilder, so offline and online features are the same code."""
    names, matrix = item_features or ((), None)
    builder = FeatureBuilder(catalog, cooc, names)
    pop = np.expm1(catalog.stats.log_pop)
    hist_idx = [catalog.lookup(list(q.history)) for q in queries]
    texts = [user_text([catalog.texts[i] for i in h[h >= 0]]) for h in hist_idx]
    U = encoder.encode(texts, max_length=USER_MAX_LENGTH, batch_size=32)
    Xs, ys, groups, users, cands, hists = [], [], [], [], [], []
    for q, h, u in zip(queries, hist_idx, U):
        known_targets = {k: v for k, v in q.targets.items() if k in catalog.index}
        if not known_targets:
            continue
        q2 = Query(q.user_id, q.query_time, q.history, q.history_times, known_targets)
        ids, labels = sample_candidates(q2, catalog.item_ids, pop, n_candidates, rng)
        idx = catalog.lookup(ids)
        iv = item_vectors[idx]
        interest = (iv @ u).astype(np.float64)
        imax = max_similarity(iv, item_vectors[recent_history(h)])
        Xs.append(builder.build(idx, h, interest, matrix[idx] if matrix is not None else None, interest_max=imax))
        ys.append(np.asarray(labels))
        groups.append(len(ids))
        users.append(q.user_id)
        cands.append(idx)
        hists.append(h)
    X = np.vstack(Xs) if Xs else np.zeros((0, len(builder.names)))
    return RankingSet(X, np.concatenate(ys) if ys else np.zeros(0), np.asarray(groups, dtype=int), users, cands,
                      hists, builder.names)


def ranking_sets(sd: SplitData, encoder, vectors_fit: np.ndarray, vectors: np.ndarray, n_candidates: int,
                 seed: int, item_features_path=None) -> tuple[RankingSet, RankingSet, RankingSet]:
    """(train, early-stop, test); one generator consumed in a fixed order, so the lists are reproducible."""
    rng = np.random.default_rng(seed)
    # catalog_fit and catalog share item ids and row order, so one matrix serves both
    feats = load_item_features(item_features_path, sd.catalog) if item_features_path else None
    train = build_ranking_set(sd.train_q, sd.catalog_fit, sd.cooc_fit, encoder, vectors_fit, n_candidates, rng, feats)
    stop = build_ranking_set(sd.stop_q, sd.catalog, sd.cooc, encoder, vectors, n_candidates, rng, feats)
    test = build_ranking_set(sd.test_q, sd.catalog, sd.cooc, encoder, vectors, n_candidates, rng, feats)
    return train, stop, test
