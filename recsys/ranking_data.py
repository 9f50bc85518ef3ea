"""Candidate lists and feature matrices, built here for both `recsys.train` and `recsys.evaluate`, so every
model is trained, selected and evaluated on the same split, the same lists and the same feature code as
serving (`recsys.features.FeatureBuilder`).

Two stage-1 states (recsys/split.py): *fit* (each user's fit part) makes the ranker's training features,
with labels from each user's label part; *train* (fit + label) makes the features of validation and test
lists and is what the artifact serves. List kinds, as frontends send them:

    uniform     the user's targets plus `n_negatives` items drawn uniformly from those the user never rated
    retrieval   the top `n_negatives` unseen items of the ALS retrieval stage; targets are NOT injected (a
                list without a positive is kept for training only when it has some target, and skipped in
                evaluation, where it has nothing to rank)
    cold        the user's held-out positives among the cold items (no training interaction at all) plus
                cold items the user never rated: only their text is known to any model
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recsys.als import ImplicitALS, interaction_matrix
from recsys.catalog import Catalog
from recsys.cooccurrence import CoOccurrence
from recsys.data import Dataset
from recsys.embedding_store import USER_MAX_LENGTH
from recsys.features import FeatureBuilder, max_similarity, recent_history
from recsys.split import POSITIVE_RATING, SplitConfig, UserSplit, relevance, split_per_user
from recsys.text import history_user_text
from recsys.stable_dot import stable_dot

LIST_KINDS = ("uniform", "retrieval", "cold")
#: history kept per request (most recent first): the request limit (recsys.validation), and what users.json keeps
MAX_HISTORY = 200


def _end_time(df: pd.DataFrame) -> int:
    return int(df["timestamp"].max()) + 1 if len(df) else 0


@dataclass
class SplitData:
    """The split and the catalog / co-occurrence of both stage-1 states (ALS is fitted by the caller, whose
    hyper-parameters come from validation)."""

    ds: Dataset
    split: UserSplit
    catalog_fit: Catalog       # statistics and tags from each user's fit part
    catalog: Catalog           # from each user's train part (fit + label): evaluation and serving
    cooc_fit: CoOccurrence
    cooc: CoOccurrence


def split_data(ds: Dataset, config: SplitConfig | None = None) -> SplitData:
    sp = split_per_user(ds.interactions, config)
    fit, train = sp.fit, sp.train
    catalog_fit = Catalog.build(ds.items, sp.visible_tags(ds.tags, "fit"), fit, _end_time(fit))
    catalog = Catalog.build(ds.items, sp.visible_tags(ds.tags, "train"), train, _end_time(train))
    cooc_fit = CoOccurrence.build(fit, catalog_fit.item_ids, _end_time(fit))
    cooc = CoOccurrence.build(train, catalog.item_ids, _end_time(train))
    return SplitData(ds, sp, catalog_fit, catalog, cooc_fit, cooc)


def fit_als(inter: pd.DataFrame, catalog: Catalog, params: dict, seed: int = 0) -> ImplicitALS:
    m, _ = interaction_matrix(inter, catalog.item_ids)
    return ImplicitALS(factors=int(params["factors"]), alpha=float(params["alpha"]),
                       regularization=float(params["regularization"]), iterations=int(params.get("iterations", 15)),
                       random_state=seed).fit(m)


def full_histories(sd: SplitData) -> dict[str, np.ndarray]:
    """Every user's whole train part (catalog rows, most recent first): what baselines fold users in from."""
    return histories(sd.split.train, sd.catalog, None)


def histories(df: pd.DataFrame, catalog: Catalog, max_items: int | None = MAX_HISTORY) -> dict[str, np.ndarray]:
    """user -> catalog rows of their interactions in `df`, most recent first, one entry per item (the
    `max_items` most recent; None: all)."""
    out: dict[str, np.ndarray] = {}
    # newest first, ties in time by item id: the order users.json keeps for serving
    d = df.sort_values(["user_id", "timestamp", "item_id"], ascending=[True, False, True], kind="mergesort")
    for user, items in d.groupby("user_id", sort=True)["item_id"]:
        ids = list(dict.fromkeys(items.tolist()))[:max_items]
        out[str(user)] = catalog.lookup(ids)
    return out


