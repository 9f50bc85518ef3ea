"""The one in-memory shape every loader produces."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from recsys.digest import update_from_file


@dataclass(frozen=True)
class Dataset:
    """Interactions, item metadata and (optionally) tags and user demographics.

    interactions: user_id (str), item_id (str), rating (float), timestamp (int, seconds)
    items: item_id (str), title (str), genres (str, '|'-joined), year (float, NaN if unknown)
    tags: item_id (str), tag (str), timestamp (int), user_id (str) — may be empty
    users: user_id (str) plus demographic columns — may be empty; audit-only
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    tags: pd.DataFrame
    users: pd.DataFrame
    sha256: str

    def subset_users(self, n_users: int, seed: int = 0) -> "Dataset":
        """A deterministic sample of users (for quick tests); items stay whole."""
        users = pd.Series(sorted(self.interactions["user_id"].unique()))
        keep = set(users.sample(n=min(n_users, len(users)), random_state=seed))
        inter = self.interactions[self.interactions["user_id"].isin(keep)].reset_index(drop=True)
        users_df = self.users[self.users["user_id"].isin(keep)] if len(self.users) else self.users
        return Dataset(self.name, inter, self.items, self.tags, users_df.reset_index(drop=True),
                       f"{self.sha256}:users{n_users}:seed{seed}")


def hash_files(paths: list[Path]) -> str:
    """Content hash of the source files, recorded in artifact metadata."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        update_from_file(h, p)
    return h.hexdigest()
