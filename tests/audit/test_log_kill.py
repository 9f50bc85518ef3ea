"""A writer killed with SIGKILL mid-stream (committing directly, or through the
journal, ingested by the next opener) loses nothing it reported as written
and leaves no partial row: every audit_id printed after `append` returned is in
the log, intact, and the chain (continued across the crashes) verifies."""
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from audit.log import AuditLog, read_records
from audit.verify import verify_log

ROOT = Path(__file__).resolve().parents[2]

WRITER = """
import sys
from audit.log import AuditLog, AuditRecord
log = AuditLog(sys.argv[1], salt=b"s", journal=sys.argv[3] == "journal")
run = sys.argv[2]
cands = [{"item_id": str(j), "group": "head" if j % 3 else "long_tail", "rank": j % 11, "removed": ""}
         for j in range(40)]
i = 0
while True:
    audit_id = f"{run}-{i}"
    log.append(AuditRecord(audit_id, float(i), "r", "m", "p", "h", "ENFORCE", "PASS", 10,
                           [str(j) for j in range(10)], [], cands, [{"code": "X", "message": "y" * 200}]))
    print(audit_id, flush=True)
    i += 1
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("mode", ["direct", "journal"])
def test_sigkilled_writer_loses_no_committed_record(tmp_path, mode):
    path = tmp_path / "audit.db"
    printed: list[str] = []
    for run, kill_after in enumerate((150, 301, 457)):  # a few different points in the stream
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"run{run}", mode], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
        try:
            for _ in range(kill_after):
                line = proc.stdout.readline()
                assert line, f"writer exited early with {proc.wait()}"
                printed.append(line.strip())
            os.kill(proc.pid, signal.SIGKILL)
            printed.extend(line.strip() for line in proc.stdout)  # written before the kill landed
        finally:
            proc.kill()
            proc.wait(timeout=10)
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        if mode == "journal":
            # Whatever the killed writer had only journaled is ingested by the next opener of the log.
            AuditLog(path, salt=b"s").close()
            assert not list(tmp_path.glob("audit.db.journal-*"))

        res = verify_log(path)  # recomputes every row's hash: a partial row would fail here
        assert res.ok and res.legacy == 0, res.summary()
        ids = [r.audit_id for r in read_records(path)]
        assert len(ids) == len(set(ids)) == res.records
        # Everything reported is there, in order; at most one more row committed but not yet printed.
        assert ids[: len(printed)] == printed and len(ids) - len(printed) in (0, 1)
        printed = ids
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        conn.close()
