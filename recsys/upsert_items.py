"""`python -m recsys.upsert_items --artifacts DIR --input items.csv|items.parquet`: add or update catalog
items without retraining, as a new artifact version.

Input columns: `item_id` and `title` (required), `genres` ('|'-joined), `text`, `year` (optional; no
other columns). Each row's BERT text is `text` when given, else built from title, genres and — for
an existing item — its stored user tags, exactly like training builds it (`recsys.text.item_text`).

New ids are appended to catalog.parquet with no interaction history: popularity 0, 0 ratings, the
prior mean rating (what an item without ratings gets at training), group `long_tail`, no tags. Ids
already in the catalog keep their statistics and tags; their title/genres/year/text are replaced
(an empty optional cell keeps the stored value). For every changed row the text is encoded with
the artifact's own bi-encoder (item_vectors.npy: appended or replaced rows) and scored by the
artifact's harm classifier; cooccurrence.npz gets empty columns and als.npz zero factors for new items. The ranker and the
encoders are unchanged, so scores of untouched items do not move.

Written as a new version derived from LATEST (`recsys.artifact_update`: copy, change, re-hash,
load-check, publish atomically); the previous version stays as it was. Running servers switch on
reload (SIGHUP / `App.reload()`). Bad input: one line naming the row, exit 2, nothing written.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.cli import cli_main
from recsys.digest import sha256_file

COLUMNS = ("item_id", "title", "genres", "text", "year")
MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 10_000


class InputError(ValueError):
    """Bad upsert input (reported in one line, exit 2)."""


@dataclass(frozen=True)
class ItemRow:
    item_id: str
    title: str
    genres: str | None
    text: str | None
    year: float | None


def _cell(v) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    s = str(v).strip()
    return s or None


def read_items(path: Path) -> list[ItemRow]:
    import pandas as pd

    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            raise InputError(f"{path}: expected a .csv or .parquet file")
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: unreadable: {type(exc).__name__}: {exc}") from None
    unknown = [c for c in df.columns if c not in COLUMNS]
    if unknown:
        raise InputError(f"{path}: unknown column {unknown[0]!r}; accepted: {', '.join(COLUMNS)}")
    for c in ("item_id", "title"):
        if c not in df.columns:
            raise InputError(f"{path}: missing column {c!r}")
    if len(df) == 0:
        raise InputError(f"{path}: no rows")
    rows: list[ItemRow] = []
    seen: dict[str, int] = {}
    for n, rec in enumerate(df.to_dict("records"), start=1):
        where = f"{path.name} row {n}"
        iid = _cell(rec.get("item_id"))
        if iid is None:
            raise InputError(f"{where}: item_id is empty")
        if len(iid) > MAX_ID_CHARS:
            raise InputError(f"{where}: item_id is longer than {MAX_ID_CHARS} characters")
        if iid in seen:
            raise InputError(f"{where}: item_id {iid!r} repeats row {seen[iid]}")
        seen[iid] = n
        title = _cell(rec.get("title"))
        if title is None:
            raise InputError(f"{where}: title is empty (item_id {iid!r})")
        text = _cell(rec.get("text"))
        if text is not None and len(text) > MAX_TEXT_CHARS:
            raise InputError(f"{where}: text is longer than {MAX_TEXT_CHARS} characters")
        year_s = _cell(rec.get("year"))
        year = None
        if year_s is not None:
            try:
                year = float(year_s)
            except ValueError:
                raise InputError(f"{where}: year {year_s!r} is not a number") from None
            if not math.isfinite(year) or not 1800 <= year <= 2200:
                raise InputError(f"{where}: year {year_s!r} is out of range")
        genres = _cell(rec.get("genres"))
        rows.append(ItemRow(iid, title, genres, text, year))
    return rows


def _prior_mean_rating(catalog) -> float:
    """The mean rating an item without ratings gets: the smoothed mean of an unrated item is
    exactly the global mean; without one, the rating-count-weighted mean of the items' means."""
    s = catalog.stats
    unrated = np.flatnonzero(s.n_ratings == 0)
    if len(unrated):
        return float(s.mean_rating[unrated[0]])
    w = s.n_ratings
    return float((s.mean_rating * w).sum() / w.sum()) if w.sum() > 0 else 3.5


