"""A PostgreSQL audit store: several writers append concurrently, each to its own hash chain; every record
is read back once; `audit.verify --store` checks every chain and the anchors, and names the first broken
link of each writer whose chain was tampered with."""
import json
import threading

import psycopg
import pytest

from audit.log import AuditLog, AuditRecord, read_records
from audit.verify import main as verify_main
from audit.verify import verify_store


def _rec(writer: int, i: int) -> AuditRecord:
    return AuditRecord(f"w{writer}-{i}", 1000.0 + i, f"r{i}", "m1", "p1", "h", "ENFORCE", "PASS", 10, [f"x{i}"], [],
                       {"item_id": [f"x{i}", "y"], "group": ["g", "h"], "rank": [1, 0], "removed": ["", ""]},
                       [{"code": "X", "value": 0.5}], {"age_band": "25-34"})


def _write(url: str, tmp_path, n_writers: int = 3, n: int = 60, journal: bool = True) -> list[AuditLog]:
    logs = [AuditLog(url, salt=b"s", journal=journal, journal_dir=tmp_path / f"j{w}", writer=f"replica-{w}/1",
                     store_options={"anchor_every_s": 0.0}) for w in range(n_writers)]

    def run(w: int) -> None:
        for i in range(n):
            logs[w].append(_rec(w, i))

    threads = [threading.Thread(target=run, args=(w,)) for w in range(n_writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return logs


@pytest.mark.parametrize("journal", [True, False], ids=["journal", "direct"])
def test_concurrent_writers_each_keep_an_intact_chain(pg_url, tmp_path, journal):
    for log in _write(pg_url, tmp_path, journal=journal):
        log.close()
    records = list(read_records(pg_url))
    assert sorted(r.audit_id for r in records) == sorted(f"w{w}-{i}" for w in range(3) for i in range(60))
    assert {r.writer for r in records} == {"replica-0/1", "replica-1/1", "replica-2/1"}
    res = verify_store(pg_url)
    assert res.ok, res.summary()
    assert sorted((c.writer, c.records) for c in res.chains) == [(f"replica-{w}/1", 60) for w in range(3)]
    assert res.anchors >= 3
    # Each writer's records are in its chain in the order it appended them.
    by_writer = [r.audit_id for r in records if r.writer == "replica-1/1"]
    assert by_writer == [f"w1-{i}" for i in range(60)]


def test_verify_names_the_first_broken_link_of_each_writer(pg_url, tmp_path, capsys):
    for log in _write(pg_url, tmp_path, n=20):
        log.close()
    with psycopg.connect(pg_url, password=_password(), autocommit=True) as conn:
        # replica-0: a field edited; replica-2: a row deleted from the middle; replica-1 untouched.
        conn.execute("UPDATE audit_records SET verdict = 'FLAGGED' WHERE audit_id = 'w0-7'")
        conn.execute("DELETE FROM audit_records WHERE audit_id = 'w2-12'")
    res = verify_store(pg_url)
    assert not res.ok
    problems = {c.writer: c.problem for c in res.chains}
    assert problems["replica-1/1"] is None
    assert (problems["replica-0/1"].kind, problems["replica-0/1"].seq, problems["replica-0/1"].audit_id) == \
        ("content_altered", 8, "w0-7")
    assert (problems["replica-2/1"].kind, problems["replica-2/1"].seq) == ("record_deleted", 14)
    assert verify_main(["--store", pg_url]) == 1
    out = capsys.readouterr().out
    assert "writer replica-0/1: BROKEN at writer_seq 8 (audit_id w0-7): content altered" in out
    assert "writer replica-1/1: OK, 20 records" in out
    assert "BROKEN: 2 of 3 chains broken" in out


def test_a_tail_cut_after_an_anchor_is_reported(pg_url, tmp_path):
    for log in _write(pg_url, tmp_path, n_writers=2, n=10):
        log.close()    # close anchors each writer's head
    assert verify_store(pg_url).ok
    with psycopg.connect(pg_url, password=_password(), autocommit=True) as conn:
        conn.execute("DELETE FROM audit_records WHERE writer = 'replica-1/1' AND writer_seq > 7")
    res = verify_store(pg_url)
    problem = {c.writer: c.problem for c in res.chains}["replica-1/1"]
    assert problem.kind == "tail_truncated" and "ends at writer_seq 7" in problem.detail


def test_verify_json_and_expect_head(pg_url, tmp_path, capsys):
    for log in _write(pg_url, tmp_path, n_writers=2, n=5):
        log.close()
    assert verify_main(["--store", pg_url, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and len(out["chains"]) == 2
    head = out["anchor_head"]
    assert verify_main(["--store", pg_url, "--expect-head", head]) == 0
    capsys.readouterr()
    assert verify_main(["--store", pg_url, "--expect-head", "ab" * 32]) == 1
    assert "anchor missing" in capsys.readouterr().out


def test_entries_of_another_kind_are_chained_with_the_decisions(pg_url, tmp_path):
    """What a reviewer's note (issue 28) would be: appended to the writer's chain, verified, not a decision."""
    log = AuditLog(pg_url, salt=b"s", journal=True, journal_dir=tmp_path / "j", writer="console/1")
    log.append(_rec(0, 0))
    log.append_entry("review", "rev-1", {"audit_id": "w0-0", "decision": "upheld", "note": "ok"})
    log.append(_rec(0, 1))
    log.close()
    assert [r.audit_id for r in read_records(pg_url)] == ["w0-0", "w0-1"]
    res = verify_store(pg_url)
    assert res.ok and res.chains[0].records == 3
    with psycopg.connect(pg_url, password=_password(), autocommit=True) as conn:
        conn.execute("""UPDATE audit_records SET payload = '{"decision":"overturned"}' WHERE audit_id = 'rev-1'""")
    assert verify_store(pg_url).chains[0].problem.kind == "content_altered"


def _password() -> str:
    import os

    return os.environ["ETHICREC_AUDIT_STORE_PASSWORD"]
