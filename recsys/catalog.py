"""The item catalog: ids, texts, genres and item statistics, in one row order
shared with the item-vector matrix and the harm scores."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.text import item_text

HEAD_SHARE = 0.2  # the most popular 20 % of interacted items form the "head" group
SECONDS_PER_DAY = 86400.0


@dataclass
class ItemStats:
    """Statistics of items from interactions strictly before `ref_time`."""

    ref_time: int
    log_pop: np.ndarray        # log1p of time-decayed interaction count
    mean_rating: np.ndarray    # Bayesian-smoothed mean rating (prior weight 10)
    n_ratings: np.ndarray
    group: np.ndarray          # "head" or "long_tail" (object array)


def compute_item_stats(inter: pd.DataFrame, item_ids: np.ndarray, ref_time: int,
                       half_life_days: float = 365.0, prior_weight: float = 10.0) -> ItemStats:
    before = inter[inter["timestamp"] < ref_time]
    pos = pd.Series(np.arange(len(item_ids)), index=item_ids)
    idx = pos.reindex(before["item_id"]).to_numpy()
    ok = ~np.isnan(idx)
    idx = idx[ok].astype(np.int64)
    age_days = (ref_time - before["timestamp"].to_numpy()[ok]) / SECONDS_PER_DAY
    decay = np.power(0.5, age_days / half_life_days)
    n = len(item_ids)
    pop = np.bincount(idx, weights=decay, minlength=n)
    counts = np.bincount(idx, minlength=n).astype(np.float64)
    sums = np.bincount(idx, weights=before["rating"].to_numpy()[ok], minlength=n)
    global_mean = float(before["rating"].mean()) if len(before) else 3.5
    mean = (sums + prior_weight * global_mean) / (counts + prior_weight)
    # Head = the most-interacted HEAD_SHARE of items that have any interaction.
    interacted = np.flatnonzero(counts > 0)
    group = np.full(n, "long_tail", dtype=object)
    if len(interacted):
        k = max(1, int(round(len(interacted) * HEAD_SHARE)))
        head = interacted[np.argsort(-counts[interacted], kind="stable")[:k]]
        group[head] = "head"
    return ItemStats(ref_time, np.log1p(pop), mean, counts, group)


@dataclass
class Catalog:
    item_ids: np.ndarray          # object array of str
    titles: np.ndarray
    genres: np.ndarray            # '|'-joined
    texts: np.ndarray             # BERT input text
    years: np.ndarray             # float, NaN unknown
    genre_names: list[str]
    genre_matrix: np.ndarray      # (n_items, n_genres) float32 one-hot
    stats: ItemStats
    harm_score: np.ndarray        # harm probability of each item text (filled after training)
    harm_category: np.ndarray
    tags: np.ndarray | None = None   # '|'-joined most frequent user tags before ref_time ('' none)

    def __post_init__(self) -> None:
        self.index = {iid: i for i, iid in enumerate(self.item_ids)}
        if self.tags is None:
            self.tags = np.full(len(self.item_ids), "", dtype=object)
        self._tag_matrix = None

    @property
    def tag_matrix(self):
        """(n_items, n_tags) binary CSR matrix of `tags`, built on first use."""
        if self._tag_matrix is None:
            import scipy.sparse as sp

            vocab: dict[str, int] = {}
            rows, cols = [], []
            for r, ts in enumerate(self.tags):
                for t in ts.split("|"):
                    if t:
                        rows.append(r)
                        cols.append(vocab.setdefault(t, len(vocab)))
            self._tag_matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float64), (rows, cols)),
                                             shape=(len(self.item_ids), max(len(vocab), 1)))
        return self._tag_matrix

    def __len__(self) -> int:
        return len(self.item_ids)

    def lookup(self, item_ids: list[str]) -> np.ndarray:
        """Row of each id, -1 where unknown."""
        return np.fromiter(map(self.index.get, item_ids, repeat(-1)), dtype=np.int64, count=len(item_ids))

    @classmethod
    def build(cls, items: pd.DataFrame, tags: pd.DataFrame, stats_inter: pd.DataFrame,
              ref_time: int, max_tags: int = 5) -> "Catalog":
        """Item texts use only tags given before ref_time (no future information)."""
        items = items.reset_index(drop=True)
        tag_lists: dict[str, list[str]] = {}
        if len(tags):
            t = tags[tags["timestamp"] < ref_time]
            t = t.assign(tag=t["tag"].str.lower())
            counts = t.groupby(["item_id", "tag"]).size().reset_index(name="n")
            counts = counts.sort_values(["item_id", "n", "tag"], ascending=[True, False, True])
            for iid, grp in counts.groupby("item_id", sort=False):
                tag_lists[iid] = list(grp["tag"].head(max_tags))
        texts = np.array([item_text(t, g, tag_lists.get(i, ()))
                          for i, t, g in zip(items["item_id"], items["title"], items["genres"])], dtype=object)
        genre_names = sorted({g for gs in items["genres"] for g in gs.split("|") if g})
        col = {g: j for j, g in enumerate(genre_names)}
        gm = np.zeros((len(items), len(genre_names)), dtype=np.float32)
        for r, gs in enumerate(items["genres"]):
            for g in gs.split("|"):
                if g:
                    gm[r, col[g]] = 1.0
        item_ids = items["item_id"].astype(str).to_numpy(dtype=object)
        stats = compute_item_stats(stats_inter, item_ids, ref_time)
        n = len(items)
        tags_col = np.array(["|".join(t.replace("|", " ") for t in tag_lists.get(i, ())) for i in items["item_id"]],
                            dtype=object)
        return cls(item_ids, items["title"].to_numpy(dtype=object), items["genres"].to_numpy(dtype=object),
                   texts, items["year"].to_numpy(dtype=np.float64), genre_names, gm, stats,
                   np.zeros(n, dtype=np.float64), np.full(n, "", dtype=object), tags_col)

    def save(self, path: Path) -> None:
        table = pa.table({
            "item_id": pa.array(self.item_ids.tolist(), pa.string()),
            "title": pa.array(self.titles.tolist(), pa.string()),
            "genres": pa.array(self.genres.tolist(), pa.string()),
            "text": pa.array(self.texts.tolist(), pa.string()),
            "year": pa.array(self.years, pa.float64()),
            "log_pop": pa.array(self.stats.log_pop, pa.float64()),
            "mean_rating": pa.array(self.stats.mean_rating, pa.float64()),
            "n_ratings": pa.array(self.stats.n_ratings, pa.float64()),
            "group": pa.array(self.stats.group.tolist(), pa.string()),
            "harm_score": pa.array(self.harm_score, pa.float64()),
            "harm_category": pa.array(self.harm_category.tolist(), pa.string()),
            "tags": pa.array(self.tags.tolist(), pa.string()),
        }, metadata={b"genre_names": "|".join(self.genre_names).encode(),
                     b"stats_ref_time": str(self.stats.ref_time).encode()})
        pq.write_table(table, path)

    @classmethod
    def load(cls, path: Path) -> "Catalog":
        table = pq.read_table(path)
        meta = table.schema.metadata or {}
        genre_names = [g for g in meta.get(b"genre_names", b"").decode().split("|") if g]
        cols = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
        col = {g: j for j, g in enumerate(genre_names)}
        gm = np.zeros((table.num_rows, len(genre_names)), dtype=np.float32)
        for r, gs in enumerate(cols["genres"]):
            for g in gs.split("|"):
                if g in col:
                    gm[r, col[g]] = 1.0
        stats = ItemStats(int(meta.get(b"stats_ref_time", b"0")), cols["log_pop"].astype(np.float64),
                          cols["mean_rating"].astype(np.float64), cols["n_ratings"].astype(np.float64),
                          cols["group"].astype(object))
        return cls(cols["item_id"].astype(object), cols["title"].astype(object), cols["genres"].astype(object),
                   cols["text"].astype(object), cols["year"].astype(np.float64), genre_names, gm, stats,
                   cols["harm_score"].astype(np.float64), cols["harm_category"].astype(object),
                   cols["tags"].astype(object) if "tags" in cols else None)