@dataclass
class CandidateList:
    user_id: str
    kind: str
    history: np.ndarray        # catalog rows, most recent first
    candidates: np.ndarray     # catalog rows
    ratings: np.ndarray        # the user's held-out (or label) rating of each candidate, 0 = none


@dataclass
class ListSpec:
    """What lists to build: the targets, whose history, and the rows each user must not get as negatives."""

    targets: pd.DataFrame
    history: dict[str, np.ndarray]
    exclude: dict[str, set[int]] = field(default_factory=dict)


def _targets_by_user(targets: pd.DataFrame, catalog: Catalog) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rows = catalog.lookup(targets["item_id"].tolist())
    ok = rows >= 0
    t = pd.DataFrame({"user_id": targets["user_id"].to_numpy()[ok], "row": rows[ok],
                      "rating": targets["rating"].to_numpy(np.float64)[ok]})
    return {str(u): (g["row"].to_numpy(), g["rating"].to_numpy()) for u, g in t.groupby("user_id", sort=True)}


def uniform_lists(spec: ListSpec, catalog: Catalog, n_negatives: int, rng: np.random.Generator, *,
                  positives_only: bool, pool: np.ndarray | None = None, kind: str = "uniform") -> list[CandidateList]:
    """Targets (only ratings >= POSITIVE_RATING when `positives_only`) plus uniform negatives from `pool`
    (default: the whole catalog) outside `spec.exclude[user]` and the targets."""
    pool = np.arange(len(catalog), dtype=np.int64) if pool is None else np.asarray(pool, dtype=np.int64)
    pool_set = set(pool.tolist()) if kind == "cold" else None
    out = []
    for user, (rows, ratings) in _targets_by_user(spec.targets, catalog).items():
        hist = spec.history.get(user)
        if hist is None or not (hist >= 0).any():
            continue
        keep = np.ones(len(rows), dtype=bool)
        if positives_only:
            keep &= ratings >= POSITIVE_RATING
        if pool_set is not None:
            keep &= np.fromiter((int(r) in pool_set for r in rows), dtype=bool, count=len(rows))
        pos, pos_r = rows[keep], ratings[keep]
        if not len(pos):
            continue
        banned = spec.exclude.get(user, set()) | set(rows.tolist()) | set(hist[hist >= 0].tolist())
        available = np.setdiff1d(pool, np.fromiter(banned, dtype=np.int64, count=len(banned)))
        neg = rng.choice(available, size=min(n_negatives, len(available)), replace=False)
        cands = np.concatenate([pos, np.asarray(neg, dtype=np.int64)])
        r = np.concatenate([pos_r, np.zeros(len(neg))])
        order = rng.permutation(len(cands))   # no model may learn from input position
        out.append(CandidateList(user, kind, hist, cands[order], r[order]))
    return out


def retrieval_lists(spec: ListSpec, catalog: Catalog, als: ImplicitALS, n: int,
                    full_history: dict[str, np.ndarray]) -> list[CandidateList]:
    """The ALS retrieval stage's top `n` items the user has not interacted with (user folded in from their
    `full_history`, which is also excluded); each candidate's rating is the user's target rating of it, if
    any (targets are not injected)."""
    out = []
    targets = _targets_by_user(spec.targets, catalog)
    for user, (rows, ratings) in targets.items():
        hist = spec.history.get(user)
        full = full_history.get(user)
        if hist is None or full is None or not (hist >= 0).any():
            continue
        u = als.user_vector(full)
        scores = als.item_factors_.astype(np.float64) @ u
        scores[full[full >= 0]] = -np.inf
        k = min(n, int(np.isfinite(scores).sum()))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        lab = dict(zip(rows.tolist(), ratings.tolist()))
        out.append(CandidateList(user, "retrieval", hist, top.astype(np.int64),
                                 np.array([lab.get(int(c), 0.0) for c in top])))
    return out


