"""`python -m audit.verify`: exit 0 intact, 1 broken (first break named), 2 bad input in one line."""
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from audit.log import AuditLog, AuditRecord

ROOT = Path(__file__).resolve().parents[2]


def _verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audit.verify", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def _log(path: Path, n: int = 5) -> None:
    log = AuditLog(path, salt=b"s")
    for i in range(n):
        log.append(AuditRecord(f"a{i}", float(i), "r", "m", "p", "h", "ENFORCE", "PASS", 1, [], [], [], []))
    log.close()


def test_intact_log_exits_0_with_its_head(tmp_path):
    _log(tmp_path / "a.db")
    out = _verify("--log", str(tmp_path / "a.db"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("OK: 5 records, chain intact, head ") and out.stderr == ""
    head = out.stdout.split()[-1]
    assert _verify("--log", str(tmp_path / "a.db"), "--expect-head", head).returncode == 0


def test_broken_log_exits_1_naming_the_first_break(tmp_path):
    path = tmp_path / "a.db"
    _log(path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE audit_records SET verdict = 'ENFORCED' WHERE seq IN (2, 4)")
    conn.commit()
    conn.close()
    out = _verify("--log", str(path))
    assert out.returncode == 1
    assert out.stdout.strip() == ("BROKEN at seq 2 (audit_id a1): content altered: "
                                  "the stored fields do not hash to the row's record_hash")
    data = json.loads(_verify("--log", str(path), "--json").stdout)
    assert data["ok"] is False and data["problem"]["seq"] == 2 and data["problem"]["kind"] == "content_altered"


def test_missing_anchor_exits_1(tmp_path):
    _log(tmp_path / "a.db")
    out = _verify("--log", str(tmp_path / "a.db"), "--expect-head", "ab" * 32)
    assert out.returncode == 1 and "anchor missing" in out.stdout


def _one_line_error(out: subprocess.CompletedProcess, text: str) -> None:
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and text in out.stderr and "Traceback" not in out.stderr


def test_bad_input_exits_2_with_one_line(tmp_path):
    _one_line_error(_verify("--log", str(tmp_path / "none.db")), "audit log not found")
    (tmp_path / "text.db").write_text("not a database" * 100)
    _one_line_error(_verify("--log", str(tmp_path / "text.db")), "not an ethicrec audit log")
    conn = sqlite3.connect(tmp_path / "other.db")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    _one_line_error(_verify("--log", str(tmp_path / "other.db")), "not an ethicrec audit log")
    _log(tmp_path / "a.db")
    _one_line_error(_verify("--log", str(tmp_path / "a.db"), "--expect-head", "xyz"), "64 lowercase hex")
