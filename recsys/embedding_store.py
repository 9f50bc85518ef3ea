"""Item vectors (precomputed, memory-mapped), the known users' vectors where the artifact has them
(recsys/known_user_vectors.py), plus cached on-the-fly encoding of texts the catalog does not hold and of
other user histories."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from recsys.encoder import TextEncoder
from recsys.lru import LRUCache
from recsys.microbatch import MicroBatcher

USER_MAX_LENGTH = 64
ITEM_MAX_LENGTH = 64


def text_key(text: str) -> str:
    """What texts are cached and precomputed user vectors are found by."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class EmbeddingStore:
    def __init__(self, encoder: TextEncoder, item_vectors: np.ndarray, *, text_cache_size: int = 50_000,
                 user_cache_size: int = 50_000, known_users=None) -> None:
        self.encoder = encoder
        # A plain ndarray view of the (memory-mapped) file: indexing a np.memmap builds memmap objects, a
        # few us each, twice per request.
        self.item_vectors = np.asarray(item_vectors)
        # recsys.known_user_vectors.KnownUserVectors (the artifact's precomputed users), or None
        self.known_users = known_users
        self.text_cache: LRUCache[str, np.ndarray] = LRUCache(text_cache_size)
        self.user_cache: LRUCache[str, np.ndarray] = LRUCache(user_cache_size)
        # max_length -> MicroBatcher once enable_batching() is called (the server); None: encode in the
        # caller's thread (training, batch jobs: they already encode in bulk).
        self.batchers: dict[str, MicroBatcher] | None = None   # by name: item and user max lengths may be equal

    def enable_batching(self, *, max_batch: int, max_wait_s: float, instances: int = 1) -> None:
        """Encode cache misses of concurrent requests together (recsys/microbatch.py): one batcher for
        item texts and one for user histories, which have different max lengths."""
        old, self.batchers = self.batchers, {
            name: MicroBatcher(lambda texts, length=length: self.encoder.encode(texts, max_length=length),
                                 max_batch=max_batch, max_wait_s=max_wait_s, name=name, instances=instances)
            for name, length in (("item_texts", ITEM_MAX_LENGTH), ("user_texts", USER_MAX_LENGTH))}
        for batcher in (old or {}).values():
            batcher.close()

    def _encode(self, texts: list[str], max_length: int, kind: str) -> np.ndarray:
        batcher = None if self.batchers is None else self.batchers.get(kind)
        if batcher is None:
            return self.encoder.encode(texts, max_length=max_length)
        return np.stack(batcher.run(texts))

    @staticmethod
    def save_vectors(path: Path, vectors: np.ndarray) -> None:
        np.save(path, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)

    @staticmethod
    def load_vectors(path: Path, *, in_memory: bool = False) -> np.ndarray:
        """Memory-mapped (shared between processes, nothing read up front), or read into the process's memory
        (`in_memory`: numpy backs large arrays with transparent huge pages, so the scattered rows a request
        gathers cost far fewer TLB misses than 4 KiB file pages: see `recsys.artifacts.load_version`)."""
        if in_memory:
            return np.load(path, allow_pickle=False)
        return np.load(path, mmap_mode="r", allow_pickle=False)

    def _cached_encode(self, texts: list[str], cache: LRUCache[str, np.ndarray], max_length: int,
                       kind: str = "item_texts") -> np.ndarray:
        out = np.empty((len(texts), self.encoder.dim), dtype=np.float32)
        keys = [text_key(t) for t in texts]
        missing: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            v = cache.get(k)
            if v is None:
                missing.setdefault(k, []).append(i)
            else:
                out[i] = v
        if missing:
            first = [rows[0] for rows in missing.values()]
            vecs = self._encode([texts[i] for i in first], max_length, kind)
            for (k, rows), v in zip(missing.items(), vecs):
                cache.put(k, v)
                out[rows] = v
        return out

    def user_vector(self, text: str) -> np.ndarray:
        """Precomputed for the artifact's known users, else encoded and cached; both found by a hash of
        the history text it came from."""
        if self.known_users is not None:
            vector = self.known_users.get(text_key(text))
            if vector is not None:
                return vector
        return self._cached_encode([text], self.user_cache, USER_MAX_LENGTH, "user_texts")[0]

    def item_vectors_for(self, cand_idx: np.ndarray, texts: list[str | None]) -> np.ndarray:
        """Catalog rows for known items without a text override; encode the rest."""
        if texts.count(None) == len(texts) and (not len(cand_idx) or int(cand_idx.min()) >= 0) \
                and self.item_vectors.dtype == np.float32:
            # The usual request (catalog items, no text overrides): one gather, 6 us for 100 rows against
            # 34 us for the masks below.
            return self.item_vectors[cand_idx]
        out = np.empty((len(cand_idx), self.encoder.dim), dtype=np.float32)
        use_text = np.array([t is not None for t in texts], dtype=bool)
        from_catalog = (cand_idx >= 0) & ~use_text
        if from_catalog.any():
            out[from_catalog] = self.item_vectors[cand_idx[from_catalog]]
        rows = np.flatnonzero(~from_catalog)
        if len(rows):
            out[rows] = self._cached_encode([texts[i] for i in rows], self.text_cache, ITEM_MAX_LENGTH)
        return out
