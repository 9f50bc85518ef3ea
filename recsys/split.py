"""The per-user temporal split that training and evaluation share.

Frontends call the plugin for a user at *their* present, with their past as
history; so each user's interactions are cut by time, per user, not at one
global date:

    fit      each user's oldest interactions: fit every stage-1 model (BERT
             fine-tuning pairs, ALS, co-occurrence, item statistics) that the
             ranker's *training* features come from;
    label    the next `label_share` of the user's training part: the ranker's
             training targets (history = the user's fit part);
    holdout  the user's last `holdout_share` of interactions: evaluation targets
             (history = fit + label, the "train" part; stage-1 models refit on
             every user's train part);
    cold     every interaction with a *cold* item: a `cold_item_share` of the
             items, drawn once by a salted hash of their id, whose interactions
             are all held out, so no fitted model ever sees them and only their
             text is known (the cold-start slice); the other parts are cut from
             each user's remaining interactions;
    fit_cold the fit-part interactions of another `fit_cold_item_share` of the
             items: left out of the fit state only, so that these items are new
             to the models the ranker's training features come from, and their
             label-part interactions teach the ranker how to rank an item that
             has nothing but its text (what the cold slice asks of it). They are
             part of the train state like any fit row.

Users are split once, by a salted hash of their id, into *validation* users
(every choice — ALS and ranker hyper-parameters, early stopping, the baselines'
grids — is made on their holdout) and *test* users (reported once). Nothing
of any user's holdout reaches a fitted model: tests/recsys/test_split.py checks it.

Item tags carry a user and a time: a tag is visible to a state only if its user
had not yet reached the part that state excludes (so a test user's tag written
during their holdout never reaches an item text).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

PARTS = ("fit", "fit_cold", "label", "holdout", "cold")


@dataclass(frozen=True)
class SplitConfig:
    """Shares of each user's interactions (by time) and of users; see the module docstring."""

    holdout_share: float = 0.2
    label_share: float = 0.25          # of the user's train part (fit + label)
    val_user_share: float = 0.3
    cold_item_share: float = 0.05      # items whose every interaction is held out (0: none)
    fit_cold_item_share: float = 0.05  # items new to the fit state only (0: none)
    min_interactions: int = 5          # users with fewer keep everything in `fit` (no label, no holdout)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("holdout_share", "label_share", "val_user_share"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise ValueError(f"{name} must be between 0 and 1 (exclusive); got {v!r}")
        for name in ("cold_item_share", "fit_cold_item_share"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1); got {getattr(self, name)!r}")
        if self.cold_item_share + self.fit_cold_item_share >= 1.0:
            raise ValueError("cold_item_share + fit_cold_item_share must be below 1")
        if self.min_interactions < 3:
            raise ValueError(f"min_interactions must be at least 3; got {self.min_interactions!r}")


def is_validation_user(user_id: str, share: float, seed: int = 0) -> bool:
    """Stable across processes and runs (crc32, not hash())."""
    return zlib.crc32(f"{seed}:{user_id}".encode()) % 10_000 < int(round(share * 10_000))


def _item_bucket(item_id: str, seed: int) -> int:
    return zlib.crc32(f"cold:{seed}:{item_id}".encode()) % 10_000


def is_cold_item(item_id: str, share: float, seed: int = 0) -> bool:
    return _item_bucket(item_id, seed) < int(round(share * 10_000))


def is_fit_cold_item(item_id: str, cold_share: float, fit_cold_share: float, seed: int = 0) -> bool:
    """The next `fit_cold_share` of the same hash buckets: never a cold item."""
    b = _item_bucket(item_id, seed)
    lo = int(round(cold_share * 10_000))
    return lo <= b < lo + int(round(fit_cold_share * 10_000))


