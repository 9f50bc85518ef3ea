"""One versioned artifact directory per training run, and its loading.

    <root>/LATEST                  name of the newest version (written last, atomically)
    <root>/<version>/metadata.json dataset hash, parameters, metrics, versions, sha256 of every file
    <root>/<version>/interest/     fine-tuned bi-encoder (save_pretrained, safetensors)
    <root>/<version>/item_vectors.npy   catalog vectors, row order = catalog.parquet
    <root>/<version>/catalog.parquet    items, texts, statistics, groups, harm scores
    <root>/<version>/users.json         known users' recent history (item ids, most recent first)
    <root>/<version>/cooccurrence.npz   item->users incidence for the co-occurrence feature (int arrays)
    <root>/<version>/als.npz            ALS item factors and parameters (recsys/als.py), for the ALS features
    <root>/<version>/ranker.txt         LightGBM text model
    <root>/<version>/harm/              harm classifier: audit/harm_model.py (harm_model.json + safetensors/.npy;
                                        older artifacts: the char-n-gram params.json + .npy)
    <root>/<version>/cross_encoder/     optional: BERT cross-encoder for top-N re-scoring
                                        (python -m recsys.train_cross_encoder; safetensors)
    <root>/<version>/harm_bert/         optional: fine-tuned BERT harm classifier, preferred over harm/
                                        (python -m audit.train_harm; safetensors + harm_bert.json)
    <root>/<version>/user_vectors.npy   known users' vectors, keyed by user_vectors.keys.json (written
                                        by training; python -m recsys.user_vectors adds them to older ones)

The harm classifier is the audit package's (audit/harm.py, audit/harm_bert.py). This module is recsys
core and does not import audit: `load_version` takes the harm loader as a parameter and `Artifacts.harm`
is typed by the `HarmScoringModel` protocol below. The composition root (recsys/compose.py) supplies audit's
loader: `recsys.compose.load_artifacts` is what applications call.

Every file's sha256 is in metadata.json and checked at load; a file inside an optional
part (cross_encoder/) that metadata.json does not list is rejected too, so an optional
model (or user vectors) cannot be dropped into a published version unverified.

Nothing is unpickled: numpy loads with allow_pickle=False, models from
safetensors, LightGBM's text format and JSON.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from recsys.als import ImplicitALS
from recsys.atomic import publish_dir, write_text_atomic
from recsys.catalog import Catalog
from recsys.cooccurrence import CoOccurrence
from recsys.digest import sha256_file
from recsys.embedding_store import EmbeddingStore
from recsys.encoder import TextEncoder
from recsys.errors import ArtifactError
from recsys.interest import CrossEncoder
from recsys.ranker import LambdaRanker
from recsys.known_user_vectors import load_user_vectors

REQUIRED = ("metadata.json", "interest", "item_vectors.npy", "catalog.parquet", "users.json", "cooccurrence.npz",
            "als.npz", "ranker.txt", "harm")
OPTIONAL = ("cross_encoder", "harm_bert", "user_vectors.npy", "user_vectors.keys.json")


def file_hashes(version_dir: Path) -> dict[str, str]:
    return {p.relative_to(version_dir).as_posix(): sha256_file(p)
            for p in sorted(version_dir.rglob("*")) if p.is_file() and p.name != "metadata.json"}


def resolve_version_dir(path: str | Path) -> Path:
    """Accept either a root with LATEST or one version directory."""
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"artifact directory not found: {p} (run `make train` or `python -m recsys.train`)")
    if (p / "metadata.json").is_file():
        return p
    latest = p / "LATEST"
    if latest.is_file():
        name = latest.read_text().strip()
        if not name or "/" in name or not (p / name).is_dir():
            raise ArtifactError(f"{latest} names {name!r}, which is not a version directory under {p}")
        return p / name
    raise ArtifactError(f"{p} holds neither metadata.json nor LATEST: not an ethicrec artifact directory")


def publish(root: Path, staging: Path, version: str) -> Path:
    """Move a finished staging dir into place, then point LATEST at it (both durable atomic renames)."""
    final = root / version
    publish_dir(staging, final)
    write_text_atomic(root / "LATEST", version + "\n")
    return final


class HarmScoringModel(Protocol):
    """What recsys and the audit stage call on the artifact's harm classifier (audit.harm.HarmClassifier,
    audit.harm_bert.BertHarmClassifier): P(harmful) and a category per text, and the calibrated threshold."""

    threshold: float

    def score(self, texts: list[str]) -> tuple[np.ndarray, list[str]]: ...


HarmLoader = Callable[[Path, str], HarmScoringModel]
"""(version directory, device) -> the version's harm classifier; raises on a missing or corrupt model."""


