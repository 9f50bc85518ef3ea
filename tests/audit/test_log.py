import sqlite3

import pytest

from audit.log import AuditLog, AuditRecord, read_records


def _rec(i: int, ts: float) -> AuditRecord:
    return AuditRecord(f"a{i}", ts, f"r{i}", "m1", "p1", "h", "ENFORCE", "PASS", 10, ["x"], [],
                       [{"item_id": "x", "group": "g", "rank": 1, "removed": ""}], [])


def test_append_and_read_in_order_with_time_filter(tmp_path):
    log = AuditLog(tmp_path / "a.db", salt=b"s")
    for i in range(5):
        log.append(_rec(i, 100.0 + i))
    log.close()
    assert [r.audit_id for r in read_records(tmp_path / "a.db")] == ["a0", "a1", "a2", "a3", "a4"]
    assert [r.audit_id for r in read_records(tmp_path / "a.db", since=101, until=103)] == ["a1", "a2"]
    rec = next(read_records(tmp_path / "a.db"))
    assert rec.candidates == [{"item_id": "x", "group": "g", "rank": 1, "removed": ""}]


def test_audit_ids_are_unique(tmp_path):
    log = AuditLog(tmp_path / "a.db", salt=b"s")
    log.append(_rec(1, 1.0))
    with pytest.raises(sqlite3.IntegrityError):
        log.append(_rec(1, 2.0))


def test_reading_a_non_log_is_a_clear_error(tmp_path):
    (tmp_path / "x.db").write_text("not a database at all" * 50)
    with pytest.raises(ValueError, match="not an ethicrec audit log"):
        list(read_records(tmp_path / "x.db"))


def test_logs_from_before_user_attributes_still_read_and_upgrade(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    from audit.log import SCHEMA

    import re

    old = re.sub(r",\s*--[^\n]*\n\s*user_attributes.*?\n\);", "\n);", SCHEMA, flags=re.S)
    assert "user_attributes" not in old and "record_hash" not in old
    conn.executescript(old)
    conn.execute("INSERT INTO audit_records (audit_id, ts, request_id, model_version, policy_version, user_hash,"
                 " audit_mode, verdict, top_k, returned_ids, removed, candidates, findings)"
                 " VALUES ('x', 1, 'r', 'm', 'p', 'h', 'ENFORCE', 'PASS', 1, '[]', '[]', '[]', '[]')")
    conn.commit()
    conn.close()
    assert next(read_records(path)).user_attributes == {}
    log = AuditLog(path, salt=b"s")
    log.append(_rec(2, 5.0))
    log.close()
    assert [r.audit_id for r in read_records(path)] == ["x", "a2"]
