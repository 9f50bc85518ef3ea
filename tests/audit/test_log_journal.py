"""Journal mode: the request path only appends to a per-process journal; records reach SQLite in order,
a dead process's journal is ingested by the next opener (once), a live one is left alone, and an
ingestion failure makes every later append fail (the audit fails closed)."""
import dataclasses
import json
import sqlite3

import numpy as np
import pytest

import audit.log as audit_log
from audit.log import (JOURNAL_SUFFIX, AuditLog, AuditRecord, CandidateCodes, _journal_rows, _stored_values,
                       candidate_entries, read_records)
from audit.verify import verify_log


def _rec(i: int) -> AuditRecord:
    return AuditRecord(f"a{i}", 1000.0 + i, f"r{i}", "m1", "p1", "h", "ENFORCE", "PASS", 10, [f"x{i}"], [],
                       {"item_id": [f"x{i}", "y"], "group": ["g", "h"], "rank": [1, 0], "removed": ["", ""]},
                       [{"code": "X", "value": 0.5}], {"age_band": "25-34"})


def _compact_rec(i: int) -> AuditRecord:
    """The audit stage's form: candidates as group codes and returned positions (a compact journal line)."""
    return AuditRecord(f"a{i}", 1000.0 + i, f"r{i}", "m1", "p1", "h", "ENFORCE", "ENFORCED", 10, [f"x{i}"],
                       [{"item_id": "z", "reason": "HARMFUL_TEXT"}],
                       CandidateCodes([f"x{i}", "y", "z"], ["g", "h"], np.array([1, 0, 1]), [0], {2: "HARMFUL_TEXT"}),
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


def _stored_rows(path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT audit_id, ts, top_k, returned_ids, removed, candidates, findings, "
                            "user_attributes, record_hash FROM audit_records ORDER BY seq").fetchall()


def test_journal_and_direct_mode_store_the_same_text_and_hashes(tmp_path):
    import numpy as np

    def awkward(i: int) -> AuditRecord:
        # Floats that need all 17 digits, NaN, a numpy scalar, non-ASCII text: the journal's encode /
        # decode / encode must give exactly the text direct mode stores.
        return AuditRecord(f"a{i}", 1000.1 + i / 3, f"r{i}", "m1", "p1", "h", "ENFORCE", "FLAGGED", np.int64(10),
                           ["é", "x"], [{"item_id": "x", "reason": "HARMFUL_TEXT"}],
                           {"item_id": ["é", "x"], "group": ["g", "h"], "rank": [1, 0], "removed": ["", "HARMFUL_TEXT"]},
                           [{"code": "X", "value": 0.1 + 0.2, "threshold": float("nan"), "n": np.float32(0.5)}],
                           {"age_band": "25-34"})

    direct, journal = tmp_path / "d.db", tmp_path / "j.db"
    for path, mode in ((direct, False), (journal, True)):
        log = AuditLog(path, salt=b"s", journal=mode)
        for i in range(5):
            log.append(awkward(i))
        log.close()
    assert _stored_rows(direct) == _stored_rows(journal)
    assert verify_log(journal).ok


@pytest.mark.parametrize("make", ["_rec", "_compact_rec"])
def test_a_dead_process_journal_in_the_current_format_is_recovered(tmp_path, make):
    """The journal line is what the request path wrote (JSON columns as JSON values, not as stored text;
    the audit stage's records as compact positional lines)."""
    import os
    import subprocess
    import sys

    path = tmp_path / "a.db"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    script = tmp_path / "writer.py"
    script.write_text(
        "import os, threading\n"
        "import audit.log as L\n"
        f"from tests.audit.test_log_journal import {make} as _rec\n"
        "L._Journal._run = lambda self: None   # no ingestion: the records stay in the journal only\n"
        f"log = L.AuditLog({str(path)!r}, salt=b's', journal=True)\n"
        "for i in range(3):\n"
        "    log.append(_rec(i))\n"
        "os._exit(0)\n")
    subprocess.run([sys.executable, str(script)], check=True, env=env, timeout=120)
    assert len(_journals(path)) == 1
    log = AuditLog(path, salt=b"s")
    assert log.recovered == 3 and _journals(path) == []
    log.close()
    recs = list(read_records(path))
    expected = globals()[make](1)
    assert [r.audit_id for r in recs] == ["a0", "a1", "a2"]
    assert recs[1] == dataclasses.replace(expected, candidates=candidate_entries(
        audit_log.candidate_columns(expected.candidates)))
    assert verify_log(path).ok


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_the_journal_file_holds_every_record_past_its_mapping_too(tmp_path, monkeypatch, synchronous):
    """NORMAL copies records into a memory-mapped file and writes one that would run past the mapping with
    pwrite(2); FULL always writes. Either way the file, as a recovering process reads it (zero-filled
    tail and all), holds exactly the appended records in order."""
    monkeypatch.setattr(audit_log, "JOURNAL_MAP_BYTES", 4096)
    path = tmp_path / "a.db"
    log = AuditLog(path, salt=b"s", journal=True, synchronous=synchronous)
    for i in range(40):          # ~10 KB of lines: most of them past the 4 KB mapping
        log.append(_rec(i))
    (journal,) = _journals(path)
    rows = _journal_rows(journal.read_bytes())
    assert [r["audit_id"] for r in rows] == [f"a{i}" for i in range(40)]
    assert rows[7] == _stored_values(_rec(7))
    log.close()
    assert [r.audit_id for r in read_records(path)] == [f"a{i}" for i in range(40)]


def test_compact_candidates_store_the_same_text_and_hashes_as_columns(tmp_path):
    """The audit stage's CandidateCodes (a compact journal line, expanded by the ingest thread) must store
    byte for byte what the equivalent columns store in direct mode: same text, same chain."""
    def compact(i: int) -> AuditRecord:
        codes = [np.array([1, 0, 2, 0]), np.array([1, 0, 2, 0], dtype=np.int8), [1, 0, 2, 0],
                 np.array([1, 9, 0, 9, 2, 9, 0, 9])[::2]][i % 4]   # the last one not contiguous
        return AuditRecord(f"a{i}", 1000.1 + i / 3, f"r{i}", "m1", "p1", "h", "ENFORCE", "ENFORCED", 2,
                           ["é", "x"], [{"item_id": "w", "reason": "AUDIENCE_RESTRICTED"}],
                           CandidateCodes(["é", "x", "y", "w"], ["head", "long_tail", "ünï"], codes, [0, 1],
                                          {3: "AUDIENCE_RESTRICTED"} if i % 2 else {}),
                           [{"code": "X", "value": 0.1 + 0.2}], {"age_band": "25-34"})

    def columns(i: int) -> AuditRecord:
        rec = compact(i)
        return dataclasses.replace(rec, candidates=rec.candidates.columns())

    compact_j, compact_d, cols_d = tmp_path / "cj.db", tmp_path / "cd.db", tmp_path / "d.db"
    for path, make, mode in ((compact_j, compact, True), (compact_d, compact, False), (cols_d, columns, False)):
        log = AuditLog(path, salt=b"s", journal=mode)
        for i in range(8):
            log.append(make(i))
        log.close()
    assert _stored_rows(compact_j) == _stored_rows(compact_d) == _stored_rows(cols_d)
    assert verify_log(compact_j).ok
    rec = list(read_records(compact_j))[1]
    assert rec.candidates == [{"item_id": "é", "group": "long_tail", "rank": 1, "removed": ""},
                              {"item_id": "x", "group": "head", "rank": 2, "removed": ""},
                              {"item_id": "y", "group": "ünï", "rank": 0, "removed": ""},
                              {"item_id": "w", "group": "head", "rank": 0, "removed": "AUDIENCE_RESTRICTED"}]


@pytest.mark.parametrize("journal", [False, True], ids=["direct", "journal"])
@pytest.mark.parametrize("bad", [
    CandidateCodes(["a", "b"], ["g"], np.array([0, 1]), [], {}),          # code past the labels
    CandidateCodes(["a", "b"], ["g"], np.array([0, -1]), [], {}),         # negative code
    CandidateCodes(["a", "b"], ["g"], np.array([0]), [], {}),             # one code short
    CandidateCodes(["a", "b"], ["g"], np.array([0.0, 0.0]), [], {}),      # not integers
    CandidateCodes(["a", "b"], ["g"], [0, 3], [], {}),
    CandidateCodes(["a", "b"], ["g"], [0, 0], [2], {}),                   # returned position past the candidates
    CandidateCodes(["a", "b"], ["g"], [0, 0], [], {-1: "HARMFUL_TEXT"}),  # removed position before them
    CandidateCodes(["a", "b"], ["g"], [0, 0], [0.0], {}),                 # positions must be ints
    CandidateCodes(["a", "b"], ["g"], [0, 0], [], {1.0: "HARMFUL_TEXT"}),
    CandidateCodes(["a", "b"], ["g"], [0, True], [], {}),                 # bools are not codes
    # More labels than the subset test's bound (4096): the min/max path
    CandidateCodes(["a", "b"], [f"g{i}" for i in range(5000)], np.array([0, 5000]), [], {}),
    CandidateCodes(["a", "b"], [f"g{i}" for i in range(5000)], np.array([-1, 4999]), [], {}),
], ids=["code-high", "code-negative", "short", "float", "list-code-high", "returned", "removed", "returned-float",
        "removed-float", "list-code-bool", "many-labels-high", "many-labels-negative"])
def test_bad_compact_candidates_fail_their_own_append_only(tmp_path, journal, bad):
    """Refused when appended, so in journal mode a bad record cannot reach (and stop) the ingest thread."""
    log = AuditLog(tmp_path / "a.db", salt=b"s", journal=journal)
    with pytest.raises(ValueError, match="CandidateCodes"):
        log.append(dataclasses.replace(_compact_rec(0), candidates=bad))
    log.append(_compact_rec(1))
    log.flush()
    assert [r.audit_id for r in read_records(log.path)] == ["a1"]
    log.close()