@dataclass
class Artifacts:
    version: str
    path: Path
    metadata: dict[str, Any]
    catalog: Catalog
    store: EmbeddingStore
    ranker: LambdaRanker
    harm: HarmScoringModel   # the loader's choice: recsys.compose uses audit.harm_model.load_harm
    users: dict[str, list[str]]
    cooccurrence: CoOccurrence
    als: ImplicitALS
    cross_encoder: CrossEncoder | None = None

    @property
    def feature_names(self) -> list[str]:
        return list(self.metadata["features"]["names"])

    @property
    def extra_features(self) -> tuple[str, ...]:
        return tuple(self.metadata["features"].get("extra", []))


def load_version(path: str | Path, *, load_harm: HarmLoader, device: str = "auto", verify: bool = True,
                 vectors_in_memory: bool = False, encode_precision: str = "auto") -> Artifacts:
    """One version (or the root's LATEST), checked against its sha256 list unless `verify` is off, with the
    harm classifier `load_harm(version_dir, device)` returns (applications call `recsys.compose.load_artifacts`,
    which passes audit's). Item and user vectors are memory-mapped (tools and batch workers share the page
    cache) unless `vectors_in_memory` (the server: rows gathered per request from memory with huge pages,
    fewer TLB misses).
    `encode_precision` is the text encoder's (recsys.device.inference_precision) for texts encoded after
    loading: cold item texts, unknown users, upserts."""
    from recsys.device import PRECISIONS

    if encode_precision not in PRECISIONS:   # a caller's mistake, not a corrupt artifact
        raise ValueError(f"encode_precision must be one of {', '.join(map(repr, PRECISIONS))}; "
                         f"got {encode_precision!r}")
    vdir = resolve_version_dir(path)
    missing = [name for name in REQUIRED if not (vdir / name).exists()]
    if missing:
        raise ArtifactError(f"artifact {vdir} is incomplete: missing {', '.join(missing)}")
    try:
        meta = json.loads((vdir / "metadata.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{vdir / 'metadata.json'} is unreadable: {exc}") from None
    if verify:
        expected = meta.get("files", {})
        actual = file_hashes(vdir)
        for name, digest in expected.items():
            if actual.get(name) != digest:
                raise ArtifactError(f"artifact file {vdir / name} does not match the sha256 in metadata.json "
                                    "(corrupt or modified)")
        for name in actual:
            if name.split("/", 1)[0] in OPTIONAL and name not in expected:
                raise ArtifactError(f"artifact file {vdir / name} is not covered by the sha256 list in "
                                    "metadata.json (added after publishing?)")
    try:
        catalog = Catalog.load(vdir / "catalog.parquet")
        vectors = EmbeddingStore.load_vectors(vdir / "item_vectors.npy", in_memory=vectors_in_memory)
        if vectors.shape[0] != len(catalog):
            raise ArtifactError(f"item_vectors.npy has {vectors.shape[0]} rows; catalog has {len(catalog)}")
        encoder = TextEncoder.load(vdir / "interest", device=device, precision=encode_precision)
        ranker = LambdaRanker.load(vdir / "ranker.txt")
        harm = load_harm(vdir, device)
        users = json.loads((vdir / "users.json").read_text())
        cooc = CoOccurrence.load(vdir / "cooccurrence.npz")
        als = ImplicitALS.load(vdir / "als.npz")
        if als.n_items != len(catalog):
            raise ArtifactError(f"als.npz has {als.n_items} item rows; catalog has {len(catalog)}")
        cross = CrossEncoder.load(vdir / "cross_encoder", device=device) if (vdir / "cross_encoder").is_dir() else None
    except ArtifactError:
        raise
    except Exception as exc:  # any loader failure is a corrupt artifact, reported in one line
        raise ArtifactError(f"artifact {vdir} could not be loaded: {type(exc).__name__}: {exc}") from None
    if ranker.feature_names_ != list(meta["features"]["names"]):
        raise ArtifactError(f"ranker features {ranker.feature_names_} differ from metadata {meta['features']['names']}")
    from recsys.features import BASE_FEATURES

    built = list(BASE_FEATURES) + list(meta["features"].get("extra", []))
    if ranker.feature_names_ != built:
        raise ArtifactError(f"artifact {meta['version']} was trained on features {ranker.feature_names_}; this version "
                            f"of ethicrec builds {built}: retrain it (python -m recsys.train)")
    try:
        known_users = load_user_vectors(vdir, encoder.dim, in_memory=vectors_in_memory)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"artifact {vdir} has unreadable user vectors: {type(exc).__name__}: {exc}") from None
    return Artifacts(meta["version"], vdir, meta, catalog, EmbeddingStore(encoder, vectors, known_users=known_users),
                     ranker, harm, users, cooc, als, cross)
