"""recsys/atomic.py: the one temp-file + fsync + rename helper. Every publish fsyncs the data before the
rename and the directory after it, leaves no temp file behind, and a failed write leaves the old file whole."""
import json
import os
import stat
import threading

import pytest

from recsys import atomic


@pytest.fixture
def fsyncs(monkeypatch):
    """Record every fsync as ('file'|'dir', path), in order, while still doing it."""
    seen = []
    real = os.fsync

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        seen.append(("dir" if os.path.isdir(path) else "file", os.path.basename(path)))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def test_write_text_fsyncs_file_then_renames_then_fsyncs_dir(tmp_path, fsyncs, monkeypatch):
    order = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (order.append(("replace", len(fsyncs))), real_replace(a, b)))
    (tmp_path / "out.json").write_text("old")
    atomic.write_text_atomic(tmp_path / "out.json", "new")
    assert (tmp_path / "out.json").read_text() == "new"
    assert [k for k, _ in fsyncs] == ["file", "dir"]
    assert fsyncs[0][1].startswith(".out.json.") and fsyncs[0][1].endswith(".tmp")
    assert fsyncs[1][1] == tmp_path.name
    assert order == [("replace", 1)]   # the rename came after the file's fsync, before the directory's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_write_json_matches_json_dumps(tmp_path):
    data = {"b": [1, 2.5, None], "a": "é"}
    atomic.write_json_atomic(tmp_path / "x.json", data, indent=2, sort_keys=True)
    assert (tmp_path / "x.json").read_text(encoding="utf-8") == json.dumps(data, indent=2, sort_keys=True)


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError, match="No space"):
        atomic.write_text_atomic(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_no_overwrite_keeps_the_first_and_sets_mode(tmp_path):
    key = tmp_path / "key"
    assert atomic.write_text_atomic(key, "first", mode=0o600, overwrite=False) is True
    assert atomic.write_text_atomic(key, "second", mode=0o600, overwrite=False) is False
    assert key.read_text() == "first"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]


def test_concurrent_creators_agree_on_one_file(tmp_path):
    key, won = tmp_path / "key", []
    threads = [threading.Thread(target=lambda i=i: won.append(
        (i, atomic.write_text_atomic(key, str(i), overwrite=False)))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, ok in won if ok]
    assert len(winners) == 1 and key.read_text() == str(winners[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]


def test_publish_file_fsyncs_a_file_written_by_someone_else(tmp_path, fsyncs):
    tmp = atomic.temp_path(tmp_path / "part.parquet")
    tmp.write_bytes(b"PAR1")
    atomic.publish_file(tmp, tmp_path / "part.parquet")
    assert (tmp_path / "part.parquet").read_bytes() == b"PAR1" and not tmp.exists()
    assert fsyncs == [("file", tmp.name), ("dir", tmp_path.name)]


def test_publish_dir_fsyncs_every_file_and_the_parent(tmp_path, fsyncs):
    staging = tmp_path / ".staging"
    (staging / "sub").mkdir(parents=True)
    (staging / "a.bin").write_bytes(b"a")
    (staging / "sub" / "b.bin").write_bytes(b"b")
    atomic.publish_dir(staging, tmp_path / "v1")
    assert (tmp_path / "v1" / "sub" / "b.bin").read_bytes() == b"b" and not staging.exists()
    files = {n for k, n in fsyncs if k == "file"}
    dirs = [n for k, n in fsyncs if k == "dir"]
    assert files == {"a.bin", "b.bin"}
    assert {"sub", ".staging"} <= set(dirs) and dirs[-1] == tmp_path.name   # the parent, after the rename
