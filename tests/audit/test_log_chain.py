"""The hash chain holds through concurrent appends, reopening and legacy logs,
and verify_log names the first row where it was tampered with."""
import sqlite3
import threading

import pytest

from audit.log import GENESIS, AuditLog, AuditRecord, read_records
from audit.verify import verify_log

# The schema before the chain existed (user_attributes already there), as shipped.
LEGACY_SCHEMA = """
CREATE TABLE audit_records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, audit_id TEXT NOT NULL UNIQUE, ts REAL NOT NULL,
    request_id TEXT NOT NULL, model_version TEXT NOT NULL, policy_version TEXT NOT NULL, user_hash TEXT NOT NULL,
    audit_mode TEXT NOT NULL, verdict TEXT NOT NULL, top_k INTEGER NOT NULL, returned_ids TEXT NOT NULL,
    removed TEXT NOT NULL, candidates TEXT NOT NULL, findings TEXT NOT NULL,
    user_attributes TEXT NOT NULL DEFAULT '{}');
"""


def _rec(i, ts: float | None = None) -> AuditRecord:
    return AuditRecord(f"a{i}", 1000.0 + i if ts is None else ts, f"r{i}", "m1", "p1", "h", "ENFORCE", "PASS", 10,
                       [f"x{i}", "ü"], [{"item_id": "y", "reason": "HARMFUL_TEXT"}],
                       [{"item_id": f"x{i}", "group": "g", "rank": 1, "removed": ""}],
                       [{"code": "EXPOSURE_DISPARITY", "value": 0.1 * i}], {"age_band": "25-34"})


def _log_with(path, n: int) -> None:
    log = AuditLog(path, salt=b"s")
    for i in range(n):
        log.append(_rec(i))
    log.close()


def _sql(path, statement: str, *args) -> None:
    conn = sqlite3.connect(path)
    conn.execute(statement, args)
    conn.commit()
    conn.close()


def test_concurrent_appends_form_one_chain(tmp_path):
    log = AuditLog(tmp_path / "a.db", salt=b"s")
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(40):
                log.append(_rec(t * 1000 + i))
        except BaseException as exc:  # surfaced below; a thread's exception would otherwise only warn
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    log.close()
    assert not errors
    res = verify_log(tmp_path / "a.db")
    assert res.ok, res.summary()
    assert res.records == res.chained == 320 and res.legacy == 0
    recs = list(read_records(tmp_path / "a.db"))
    assert recs[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.record_hash for a, b in zip(recs, recs[1:]))
    assert res.head == recs[-1].record_hash
    assert res.summary() == f"OK: 320 records, chain intact, head {res.head}"


def test_two_writers_on_one_file_share_the_chain(tmp_path):
    """Like a batch job pointed at the service's log: the chain is taken from the file, not from memory."""
    a, b = AuditLog(tmp_path / "a.db", salt=b"s"), AuditLog(tmp_path / "a.db", salt=b"s")
    for i in range(10):
        (a if i % 3 else b).append(_rec(i))
    a.close()
    b.close()
    res = verify_log(tmp_path / "a.db")
    assert res.ok and res.records == 10


def test_reopened_log_continues_the_chain(tmp_path):
    path = tmp_path / "a.db"
    _log_with(path, 3)
    head = verify_log(path).head
    log = AuditLog(path, salt=b"s")
    with pytest.raises(sqlite3.IntegrityError):  # a failed append leaves no trace in the chain
        log.append(_rec(1))
    log.append(_rec(3))
    log.close()
    res = verify_log(path, expect_head=head)
    assert res.ok and res.records == 4
    assert list(read_records(path))[3].prev_hash == head


def test_record_equality_ignores_the_hashes(tmp_path):
    _log_with(tmp_path / "a.db", 1)
    assert next(read_records(tmp_path / "a.db")) == _rec(0)


@pytest.mark.parametrize("journal", [False, True], ids=["direct", "journal"])
def test_text_fields_must_be_str_so_the_hash_matches_what_is_stored(tmp_path, journal):
    log = AuditLog(tmp_path / "a.db", salt=b"s", journal=journal)
    with pytest.raises(TypeError, match="request_id"):
        log.append(AuditRecord("a", 1.0, 7, "m", "p", "h", "E", "PASS", 1, [], [], [], []))
    text_fields = ("audit_id", "request_id", "model_version", "policy_version", "user_hash", "audit_mode", "verdict")
    for name in text_fields:   # each one, past the all-str fast check, is refused by name
        good = AuditRecord("a", 1.0, "r", "m", "p", "h", "E", "PASS", 1, [], [], [], [])
        setattr(good, name, 5)
        with pytest.raises(TypeError, match=f"AuditRecord.{name} must be str"):
            log.append(good)
    for name, bad in (("ts", None), ("top_k", 1.5)):
        rec = AuditRecord("a", 1.0, "r", "m", "p", "h", "E", "PASS", 1, [], [], [], [])
        setattr(rec, name, bad)
        with pytest.raises(TypeError):
            log.append(rec)
    with pytest.raises(ValueError, match="candidates"):
        log.append(AuditRecord("c", 1.0, "r", "m", "p", "h", "E", "PASS", 1, [], [],
                               {"item_id": ["x"], "group": ["g"], "rank": [1]}, []))
    log.append(AuditRecord("b", 1, "r", "m", "p", "h", "E", "PASS", True, [], [], [], []))  # int ts, bool top_k
    log.close()
    assert verify_log(tmp_path / "a.db").ok
    rec = next(read_records(tmp_path / "a.db"))
    assert rec.audit_id == "b" and isinstance(rec.ts, float) and rec.top_k == 1