@dataclass
class RankingSet:
    """Feature rows of many candidate lists (one LightGBM query group each)."""

    X: np.ndarray
    y: np.ndarray                 # training: graded relevance; evaluation: 1 for a positive, else 0
    groups: np.ndarray            # candidates per list
    lists: list[CandidateList]
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.groups)

    def bounds(self) -> list[tuple[int, int]]:
        b = np.r_[0, np.cumsum(self.groups)]
        return list(zip(b[:-1].tolist(), b[1:].tolist()))

    @property
    def user_ids(self) -> list[str]:
        return [cl.user_id for cl in self.lists]

    def subset(self, keep: np.ndarray) -> "RankingSet":
        keep = np.asarray(keep, dtype=bool)
        b = self.bounds()
        rows = np.concatenate([np.arange(s, e) for (s, e), k in zip(b, keep) if k]) if keep.any() else \
            np.zeros(0, dtype=int)
        return RankingSet(self.X[rows], self.y[rows], self.groups[keep], [cl for cl, k in zip(self.lists, keep) if k],
                          self.names)

    @staticmethod
    def concat(sets: list["RankingSet"]) -> "RankingSet":
        sets = [s for s in sets if len(s)]
        if not sets:
            raise ValueError("no lists to concatenate")
        return RankingSet(np.vstack([s.X for s in sets]), np.concatenate([s.y for s in sets]),
                          np.concatenate([s.groups for s in sets]), [cl for s in sets for cl in s.lists], sets[0].names)


def user_vectors(encoder, catalog: Catalog, lists: list[CandidateList]) -> dict[bytes, np.ndarray]:
    """BERT vector of each distinct history's user text (as serving builds it), keyed by the history bytes."""
    keys, texts = [], []
    seen: set[bytes] = set()
    for cl in lists:
        k = cl.history.tobytes()
        if k not in seen:
            seen.add(k)
            keys.append(k)
            texts.append(history_user_text(catalog.texts, cl.history))
    if not texts:
        return {}
    U = encoder.encode(texts, max_length=USER_MAX_LENGTH, batch_size=32)
    return dict(zip(keys, U))


def build_ranking_set(lists: list[CandidateList], builder: FeatureBuilder, vectors: np.ndarray,
                      users: dict[bytes, np.ndarray], *, graded: bool, item_features: np.ndarray | None = None
                      ) -> RankingSet:
    """Features through the serving FeatureBuilder, so offline and online features are the same code.

    `graded`: labels for ranker training (recsys.split.relevance); else binary positives for evaluation."""
    Xs, ys, groups, kept = [], [], [], []
    for cl in lists:
        if graded:
            y = np.array([relevance(r) if r > 0 else 0 for r in cl.ratings.tolist()], dtype=np.float64)
            if not y.any():
                continue
        else:
            y = (cl.ratings >= POSITIVE_RATING).astype(np.float64)
        iv = vectors[cl.candidates]
        interest = stable_dot(iv, users[cl.history.tobytes()])
        imax = max_similarity(iv, vectors[recent_history(cl.history)])
        extra = item_features[cl.candidates] if item_features is not None else None
        Xs.append(builder.build(cl.candidates, cl.history, interest, extra, interest_max=imax))
        ys.append(y)
        groups.append(len(cl.candidates))
        kept.append(cl)
    X = np.vstack(Xs) if Xs else np.zeros((0, len(builder.names)))
    return RankingSet(X, np.concatenate(ys) if ys else np.zeros(0), np.asarray(groups, dtype=int), kept,
                      builder.names)


