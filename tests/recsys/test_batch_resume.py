"""Batch jobs are resumable and exactly-once: a job killed with SIGKILL and run
again produces the same rows as an uninterrupted run, none lost, none twice."""
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from recsys.batch import BatchInputError, build_batch_pipeline, run_batch


def _frame(artifacts, known_items, n_users: int, per_user: int = 12) -> pd.DataFrame:
    users = list(artifacts.users)[: n_users // 2] + [f"new-{k}" for k in range(n_users - n_users // 2)]
    rows = []
    for k, u in enumerate(users):
        items = known_items[k % 20: k % 20 + per_user]
        rows += [{"user_id": u, "item_id": i, "audit.age_band": "under_18" if k % 7 == 0 else "25-34",
                  "attr.content_rating": "R" if j == 0 else "PG"} for j, i in enumerate(items)]
    return pd.DataFrame(rows)


def _run(artifacts, log, src, out, **kw):
    from audit.policy import load_policy

    kw.setdefault("progress", False)
    return run_batch(build_batch_pipeline(artifacts, load_policy(), log), artifacts.catalog.index,
                     artifacts.extra_features, src, out, **kw)


def _cmd(artifact_root, src, out, audit_db, *extra):
    return [sys.executable, "-m", "recsys.batch", "--input", str(src), "--output", str(out),
            "--artifacts", str(artifact_root), "--audit-log", str(audit_db), "--no-progress", *extra]


def _parts(out) -> list:
    try:
        return json.loads((out / "_manifest.json").read_text())["parts"]
    except (OSError, ValueError):
        return []


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigkilled_job_resumes_to_the_same_rows(artifacts, artifact_root, known_items, audit_log, tmp_path, workers):
    df = _frame(artifacts, known_items, n_users=120)
    src = tmp_path / "in.parquet"
    df.to_parquet(src)
    out = tmp_path / "out"
    env = {**os.environ, "ETHICREC_TORCH_THREADS": "1"}
    cmd = _cmd(artifact_root, src, out, tmp_path / "job-audit.db", "--chunk-users", "2", "--top-k", "5",
               "--workers", str(workers))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not _parts(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    helpers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the job ended before it could be killed mid-way"
    if workers > 1:   # the worker processes notice their driver is gone and exit; none is left behind
        assert len(helpers) >= workers
        deadline = time.monotonic() + 60
        while any(_alive(p) for p in helpers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in helpers)
    manifest = json.loads((out / "_manifest.json").read_text())
    committed = len(manifest["parts"])
    assert 1 <= committed < manifest["plan"]["chunks"] == 60
    assert not manifest["complete"] and not (out / "_SUCCESS").exists()
    # What a crash between writing a part and listing it leaves behind (the kill may have left one too).
    (out / "part-00059.parquet").write_bytes(b"half a part")
    (out / ".part-00058.parquet.tmp").write_bytes(b"temp")

    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"({committed} parts from an earlier run)" in res.stdout
    assert not list(out.glob(".*.tmp"))
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["complete"] and (out / "_SUCCESS").exists()
    assert [p["part"] for p in manifest["parts"]] == list(range(60))
    assert sorted(p.name for p in out.glob("part-*.parquet")) == [f"part-{k:05d}.parquet" for k in range(60)]

    resumed = pd.read_parquet(out)
    _run(artifacts, audit_log, src, tmp_path / "ref", chunk_users=2, top_k=5)
    reference = pd.read_parquet(tmp_path / "ref")
    assert len(resumed) == len(df) and not resumed.duplicated(["user_id", "item_id"]).any()
    pd.testing.assert_frame_equal(resumed.drop(columns="audit_id"), reference.drop(columns="audit_id"),
                                  check_exact=True)
    assert (resumed["verdict"] == "ENFORCED").any()      # the under_18 users lost their R-rated item
    # Exactly one audit record per scored user, and it is the one the output names; chunks re-scored after
    # the kill (their first attempt may have committed records) added none.
    from audit.log import read_records

    records = list(read_records(tmp_path / "job-audit.db"))
    assert len(records) == df["user_id"].nunique() == resumed["audit_id"].nunique()
    assert {r.audit_id for r in records} == set(resumed["audit_id"])
    assert len({r.request_id for r in records}) == len(records)


def test_rerun_after_completion_does_nothing(artifacts, known_items, audit_log, tmp_path):
    _frame(artifacts, known_items, n_users=6).to_parquet(tmp_path / "in.parquet")
    first = _run(artifacts, audit_log, tmp_path / "in.parquet", tmp_path / "out", chunk_users=2)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    again = _run(artifacts, audit_log, tmp_path / "in.parquet", tmp_path / "out", chunk_users=2)
    assert again.already_complete and again.rows == first.rows and again.verdicts == first.verdicts
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == before


def test_resume_rescores_only_uncommitted_chunks(artifacts, known_items, audit_log, tmp_path):
    """A crash state made by hand: the manifest lists the first two of four parts."""
    src = tmp_path / "in.parquet"
    _frame(artifacts, known_items, n_users=8).to_parquet(src)
    _run(artifacts, audit_log, src, tmp_path / "out", chunk_users=2)
    full = pd.read_parquet(tmp_path / "out")
    path = tmp_path / "out" / "_manifest.json"
    m = json.loads(path.read_text())
    m["parts"], m["complete"] = m["parts"][:2], False
    path.write_text(json.dumps(m))
    (tmp_path / "out" / "_SUCCESS").unlink()
    kept = {n: (tmp_path / "out" / n).stat().st_mtime_ns for n in ("part-00000.parquet", "part-00001.parquet")}
    summary = _run(artifacts, audit_log, src, tmp_path / "out", chunk_users=2)
    assert summary.resumed_parts == 2 and summary.parts == 4 and summary.rows == len(full)
    assert {n: (tmp_path / "out" / n).stat().st_mtime_ns for n in kept} == kept   # not rewritten
    again = pd.read_parquet(tmp_path / "out")
    pd.testing.assert_frame_equal(again.drop(columns="audit_id"), full.drop(columns="audit_id"), check_exact=True)
    # Every user's audit_id is the one of the first run: committed parts are kept, and the re-scored chunks'
    # records were already in the log (committed before the "crash"), so they were not written again.
    assert (again["audit_id"] == full["audit_id"]).all()
    from audit.log import read_records

    audit_log.flush()
    records = [r for r in read_records(audit_log.path) if r.request_id.startswith("batch-")]
    assert len(records) == again["user_id"].nunique() == 8
    assert {r.audit_id for r in records} == set(again["audit_id"])


def test_other_job_in_output_is_refused_unless_overwrite(artifacts, known_items, audit_log, tmp_path):
    src = tmp_path / "in.parquet"
    _frame(artifacts, known_items, n_users=4).to_parquet(src)
    _run(artifacts, audit_log, src, tmp_path / "out", top_k=3)
    with pytest.raises(BatchInputError, match=r"holds another job \(top_k 3 -> 4\).*--overwrite"):
        _run(artifacts, audit_log, src, tmp_path / "out", top_k=4)
    _frame(artifacts, known_items, n_users=5).to_parquet(src)   # same name, other content
    with pytest.raises(BatchInputError, match="holds another job .input sha256"):
        _run(artifacts, audit_log, src, tmp_path / "out", top_k=3)
    summary = _run(artifacts, audit_log, src, tmp_path / "out", top_k=4, overwrite=True)
    assert summary.users == 5 and pd.read_parquet(tmp_path / "out")["rank"].max() == 4


def test_output_that_is_not_a_batch_directory_is_left_alone(artifacts, known_items, audit_log, tmp_path):
    src = tmp_path / "in.parquet"
    _frame(artifacts, known_items, n_users=2).to_parquet(src)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(BatchInputError, match="not empty and holds no _manifest.json"):
            _run(artifacts, audit_log, src, tmp_path / "mine", overwrite=overwrite)
    (tmp_path / "file.parquet").write_bytes(b"old single-file output")
    with pytest.raises(BatchInputError, match="is a file"):
        _run(artifacts, audit_log, src, tmp_path / "file.parquet")
    _run(artifacts, audit_log, src, tmp_path / "file.parquet", overwrite=True)
    assert (tmp_path / "file.parquet" / "_SUCCESS").exists() and (tmp_path / "mine" / "notes.txt").exists()


def test_damaged_committed_part_is_reported(artifacts, known_items, audit_log, tmp_path):
    src = tmp_path / "in.parquet"
    _frame(artifacts, known_items, n_users=4).to_parquet(src)
    _run(artifacts, audit_log, src, tmp_path / "out", chunk_users=2)
    m = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    m["complete"] = False
    (tmp_path / "out" / "_manifest.json").write_text(json.dumps(m))
    (tmp_path / "out" / "part-00001.parquet").unlink()
    with pytest.raises(BatchInputError, match="part-00001.parquet is listed in the manifest but is missing"):
        _run(artifacts, audit_log, src, tmp_path / "out", chunk_users=2)
