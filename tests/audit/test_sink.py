"""The audit sink interface (audit/sink.py): the log and the batch job's per-chunk buffer implement it."""
from __future__ import annotations

from audit.log import AuditLog, read_records
from audit.record import AuditRecord
from audit.sink import AuditSink
from recsys.batch.scoring import ChunkAuditLog, batch_audit_id


def _rec(i: int) -> AuditRecord:
    return AuditRecord(f"a{i}", 1000.0 + i, f"batch-job.run-row{i}", "m1", "p1", "h", "ENFORCE", "PASS", 10,
                       [f"x{i}"], [], {"item_id": [f"x{i}", "y"], "group": ["g", "h"], "rank": [1, 0],
                                       "removed": ["", ""]}, [])


def test_log_and_chunk_buffer_are_sinks(tmp_path):
    log = AuditLog(tmp_path / "a.db", salt=b"s")
    try:
        assert isinstance(log, AuditSink)
        assert isinstance(ChunkAuditLog(log), AuditSink)
        assert ChunkAuditLog(log).hash_user("u1") == log.hash_user("u1")
    finally:
        log.close()


def test_chunk_buffer_holds_until_flush_chunk_then_commits_rekeyed_once(tmp_path):
    log = AuditLog(tmp_path / "a.db", salt=b"s")
    try:
        sink = ChunkAuditLog(log)
        sink.append(_rec(1))
        assert sink.append_many([_rec(2), _rec(3)]) == 2
        assert list(read_records(tmp_path / "a.db")) == []        # held, nothing written
        ids = sink.flush_chunk(7)
        assert ids == {f"batch-job.run-row{i}": batch_audit_id(7, f"batch-job.run-row{i}") for i in (1, 2, 3)}
        for i in (1, 2, 3):    # the same chunk again (a re-run after a crash): left out, one record per user
            sink.append(_rec(i))
        sink.flush_chunk(7)
        got = list(read_records(tmp_path / "a.db"))
        assert sorted(r.audit_id for r in got) == sorted(ids.values())
        assert {r.writer for r in got} == {"batch-job/run"}
        sink.append(_rec(9))
        sink.discard()
        sink.flush()                                              # nothing held: nothing written
        assert len(list(read_records(tmp_path / "a.db"))) == 3
        sink.append(_rec(10))
        sink.flush()                                              # plain flush: the record's own audit_id
        assert "a10" in {r.audit_id for r in read_records(tmp_path / "a.db")}
    finally:
        log.close()
