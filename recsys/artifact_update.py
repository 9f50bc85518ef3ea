"""Deriving a new artifact version from the latest one (add a cross-encoder, upsert items).

Published versions are immutable (running servers and `service.reload` rely on it),
so a change is never made in place:

1. take an exclusive lock on `<root>/.update.lock` (one updater at a time);
2. check the base version's sha256 list, copy it to `<root>/.staging-<kind>-<random>`;
3. let the caller change files there and record what it did in the metadata;
4. rewrite `files` (sha256 of every file) and `version`, add a `derived` entry
   (kind, base version, time, details), run the caller's `check` on the staging dir
   (applications pass `recsys.compose.check_servable`: a full, verified load, so a
   version that cannot be served is never published);
5. publish: rename the staging dir to `<root>/<version>` and point LATEST at it
   (`recsys.artifacts.publish`, both atomic renames) — only if LATEST still names the
   base version (a `recsys.train` that finished meanwhile is never overwritten).

Any failure before step 5 removes the staging dir: nothing half-written is ever visible.
Servers pick the new version up on reload (SIGHUP, `App.reload()`).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import secrets
import shutil
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from recsys.artifacts import file_hashes, publish, resolve_version_dir
from recsys.errors import ArtifactError


@contextlib.contextmanager
def _root_lock(root: Path) -> Iterator[None]:
    with open(root / ".update.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _latest(root: Path) -> str | None:
    latest = root / "LATEST"
    return latest.read_text().strip() if latest.is_file() else None


def base_version_dir(path: str | Path) -> Path:
    """The version an update starts from: LATEST under a root, or a version directory that is LATEST."""
    vdir = resolve_version_dir(path)
    latest = _latest(vdir.parent)
    if latest is not None and latest != vdir.name:
        raise ArtifactError(f"{vdir} is not the latest version (LATEST names {latest}); updates are made on top "
                            "of LATEST")
    return vdir


def _new_version_name(root: Path, meta: dict) -> str:
    stem = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{str(meta.get('dataset', {}).get('sha256', ''))[:8]}"
    name, n = stem, 1
    while (root / name).exists():
        n += 1
        name = f"{stem}-{n}"
    return name


def derive_version(path: str | Path, kind: str, change: Callable[[Path, dict], dict[str, Any]], *,
                   check: Callable[[Path], object]) -> Path:
    """Run `change(staging_dir, metadata)` on a copy of the latest version and publish the result.

    `change` edits files in the staging dir and may edit `metadata` in place; it returns a dict
    of details recorded in metadata["derived"]. `check(staging_dir)` raises when the result cannot be
    served (it is injected, not imported: loading the whole bundle needs the audit package's harm model,
    which recsys core does not import). Returns the published version directory.
    """
    vdir = base_version_dir(path)
    root = vdir.parent
    with _root_lock(root):
        if _latest(root) not in (None, vdir.name):
            raise ArtifactError(f"LATEST moved away from {vdir.name} before the update started; rerun")
        meta = json.loads((vdir / "metadata.json").read_text())
        actual = file_hashes(vdir)
        for name, digest in meta.get("files", {}).items():
            if actual.get(name) != digest:
                raise ArtifactError(f"artifact file {vdir / name} does not match the sha256 in metadata.json "
                                    "(corrupt or modified)")
        staging = root / f".staging-{kind}-{secrets.token_hex(4)}"
        try:
            shutil.copytree(vdir, staging)
            details = change(staging, meta) or {}
            version = _new_version_name(root, meta)
            meta["derived"] = [*meta.get("derived", []), {
                "kind": kind, "from_version": meta.get("version", vdir.name),
                "at": datetime.now(timezone.utc).isoformat(), **details}]
            meta["version"] = version
            meta["files"] = file_hashes(staging)
            (staging / "metadata.json").write_text(json.dumps(meta, indent=2))
            check(staging)   # servable, or not published
            if _latest(root) not in (None, vdir.name):
                raise ArtifactError(f"LATEST moved away from {vdir.name} during the update; nothing published")
            return publish(root, staging, version)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
