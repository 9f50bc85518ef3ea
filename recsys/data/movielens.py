"""MovieLens loaders: latest-small (vendored under data/) and 100K (read from a
path only — its licence forbids redistribution, so it is never committed)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.dataset import Dataset, hash_files
from recsys.errors import EthicrecError

_YEAR = re.compile(r"\((\d{4})\)\s*$")


class DatasetError(EthicrecError):
    """A dataset directory is missing or not in the expected format."""


def _year_from_title(title: str) -> float:
    m = _YEAR.search(title.strip())
    return float(m.group(1)) if m else np.nan


def _require(root: Path, names: list[str], kind: str) -> None:
    if not root.is_dir():
        raise DatasetError(f"dataset directory not found: {root}")
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise DatasetError(f"{root} is not a {kind} directory: missing {', '.join(missing)}")


def load_ml_latest_small(root: str | Path) -> Dataset:
    root = Path(root)
    _require(root, ["ratings.csv", "movies.csv"], "MovieLens latest-small")
    ratings = pd.read_csv(root / "ratings.csv", dtype={"userId": str, "movieId": str})
    movies = pd.read_csv(root / "movies.csv", dtype={"movieId": str})
    inter = pd.DataFrame({
        "user_id": ratings["userId"], "item_id": ratings["movieId"],
        "rating": ratings["rating"].astype(float), "timestamp": ratings["timestamp"].astype(np.int64),
    })
    genres = movies["genres"].fillna("").replace("(no genres listed)", "")
    items = pd.DataFrame({
        "item_id": movies["movieId"], "title": movies["title"].fillna("").str.strip(),
        "genres": genres, "year": movies["title"].fillna("").map(_year_from_title),
    })
    files = [root / "ratings.csv", root / "movies.csv"]
    if (root / "tags.csv").is_file():
        t = pd.read_csv(root / "tags.csv", dtype={"userId": str, "movieId": str, "tag": str})
        tags = pd.DataFrame({"item_id": t["movieId"], "tag": t["tag"].fillna("").str.strip(),
                             "timestamp": t["timestamp"].astype(np.int64), "user_id": t["userId"]})
        tags = tags[tags["tag"] != ""].reset_index(drop=True)
        files.append(root / "tags.csv")
    else:
        tags = pd.DataFrame({"item_id": [], "tag": [], "timestamp": [], "user_id": []})
    return Dataset("ml-latest-small", inter, items, tags, pd.DataFrame({"user_id": []}), hash_files(files))


_ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime",
                  "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                  "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def _age_band(age: int) -> str:
    for upper, label in ((18, "under_18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (56, "45-55")):
        if age < upper:
            return label
    return "56+"


def load_ml_100k(root: str | Path) -> Dataset:
    root = Path(root)
    _require(root, ["u.data", "u.item", "u.user"], "MovieLens 100K")
    data = pd.read_csv(root / "u.data", sep="\t", header=None,
                       names=["user_id", "item_id", "rating", "timestamp"], dtype={0: str, 1: str})
    data["rating"] = data["rating"].astype(float)
    data["timestamp"] = data["timestamp"].astype(np.int64)
    cols = ["item_id", "title", "release_date", "video_release_date", "url", *_ML100K_GENRES]
    raw = pd.read_csv(root / "u.item", sep="|", header=None, names=cols, encoding="latin-1",
                      dtype={"item_id": str})
    flags = raw[_ML100K_GENRES].to_numpy(dtype=bool)
    genres = ["|".join(g for g, f in zip(_ML100K_GENRES, row) if f and g != "unknown") for row in flags]
    title = raw["title"].fillna("").str.strip()
    year = title.map(_year_from_title)
    rel = pd.to_datetime(raw["release_date"], format="%d-%b-%Y", errors="coerce").dt.year
    items = pd.DataFrame({"item_id": raw["item_id"], "title": title, "genres": genres,
                          "year": year.fillna(rel).astype(float)})
    u = pd.read_csv(root / "u.user", sep="|", header=None,
                    names=["user_id", "age", "gender", "occupation", "zip"], dtype={"user_id": str})
    users = pd.DataFrame({"user_id": u["user_id"], "gender": u["gender"], "age_band": u["age"].map(_age_band),
                          "occupation": u["occupation"]})
    tags = pd.DataFrame({"item_id": pd.Series([], dtype=str), "tag": pd.Series([], dtype=str),
                         "timestamp": pd.Series([], dtype=np.int64), "user_id": pd.Series([], dtype=str)})
    return Dataset("ml-100k", data, items, tags, users,
                   hash_files([root / "u.data", root / "u.item", root / "u.user"]))


def load_dataset(root: str | Path) -> Dataset:
    """Pick the loader from the directory's contents."""
    root = Path(root)
    if (root / "u.data").is_file():
        return load_ml_100k(root)
    if (root / "ratings.csv").is_file():
        return load_ml_latest_small(root)
    if not root.is_dir():
        raise DatasetError(f"dataset directory not found: {root}")
    raise DatasetError(f"{root} holds neither MovieLens latest-small (ratings.csv) nor 100K (u.data)")