def apply_upsert(staging: Path, artifacts, rows: list[ItemRow]) -> dict:
    """Rewrite catalog.parquet, item_vectors.npy and cooccurrence.npz in `staging`."""
    import scipy.sparse as sp

    from recsys.als import ImplicitALS
    from recsys.catalog import Catalog, ItemStats
    from recsys.cooccurrence import CoOccurrence
    from recsys.data.movielens import _year_from_title
    from recsys.embedding_store import ITEM_MAX_LENGTH, EmbeddingStore
    from recsys.text import item_text

    cat = artifacts.catalog
    n_old = len(cat)
    new_rows = [r for r in rows if r.item_id not in cat.index]
    upd_rows = [r for r in rows if r.item_id in cat.index]
    n = n_old + len(new_rows)

    def grow(a: np.ndarray, fill, dtype) -> np.ndarray:
        out = np.empty(n, dtype=dtype)
        out[:n_old] = a
        out[n_old:] = fill
        return out

    item_ids = grow(cat.item_ids, None, object)
    titles, genres, texts = grow(cat.titles, "", object), grow(cat.genres, "", object), grow(cat.texts, "", object)
    years, tags = grow(cat.years, np.nan, np.float64), grow(cat.tags, "", object)
    stats = ItemStats(cat.stats.ref_time, grow(cat.stats.log_pop, 0.0, np.float64),
                      grow(cat.stats.mean_rating, _prior_mean_rating(cat), np.float64),
                      grow(cat.stats.n_ratings, 0.0, np.float64), grow(cat.stats.group, "long_tail", object))
    harm_score, harm_category = grow(cat.harm_score, 0.0, np.float64), grow(cat.harm_category, "", object)
    row_of = {r.item_id: n_old + k for k, r in enumerate(new_rows)}
    for iid, i in row_of.items():
        item_ids[i] = iid
    changed: list[int] = []
    for r in new_rows + upd_rows:
        is_new = r.item_id in row_of
        i = row_of[r.item_id] if is_new else cat.index[r.item_id]
        titles[i] = r.title
        if r.genres is not None:
            genres[i] = r.genres
        if r.year is not None:
            years[i] = r.year
        elif is_new:
            years[i] = _year_from_title(r.title)
        item_tags = [t for t in str(tags[i]).split("|") if t]
        texts[i] = r.text if r.text is not None else item_text(r.title, genres[i], item_tags)
        changed.append(i)
    changed_arr = np.asarray(changed, dtype=np.int64)
    changed_texts = [str(texts[i]) for i in changed]
    p, c = artifacts.harm.score(changed_texts)
    harm_score[changed_arr] = p
    harm_category[changed_arr] = np.asarray(c, dtype=object)
    genre_names = list(cat.genre_names)
    extra = sorted({g for gs in genres[changed_arr] for g in str(gs).split("|") if g} - set(genre_names))
    genre_names += extra   # appended: existing genre columns keep their meaning
    catalog = Catalog(item_ids, titles, genres, texts, years, genre_names,
                      np.zeros((n, len(genre_names)), dtype=np.float32), stats, harm_score, harm_category, tags)
    catalog.save(staging / "catalog.parquet")

    vecs = np.empty((n, artifacts.store.encoder.dim), dtype=np.float32)
    vecs[:n_old] = artifacts.store.item_vectors
    vecs[changed_arr] = artifacts.store.encoder.encode(changed_texts, max_length=ITEM_MAX_LENGTH)
    (staging / "item_vectors.npy").unlink()
    EmbeddingStore.save_vectors(staging / "item_vectors.npy", vecs)

    if new_rows:
        X = artifacts.cooccurrence.X
        indptr = np.r_[X.indptr, np.full(len(new_rows), X.indptr[-1], dtype=X.indptr.dtype)]
        wide = sp.csc_matrix((X.data, X.indices, indptr), shape=(X.shape[0], n))
        (staging / "cooccurrence.npz").unlink()
        CoOccurrence(wide).save(staging / "cooccurrence.npz")
        # New items have no interaction, so no ALS factors: zero rows (their ALS features read 0, as a
        # cold item's do after training).
        als = artifacts.als
        grown = ImplicitALS(factors=als.factors, regularization=als.regularization, alpha=als.alpha,
                            iterations=als.iterations)
        grown.item_factors_ = np.vstack([als.item_factors_, np.zeros((len(new_rows), als.factors), np.float32)])
        (staging / "als.npz").unlink()
        grown.save(staging / "als.npz")
    return {"added": len(new_rows), "updated": len(upd_rows), "new_genres": extra}


def upsert_items(artifacts_dir: Path, input_path: Path, *, device: str = "auto",
                 encode_precision: str = "auto") -> Path:
    from recsys.artifact_update import base_version_dir, derive_version
    from recsys.compose import check_servable, load_artifacts

    rows = read_items(input_path)             # every input problem before anything is loaded or written
    vdir = base_version_dir(artifacts_dir)
    art = load_artifacts(vdir, device=device, encode_precision=encode_precision)
    digest = sha256_file(input_path)

    def change(staging: Path, meta: dict) -> dict:
        details = apply_upsert(staging, art, rows)
        meta.setdefault("dataset", {})["n_catalog_items"] = len(art.catalog) + details["added"]
        return {**details, "input": str(input_path), "input_sha256": digest,
                "encode_precision": art.store.encoder.precision}

    return derive_version(vdir, "upsert_items", change, check=check_servable)


def _known_errors() -> tuple[type[BaseException], ...]:
    from recsys.errors import ArtifactError

    return (InputError, ArtifactError)


@cli_main(errors=_known_errors)
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m recsys.upsert_items", description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, required=True, help="artifact root (LATEST) or the latest version dir")
    ap.add_argument("--input", type=Path, required=True, help="items.csv or items.parquet")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--encode-precision", dest="encode_precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="text encoding precision (auto: bf16 on CUDA and on CPUs with native bf16)")
    args = ap.parse_args(argv)
    final = upsert_items(args.artifacts, args.input, device=args.device, encode_precision=args.encode_precision)
    print(f"published {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