@pytest.mark.parametrize("column,value", [("verdict", "PASS_EDITED"), ("ts", 1.5), ("top_k", 11),
                                          ("candidates", "[]"), ("audit_id", "other"), ("findings", b"blob")])
def test_edited_field_is_reported_at_its_row(tmp_path, column, value):
    path = tmp_path / "a.db"
    _log_with(path, 10)
    _sql(path, f"UPDATE audit_records SET {column} = ? WHERE seq = 5", value)
    res = verify_log(path)
    assert not res.ok and res.problem.seq == 5 and res.problem.kind == "content_altered"
    assert res.records == 5 and res.chained == 4


def test_deleted_middle_row_is_reported(tmp_path):
    path = tmp_path / "a.db"
    _log_with(path, 10)
    _sql(path, "DELETE FROM audit_records WHERE seq IN (4, 5)")
    res = verify_log(path)
    assert (res.problem.seq, res.problem.audit_id, res.problem.kind) == (6, "a5", "record_deleted")
    assert "seq 4..5 missing" in res.summary()


def test_deleted_first_row_is_reported(tmp_path):
    path = tmp_path / "a.db"
    _log_with(path, 3)
    _sql(path, "DELETE FROM audit_records WHERE seq = 1")
    assert (verify_log(path).problem.seq, verify_log(path).problem.kind) == (2, "record_deleted")


def test_swapped_rows_are_reported(tmp_path):
    path = tmp_path / "a.db"
    _log_with(path, 10)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE audit_records SET seq = -1 WHERE seq = 5")
    conn.execute("UPDATE audit_records SET seq = 5 WHERE seq = 6")
    conn.execute("UPDATE audit_records SET seq = 6 WHERE seq = -1")
    conn.commit()
    conn.close()
    res = verify_log(path)
    assert (res.problem.seq, res.problem.audit_id, res.problem.kind) == (5, "a5", "link_broken")


def test_forged_prev_hash_is_reported(tmp_path):
    path = tmp_path / "a.db"
    _log_with(path, 10)
    _sql(path, "UPDATE audit_records SET prev_hash = ? WHERE seq = 7", "f" * 64)
    res = verify_log(path)
    assert (res.problem.seq, res.problem.kind) == (7, "link_broken")


def test_rehashed_edit_breaks_the_next_link(tmp_path):
    """An editor who recomputes the edited row's own hash is caught one row later."""
    from audit.log import COLUMNS, record_digest

    path = tmp_path / "a.db"
    _log_with(path, 10)
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    row = dict(conn.execute("SELECT * FROM audit_records WHERE seq = 4").fetchone())
    row["verdict"] = "ENFORCED"
    conn.execute("UPDATE audit_records SET verdict = ?, record_hash = ? WHERE seq = 4",
                 (row["verdict"], record_digest({c: row[c] for c in COLUMNS}, row["prev_hash"])))
    conn.commit()
    conn.close()
    res = verify_log(path)
    assert (res.problem.seq, res.problem.kind) == (5, "link_broken")


def test_cleared_hashes_after_the_chain_started_are_reported(tmp_path):
    path = tmp_path / "a.db"
    _log_with(path, 5)
    _sql(path, "UPDATE audit_records SET prev_hash = NULL, record_hash = NULL WHERE seq = 3")
    assert (verify_log(path).problem.seq, verify_log(path).problem.kind) == (3, "unchained_record")


def test_truncated_tail_is_caught_by_the_counter_or_the_anchor(tmp_path):
    path = tmp_path / "a.db"
    _log_with(path, 6)
    anchor = verify_log(path).head
    _sql(path, "DELETE FROM audit_records WHERE seq > 4")
    assert verify_log(path).problem.kind == "tail_truncated"
    _sql(path, "UPDATE sqlite_sequence SET seq = 4 WHERE name = 'audit_records'")  # a careful editor
    assert verify_log(path).ok
    res = verify_log(path, expect_head=anchor)
    assert res.problem.kind == "anchor_missing"


def test_legacy_rows_are_reported_not_verified(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(LEGACY_SCHEMA)
    for i in range(3):
        conn.execute("INSERT INTO audit_records (audit_id, ts, request_id, model_version, policy_version, user_hash,"
                     " audit_mode, verdict, top_k, returned_ids, removed, candidates, findings)"
                     " VALUES (?, 1, 'r', 'm', 'p', 'h', 'ENFORCE', 'PASS', 1, '[]', '[]', '[]', '[]')", (f"old{i}",))
    conn.commit()
    conn.close()
    res = verify_log(path)
    assert res.ok and (res.records, res.legacy, res.chained, res.head) == (3, 3, 0, GENESIS)
    assert "3 unchained legacy records, none chained yet" in res.summary()
    log = AuditLog(path, salt=b"s")  # migrates: adds the hash columns, chains from genesis
    for i in range(2):
        log.append(_rec(i))
    log.close()
    res = verify_log(path)
    assert res.ok and (res.records, res.legacy, res.chained, res.first_chained_seq) == (5, 3, 2, 4)
    assert "(3 unchained legacy records before seq 4, not verified)" in res.summary()
    assert [r.record_hash is None for r in read_records(path)] == [True] * 3 + [False] * 2


def test_verifying_while_a_writer_appends_sees_a_consistent_snapshot(tmp_path):
    path = tmp_path / "a.db"
    log = AuditLog(path, salt=b"s")
    log.append(_rec(0))
    stop = threading.Event()

    def writer() -> None:
        i = 1
        while not stop.is_set():
            log.append(_rec(i))
            i += 1

    th = threading.Thread(target=writer)
    th.start()
    try:
        results = [verify_log(path) for _ in range(30)]
    finally:
        stop.set()
        th.join()
        log.close()
    assert all(r.ok for r in results), [r.summary() for r in results if not r.ok][:1]
    assert results[-1].records > results[0].records
