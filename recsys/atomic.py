"""Atomic, durable publishing of files and directories: the one place that does temp-file + fsync + rename.

A reader sees either the old file or the whole new one, never a half-written one, and once a call returns the
new content survives a power loss: the data is fsynced before the rename and the directory after it (a rename
is only durable once its directory entry is). Temporary files are named `.<name>.<pid>.<random>.tmp` in the
target's directory (same file system, so the rename is atomic; unique, so concurrent writers do not clobber
each other's temp file; a leading dot and a `.tmp` suffix, which the batch job's cleanup recognises).
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

__all__ = ["fsync_dir", "fsync_file", "fsync_tree", "publish_dir", "publish_file", "rename_into_place",
           "temp_path", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]


def fsync_dir(path: Path) -> None:
    """fsync a directory so renames and creations in it are durable. Best effort: some file systems (and
    platforms) refuse to open or fsync a directory, and there is nothing more to do then."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """fsync a file already written and closed by someone else (e.g. pyarrow's Parquet writer)."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def temp_path(path: Path) -> Path:
    """A fresh temporary name next to `path` (see the module docstring)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def rename_into_place(tmp: Path, path: Path) -> None:
    """Rename an already fsynced `tmp` over `path`, then fsync the directory so the rename is durable."""
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


def publish_file(tmp: Path, path: Path) -> None:
    """fsync a finished temporary file, then rename it over `path` durably."""
    fsync_file(tmp)
    rename_into_place(tmp, path)


def write_bytes_atomic(path: Path, data: bytes, *, mode: int = 0o666, overwrite: bool = True) -> bool:
    """Write `data` to `path` atomically and durably. `mode` is the new file's permission bits (before the
    umask). With `overwrite=False` an existing `path` is left alone (the temp file is linked into place, which
    fails if the name exists, so of several concurrent creators exactly one wins); returns whether this call's
    data was published."""
    path = Path(path)
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            rename_into_place(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        fsync_dir(path.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)   # after a rename: already gone; after a link or a failure: the spare name


def write_text_atomic(path: Path, text: str, *, encoding: str = "utf-8", mode: int = 0o666,
                      overwrite: bool = True) -> bool:
    """`write_bytes_atomic` for text."""
    return write_bytes_atomic(path, text.encode(encoding), mode=mode, overwrite=overwrite)


def write_json_atomic(path: Path, data: Any, **dumps: Any) -> None:
    """`json.dumps(data, **dumps)` written atomically and durably (no trailing newline added)."""
    write_text_atomic(path, json.dumps(data, **dumps))


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under `root` (and `root` itself), deepest first."""
    root = Path(root)
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            p = Path(dirpath) / name
            if not p.is_symlink():
                fsync_file(p)
        fsync_dir(Path(dirpath))


def publish_dir(staging: Path, final: Path) -> None:
    """Make a finished staging directory durable, then rename it to `final` (which must not exist as a
    non-empty directory) and fsync the parent, so the published directory is complete after a power loss."""
    fsync_tree(staging)
    os.replace(staging, final)
    fsync_dir(Path(final).parent)
