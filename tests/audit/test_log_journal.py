"""Journal mode: the request path only appends to a per-process journal; records reach SQLite in order,
a dead process's journal is ingested by the next opener (once), a live one is left alone, and an
ingestion failure makes every later append fail (the audit fails closed)."""
import json
import sqlite3

import pytest

import audit.log as audit_log
from audit.log import JOURNAL_SUFFIX, AuditLog, AuditRecord, _stored_values, read_records
from audit.verify import verify_log


def _rec(i: int) -> AuditRecord:
    return AuditRecord(f"a{i}", 1000.0 + i, f"r{i}", "m1", "p1", "h", "ENFORCE", "PASS", 10, [f"x{i}"], [],
                       {"item_id": [f"x{i}", "y"], "group": ["g", "h"], "rank": [1, 0], "removed": ["", ""]},
                       [{"code": "X", "value": 0.5}], {"age_band": "25-34"})


def _journals(path) -> list:
    return sorted(path.parent.glob(path.name + JOURNAL_SUFFIX + "*"))


def test_records_reach_sqlite_in_append_order_and_the_journal_goes(tmp_path):
    path = tmp_path / "a.db"
    log = AuditLog(path, salt=b"s", journal=True)
    for i in range(200):
        log.append(_rec(i))
    assert len(_journals(path)) == 1
    log.flush()
    recs = list(read_records(path))
    assert [r.audit_id for r in recs] == [f"a{i}" for i in range(200)]
    assert recs[3].candidates == [{"item_id": "x3", "group": "g", "rank": 1, "removed": ""},
                                  {"item_id": "y", "group": "h", "rank": 0, "removed": ""}]
    log.close()
    assert _journals(path) == [] and verify_log(path).ok and verify_log(path).records == 200


def test_a_dead_process_journal_is_ingested_once_skipping_what_already_arrived(tmp_path):
    path = tmp_path / "a.db"
    log = AuditLog(path, salt=b"s")
    for i in range(3):
        log.append(_rec(i))
    log.close()
    # What a killed process leaves: records 1-2 already ingested, 3-4 not, and a torn line whose append
    # never returned (so nobody was told it was written).
    lines = [json.dumps(_stored_values(_rec(i))) for i in (1, 2, 3, 4)]
    dead = tmp_path / f"a.db{JOURNAL_SUFFIX}99999-deadbeef"
    dead.write_text("\n".join(lines) + "\n" + lines[0][:40])
    log = AuditLog(path, salt=b"s")
    assert log.recovered == 2 and not dead.exists()
    log.close()
    assert [r.audit_id for r in read_records(path)] == ["a0", "a1", "a2", "a3", "a4"]
    assert verify_log(path).ok
    assert AuditLog(path, salt=b"s").recovered == 0


def test_a_live_journal_is_left_to_its_owner(tmp_path):
    path = tmp_path / "a.db"
    owner = AuditLog(path, salt=b"s", journal=True)
    for i in range(5):
        owner.append(_rec(i))
    other = AuditLog(path, salt=b"s")   # sees the owner's journal, but its flock is held
    assert other.recovered == 0
    other.close()
    owner.close()
    assert [r.audit_id for r in read_records(path)] == [f"a{i}" for i in range(5)]


def test_journals_rotate_and_old_ones_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(audit_log, "JOURNAL_ROTATE_BYTES", 2000)
    path = tmp_path / "a.db"
    log = AuditLog(path, salt=b"s", journal=True)
    for i in range(300):
        log.append(_rec(i))
        if i % 50 == 0:
            log.flush()
    log.flush()
    assert len(_journals(path)) == 1
    log.close()
    assert [r.audit_id for r in read_records(path)] == [f"a{i}" for i in range(300)]


def test_ingestion_failure_fails_later_appends_and_keeps_the_records(tmp_path):
    path = tmp_path / "a.db"
    log = AuditLog(path, salt=b"s", journal=True)
    log.append(_rec(0))
    log.flush()
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE audit_records RENAME TO moved_away")  # every later INSERT fails
    conn.commit()
    conn.close()
    log.append(_rec(1))           # durable in the journal; its ingestion fails
    with pytest.raises(RuntimeError, match="ingestion failed"):
        log.flush()
    with pytest.raises(RuntimeError, match="ingestion failed"):
        log.append(_rec(2))
    log.close()
    assert len(_journals(path)) == 1   # kept for the next start
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE moved_away RENAME TO audit_records")
    conn.commit()
    conn.close()
    reopened = AuditLog(path, salt=b"s")
    assert reopened.recovered == 1
    reopened.close()
    assert [r.audit_id for r in read_records(path)] == ["a0", "a1"] and _journals(path) == []
