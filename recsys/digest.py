"""The one way a file's sha256 is computed (artifact file hashes, dataset and batch-input fingerprints,
provenance of training and upsert inputs): streamed in blocks, so a large file is never read into memory."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

__all__ = ["BLOCK", "sha256_file", "update_from_file"]

BLOCK = 1 << 20


def update_from_file(h: Any, path: str | Path) -> Any:
    """Feed the bytes of `path` to the hash object `h` (anything with `update(bytes)`); returns `h`."""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            h.update(block)
    return h


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of the file's bytes (what `sha256sum` prints)."""
    return update_from_file(hashlib.sha256(), path).hexdigest()