@dataclass(frozen=True)
class UserSplit:
    """Interactions sorted by (user, time, item), with each row's `part` (fit | label | holdout)."""

    interactions: pd.DataFrame
    config: SplitConfig
    val_users: frozenset[str]
    test_users: frozenset[str]
    # per user: first timestamp of its label part and of its holdout (absent: the user has none)
    label_start: dict[str, int]
    holdout_start: dict[str, int]

    def part(self, *parts: str) -> pd.DataFrame:
        bad = set(parts) - set(PARTS)
        if bad:
            raise ValueError(f"unknown part {sorted(bad)[0]!r}; parts are {', '.join(PARTS)}")
        return self.interactions[self.interactions["part"].isin(parts)]

    @property
    def fit(self) -> pd.DataFrame:
        return self.part("fit")

    @property
    def train(self) -> pd.DataFrame:
        """fit + fit_cold + label: what every model is refit on for evaluation and serving."""
        return self.part("fit", "fit_cold", "label")

    def holdout(self, role: str) -> pd.DataFrame:
        """The holdout rows of the validation (`"val"`) or test (`"test"`) users."""
        if role not in ("val", "test"):
            raise ValueError(f"role must be 'val' or 'test'; got {role!r}")
        users = self.val_users if role == "val" else self.test_users
        h = self.part("holdout")
        return h[h["user_id"].isin(users)]

    def cold_items(self) -> set[str]:
        """Items whose interactions are all held out (the drawn cold items, and items that only occur in some
        user's holdout): only their text is known to any fitted model."""
        seen = set(self.train["item_id"])
        return set(self.part("holdout", "cold")["item_id"]) - seen

    def fit_cold_items(self) -> set[str]:
        """Items new to the fit state only (their fit rows are `fit_cold`)."""
        cfg = self.config
        return {i for i in self.interactions["item_id"].unique()
                if is_fit_cold_item(str(i), cfg.cold_item_share, cfg.fit_cold_item_share, cfg.seed)}

    def cold_targets(self, role: str) -> pd.DataFrame:
        """Interactions of the validation or test users with cold items from their holdout period on (the
        time their warm holdout starts): the cold-start slice's targets, in the users' future like the rest."""
        users = self.val_users if role == "val" else self.test_users
        cold = self.interactions[self.interactions["item_id"].isin(self.cold_items())
                                 & self.interactions["part"].isin(("holdout", "cold"))
                                 & self.interactions["user_id"].isin(users)]
        start = cold["user_id"].map(self.holdout_start)
        return cold[start.notna() & (cold["timestamp"] >= start.fillna(0))]

    def visible_tags(self, tags: pd.DataFrame, state: str) -> pd.DataFrame:
        """Tags a state may read: `"fit"` (before each user's label part) or `"train"` (before their holdout).

        Tags without a user column (or of users without interactions) are kept; tags of cold items never are
        (a user tags what they watched: the tag would tell of a held-out interaction)."""
        if state not in ("fit", "train"):
            raise ValueError(f"state must be 'fit' or 'train'; got {state!r}")
        if not len(tags):
            return tags
        hidden = self.cold_items() | (self.fit_cold_items() if state == "fit" else set())
        tags = tags[~tags["item_id"].isin(hidden)]
        if "user_id" not in tags.columns:
            return tags
        starts = self.label_start if state == "fit" else self.holdout_start
        if state == "fit":
            # a user without a label part but with a holdout: the holdout bounds the fit state too
            starts = {**self.holdout_start, **starts}
        limit = tags["user_id"].map(starts)
        return tags[limit.isna() | (tags["timestamp"] < limit.fillna(0))]


def split_per_user(inter: pd.DataFrame, config: SplitConfig | None = None) -> UserSplit:
    """Cut every user's interactions by time into fit / label / holdout (shares of `config`)."""
    cfg = config or SplitConfig()
    df = inter.sort_values(["user_id", "timestamp", "item_id"], kind="mergesort").reset_index(drop=True)
    if df.empty:
        raise ValueError("no interactions to split")
    cold_items = {i for i in df["item_id"].unique() if is_cold_item(str(i), cfg.cold_item_share, cfg.seed)} \
        if cfg.cold_item_share > 0 else set()
    is_cold = df["item_id"].isin(cold_items).to_numpy()
    cold_rows = df[is_cold]
    df = df[~is_cold].reset_index(drop=True)
    g = df.groupby("user_id", sort=False)
    pos = g.cumcount().to_numpy()
    n = g["item_id"].transform("size").to_numpy()
    n_hold = np.where(n >= cfg.min_interactions, np.maximum(1, np.round(cfg.holdout_share * n)), 0).astype(int)
    n_train = n - n_hold
    n_label = np.where(n >= cfg.min_interactions, np.maximum(1, np.round(cfg.label_share * n_train)), 0).astype(int)
    part = np.where(pos >= n_train, "holdout", np.where(pos >= n_train - n_label, "label", "fit"))
    if cfg.fit_cold_item_share > 0:
        fit_cold = {i for i in df["item_id"].unique()
                    if is_fit_cold_item(str(i), cfg.cold_item_share, cfg.fit_cold_item_share, cfg.seed)}
        part = np.where((part == "fit") & df["item_id"].isin(fit_cold).to_numpy(), "fit_cold", part)
    df["part"] = part
    df = pd.concat([df, cold_rows.assign(part="cold")]).sort_values(["user_id", "timestamp", "item_id"],
                                                                      kind="mergesort").reset_index(drop=True)
    users = df["user_id"].unique()
    val = frozenset(u for u in users if is_validation_user(str(u), cfg.val_user_share, cfg.seed))
    test = frozenset(users) - val
    starts = df[df["part"].isin(("label", "holdout"))].groupby(["user_id", "part"], sort=False)["timestamp"].min()
    label_start = {str(u): int(t) for (u, p), t in starts.items() if p == "label"}
    hold_start = {str(u): int(t) for (u, p), t in starts.items() if p == "holdout"}
    return UserSplit(df, cfg, val, test, label_start, hold_start)


def relevance(rating: float) -> int:
    """Graded relevance of an interacted item for ranker training (sampled negatives are 0)."""
    if rating >= 4.0:
        return 3
    if rating >= 3.0:
        return 2
    return 1


#: Evaluation: an interaction is a positive when its rating is at least this.
POSITIVE_RATING = 4.0
