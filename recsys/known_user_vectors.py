"""Precomputed interest vectors of the artifact's known users (`user_vectors.npy`, `user_vectors.keys.json`).

Why: a user's vector is one BERT forward pass over up to 64 tokens of history titles, tens of ms on one
CPU thread. Without this file every process pays it once per known user: a server on each user's first
request, a batch job (and each of its workers) for every user it meets — in the bench's 1,000-user job
that was most of a cold run. Training encodes them once (on the GPU, where there is one).

Rows are keyed by the sha1 of the user *text* (what `EmbeddingStore` caches by), not the user id: a
request that brings its own history, or a catalog whose item texts changed since (upsert), makes a
different text that simply is not found and is encoded on the fly as before. So a stale row can never
be served for a changed history.

`python -m recsys.user_vectors` (recsys/user_vectors.py) adds them to an artifact trained without them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from recsys.embedding_store import USER_MAX_LENGTH, EmbeddingStore, text_key
from recsys.text import history_user_text

VECTORS = "user_vectors.npy"
KEYS = "user_vectors.keys.json"


def known_user_texts(catalog, users: dict[str, list]) -> list[str]:
    """The text ResolveStage builds for each known user who sends no history of their own, distinct,
    in user order."""
    seen: dict[str, None] = {}
    for uid in users:
        seen.setdefault(history_user_text(catalog.texts, catalog.lookup(list(users[uid])), ()), None)
    return list(seen)


def write_user_vectors(directory: Path, encoder, catalog, users: dict[str, list], *, progress: bool = False) -> dict:
    """Encode every known user's text into `directory`; returns details for the metadata."""
    texts = known_user_texts(catalog, users)
    vectors = encoder.encode(texts, max_length=USER_MAX_LENGTH, progress=progress) if texts else \
        np.zeros((0, encoder.dim), np.float32)
    EmbeddingStore.save_vectors(directory / VECTORS, vectors)
    (directory / KEYS).write_text(json.dumps([text_key(t) for t in texts]))
    return {"user_vectors": len(texts)}


class KnownUserVectors:
    """The precomputed rows, looked up like a cache: `hits`/`misses` feed the same metrics as the LRU caches
    (`ethicrec_cache_hits_total{cache="known_user_vectors"}`). The counters are bumped without a lock: a
    lost increment under concurrent requests only blurs a metric, and a lock per request would cost more."""

    def __init__(self, keys: list[str], vectors: np.ndarray) -> None:
        self.rows = {k: i for i, k in enumerate(keys)}
        self.vectors = np.asarray(vectors)   # a plain view of a memory map (cheaper to index), or the array
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> np.ndarray | None:
        row = self.rows.get(key)
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return self.vectors[row]

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def __len__(self) -> int:
        return len(self.rows)


def load_user_vectors(directory: Path, dim: int, *, in_memory: bool = False) -> KnownUserVectors | None:
    """The artifact's precomputed user vectors (memory-mapped unless `in_memory`), or None for an artifact
    without them."""
    if not (directory / VECTORS).is_file():
        return None
    keys = json.loads((directory / KEYS).read_text())
    vectors = EmbeddingStore.load_vectors(directory / VECTORS, in_memory=in_memory)
    if vectors.ndim != 2 or vectors.shape != (len(keys), dim):
        raise ValueError(f"{VECTORS} has shape {vectors.shape}; expected ({len(keys)}, {dim}) from {KEYS}")
    return KnownUserVectors(keys, vectors)
