"""Exactly one audit record per scored user for a finished batch job, whatever the point at which the job
was killed (recsys/batch/job.py). Each case runs the real CLI in a subprocess that SIGKILLs itself at one
point of the second chunk's commit sequence (injected by wrapping the function that marks that point),
then reruns the same command to the end and checks the log against the output."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from audit.log import read_records

# point -> code run in the job's process before `recsys.batch.cli.main`: it arms a SIGKILL at that point.
KILL_POINTS = {
    # inside the chunk's audit transaction: BEGIN done, rows being chained, nothing committed
    "mid_audit_transaction": """
        import audit.store.sqlite as L   # the store chains the rows inside its transaction
        real, seen = L.record_digest, [0]
        def digest(row, prev):
            seen[0] += 1
            if seen[0] == 2 * USERS_PER_CHUNK + 1:   # the first record of the second chunk
                die()
            return real(row, prev)
        L.record_digest = digest
    """,
    # the chunk's records committed, its part not yet written (the case issue 26 found: 1,050 for 1,000)
    "after_audit_commit": """
        import audit.log as L
        real, calls = L.AuditLog.append_many, [0]
        def append_many(self, recs, **kw):
            n = real(self, recs, **kw)
            calls[0] += 1
            if calls[0] == 2:
                die()
            return n
        L.AuditLog.append_many = append_many
    """,
    # the part written to its temporary file and fsynced, not renamed into place
    "part_written_not_renamed": """
        import recsys.batch.job as J
        real, calls = J._fsync_file, [0]
        def fsync_file(path):
            real(path)
            if path.name.startswith(".part-"):
                calls[0] += 1
                if calls[0] == 2:
                    die()
        J._fsync_file = fsync_file
    """,
    # the part renamed into place, the manifest not yet listing it
    "part_renamed_not_listed": """
        import recsys.batch.job as J
        real, calls = J.write_json_atomic, [0]
        def write_json_atomic(path, data):
            if path.name == "_manifest.json" and data.get("parts"):
                calls[0] += 1
                if calls[0] == 2:
                    die()
            return real(path, data)
        J.write_json_atomic = write_json_atomic
    """,
    # the second part listed in the manifest
    "part_listed": """
        import recsys.batch.job as J
        real, calls = J.Job.commit, [0]
        def commit(self, meta, scored):
            entry = real(self, meta, scored)
            calls[0] += 1
            if calls[0] == 2:
                die()
            return entry
        J.Job.commit = commit
    """,
    # every part listed, _SUCCESS not written
    "before_success": """
        import recsys.batch.job as J
        def finish(self):
            die()
        J.Job.finish = finish
    """,
}

USERS, USERS_PER_CHUNK = 10, 2


def _driver(point: str) -> str:
    return textwrap.dedent("""
        import os, signal, sys
        USERS_PER_CHUNK = %d
        def die():
            os.kill(os.getpid(), signal.SIGKILL)
    """ % USERS_PER_CHUNK) + textwrap.dedent(KILL_POINTS[point]) + textwrap.dedent("""
        from recsys.batch.cli import main
        sys.exit(main(sys.argv[1:]))
    """)


@pytest.fixture(scope="module")
def job_input(artifacts, tmp_path_factory):
    d = tmp_path_factory.mktemp("kill-input")
    cat = artifacts.catalog
    items = [cat.item_ids[i] for i in range(40) if cat.harm_score[i] < artifacts.harm.threshold][:20]
    users = list(artifacts.users)[: USERS // 2] + [f"new-{k}" for k in range(USERS - USERS // 2)]
    rows = [{"user_id": u, "item_id": i, "audit.age_band": "under_18" if k % 3 == 0 else "25-34"}
            for k, u in enumerate(users) for i in items[k % 5: k % 5 + 8]]
    pd.DataFrame(rows).to_parquet(d / "in.parquet")
    return d / "in.parquet", len(rows)


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_exactly_one_record_per_user_whatever_the_kill_point(artifact_root, job_input, tmp_path, point):
    src, n_rows = job_input
    out, db = tmp_path / "out", tmp_path / "audit.db"
    args = ["--input", str(src), "--output", str(out), "--artifacts", str(artifact_root), "--audit-log", str(db),
            "--chunk-users", str(USERS_PER_CHUNK), "--top-k", "3", "--no-progress"]
    env = {**os.environ, "ETHICREC_TORCH_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    killed = subprocess.run([sys.executable, "-c", _driver(point), *args], env=env, capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    done = subprocess.run([sys.executable, "-m", "recsys.batch", *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["complete"] and (out / "_SUCCESS").exists()
    result = pd.read_parquet(out)
    assert len(result) == n_rows and not result.duplicated(["user_id", "item_id"]).any()
    records = list(read_records(db))
    assert len(records) == USERS, f"{len(records)} audit records for {USERS} users"
    assert {r.audit_id for r in records} == set(result["audit_id"])
    assert len({r.request_id for r in records}) == USERS
    per_user = result.groupby("user_id")["audit_id"].nunique()
    assert (per_user == 1).all()