def load_item_features(path, catalog: Catalog) -> tuple[tuple[str, ...], np.ndarray]:
    """CSV with item_id plus numeric columns -> (names, matrix aligned with catalog rows, NaN where absent)."""
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


def rated_rows(df: pd.DataFrame, catalog: Catalog) -> dict[str, set[int]]:
    """user -> catalog rows of every item they interacted with in `df`."""
    rows = catalog.lookup(df["item_id"].tolist())
    out: dict[str, set[int]] = {}
    for u, r in zip(df["user_id"].tolist(), rows.tolist()):
        if r >= 0:
            out.setdefault(str(u), set()).add(r)
    return out


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """One generator per list family, so building one family never shifts another's draws."""
    return np.random.default_rng([seed, *stream])


_ROLE = {"val": 1, "test": 2}


def holdout_lists(sd: SplitData, role: str, kind: str, n_negatives: int, seed: int,
                  als: ImplicitALS | None = None) -> list[CandidateList]:
    """Validation (`role="val"`) or test lists of one kind, from the train-state catalog and histories;
    `retrieval` needs the ALS retrieval stage."""
    sp = sd.split
    hist_train = histories(sp.train, sd.catalog)
    targets = sp.holdout(role)
    full = histories(sp.train, sd.catalog, None)
    if kind == "uniform":
        spec = ListSpec(targets, hist_train, rated_rows(sp.interactions, sd.catalog))
        return uniform_lists(spec, sd.catalog, n_negatives, _rng(seed, _ROLE[role], 1), positives_only=True)
    if kind == "cold":
        cold = sd.catalog.lookup(sorted(sp.cold_items()))
        cold = np.sort(cold[cold >= 0])
        if not len(cold):
            return []
        spec = ListSpec(sp.cold_targets(role), hist_train, rated_rows(sp.interactions, sd.catalog))
        return uniform_lists(spec, sd.catalog, n_negatives, _rng(seed, _ROLE[role], 3), positives_only=True,
                             pool=cold, kind="cold")
    if kind == "retrieval":
        if als is None:
            raise ValueError("retrieval lists need the ALS retrieval stage (als=...)")
        return [cl for cl in retrieval_lists(ListSpec(targets, hist_train), sd.catalog, als, n_negatives, full)
                if (cl.ratings >= POSITIVE_RATING).any()]
    raise ValueError(f"unknown list kind {kind!r}; kinds are {', '.join(LIST_KINDS)}")


def training_lists(sd: SplitData, als_fit: ImplicitALS, n_negatives: int, seed: int, *, cuts: int = 1
                   ) -> list[CandidateList]:
    """The ranker's training lists: every user's label part as targets, their fit part as history, fit-state
    catalog; one uniform and one retrieval list per user and cut (the two kinds frontends send). With `cuts`
    c > 1, a user's label part is cut in c consecutive slices by time: slice j's history also holds slices
    before j (more, later training lists, none of which a fit-state model has seen). Uniform negatives avoid
    the user's whole train part, never their holdout, which training must not know about."""
    if cuts < 1:
        raise ValueError(f"cuts must be at least 1; got {cuts!r}")
    sp = sd.split
    fit, label = sp.fit, sp.part("label")
    rated = rated_rows(sp.train, sd.catalog_fit)
    out: list[CandidateList] = []
    slice_of = label.groupby("user_id", sort=False).cumcount() * cuts // label.groupby("user_id")["item_id"] \
        .transform("size")
    for j in range(cuts):
        targets = label[slice_of.to_numpy() == j]
        seen = pd.concat([fit, label[slice_of.to_numpy() < j]])
        spec = ListSpec(targets, histories(seen, sd.catalog_fit), rated)
        out += uniform_lists(spec, sd.catalog_fit, n_negatives, _rng(seed, 0, 1, j), positives_only=False)
        out += retrieval_lists(ListSpec(targets, spec.history), sd.catalog_fit, als_fit, n_negatives,
                               histories(seen, sd.catalog_fit, None))
    return out
