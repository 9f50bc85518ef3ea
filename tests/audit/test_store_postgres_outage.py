"""The database goes away and comes back.

Journal mode: appends go on into the local journal while PostgreSQL is down, up to the journal's bound,
past which they fail closed; once it is back every accepted record is shipped exactly once, on its writer's
chain, which still verifies. Direct mode: appends fail (the audit stage turns that into the policy's
failure status) while it is down and succeed again once it is back. A SIGKILLed writer's journal is shipped
by the next log opened on its journal directory, onto the dead writer's chain.

These tests stop and restart the session's PostgreSQL server."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from audit.log import AuditLog, AuditRecord, JournalFull, read_records
from audit.store import StoreUnavailable
from audit.verify import verify_store

ROOT = Path(__file__).resolve().parents[2]


def _rec(i: int, prefix: str = "a") -> AuditRecord:
    return AuditRecord(f"{prefix}{i}", 1000.0 + i, f"r{i}", "m1", "p1", "h", "ENFORCE", "PASS", 10, [f"x{i}"], [],
                       {"item_id": [f"x{i}", "y"], "group": ["g", "h"], "rank": [1, 0], "removed": ["", ""]},
                       [{"code": "X", "value": 0.5}], {"age_band": "25-34"})


def _ids(url: str) -> list[str]:
    with psycopg.connect(url, password=os.environ["ETHICREC_AUDIT_STORE_PASSWORD"]) as conn:
        return [r[0] for r in conn.execute("SELECT audit_id FROM audit_records ORDER BY id")]


def test_journal_mode_rides_out_an_outage_within_its_bound(pg_url, postgres, tmp_path):
    line = 420    # about one journal line of _rec
    log = AuditLog(pg_url, salt=b"s", journal=True, journal_dir=tmp_path / "j", writer="r/1",
                   journal_max_bytes=40 * line)
    from prometheus_client import generate_latest

    from service.metrics import Metrics

    metrics = Metrics()
    metrics.watch_audit_log(log)
    for i in range(10):
        log.append(_rec(i))
    log.flush()
    assert b"ethicrec_audit_store_up 1.0" in generate_latest(metrics.registry)
    postgres.stop("fast")
    try:
        accepted = list(range(10))
        refused = 0
        for i in range(10, 200):
            try:
                log.append(_rec(i))
                accepted.append(i)
            except JournalFull as exc:
                assert "log.journal_max_mb" in str(exc)
                refused += 1
        assert refused > 0 and 20 < len(accepted) - 10 < 60, (len(accepted), refused)   # the bound, then closed
        assert log.pending() == len(accepted) - 10
        deadline = time.monotonic() + 20
        while log.store_error() is None and time.monotonic() < deadline:   # the ingest thread's next attempt
            time.sleep(0.1)
        assert "unreachable" in log.store_error()
        scraped = generate_latest(metrics.registry)
        assert b"ethicrec_audit_store_up 0.0" in scraped
        assert f"ethicrec_audit_journal_pending {float(len(accepted) - 10)}".encode() in scraped
    finally:
        postgres.start_again()
    log.flush()                                     # shipped once the database is back
    assert log.pending() == 0 and log.store_error() is None
    assert b"ethicrec_audit_store_up 1.0" in generate_latest(metrics.registry)
    log.append(_rec(500))                           # and appends are accepted again
    log.close()
    assert _ids(pg_url) == [f"a{i}" for i in accepted] + ["a500"]   # each once, in order
    assert verify_store(pg_url).ok


def test_journal_mode_survives_a_restart_in_the_middle_of_a_stream(pg_url, postgres, tmp_path):
    log = AuditLog(pg_url, salt=b"s", journal=True, journal_dir=tmp_path / "j", writer="r/1")
    for i in range(100):
        log.append(_rec(i))
        if i == 50:
            postgres.restart("immediate")           # a crash: in-flight commits may or may not have happened
    log.close()
    assert _ids(pg_url) == [f"a{i}" for i in range(100)]
    assert verify_store(pg_url).ok


def test_direct_mode_fails_closed_while_the_database_is_down(pg_url, postgres, tmp_path):
    log = AuditLog(pg_url, salt=b"s", journal=False, writer="r/1", store_options={"checkout_timeout_s": 0.5})
    log.append(_rec(0))
    postgres.stop("fast")
    try:
        with pytest.raises(StoreUnavailable, match="unreachable"):
            log.append(_rec(1))
    finally:
        postgres.start_again()
    log.append(_rec(2))
    log.close()
    assert _ids(pg_url) == ["a0", "a2"]
    assert verify_store(pg_url).ok


def test_the_audit_stage_answers_the_policy_status_when_the_store_is_down(pg_url, postgres, artifacts,
                                                                           known_items, tmp_path):
    import dataclasses

    from audit.policy import load_policy
    from recsys.compose import build_pipeline
    from recsys.domain import Candidate, RankRequest, UserContext
    from recsys.errors import AuditFailure

    policy = dataclasses.replace(load_policy(), failure_status="UNAVAILABLE")
    log = AuditLog(pg_url, salt=b"s", journal=False, store_options={"checkout_timeout_s": 0.5})
    pipe = build_pipeline(artifacts, policy=policy, audit_log=log)
    req = RankRequest(UserContext("1"), tuple(Candidate(i) for i in known_items[:10]), top_k=5)
    assert pipe.rank(req).audit.audit_id
    postgres.stop("fast")
    try:
        with pytest.raises(AuditFailure) as err:
            pipe.rank(req)
        assert err.value.status == "UNAVAILABLE"
    finally:
        postgres.start_again()
    assert pipe.rank(req).audit.audit_id
    log.close()
    assert len(list(read_records(pg_url))) == 2


WRITER = """
import sys
from audit.log import AuditLog, AuditRecord
log = AuditLog(sys.argv[1], salt=b"s", journal=True, journal_dir=sys.argv[2], writer="victim/1")
i = 0
while True:
    log.append(AuditRecord(f"k{i}", float(i), "r", "m", "p", "h", "ENFORCE", "PASS", 1, ["x"], [],
                           {"item_id": ["x"], "group": ["g"], "rank": [1], "removed": [""]}, []))
    print(f"k{i}", flush=True)
    i += 1
"""


def test_a_killed_writers_journal_is_shipped_onto_its_chain(pg_url, postgres, tmp_path):
    jdir = tmp_path / "j"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, pg_url, str(jdir)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    printed = []
    try:
        for _ in range(300):
            printed.append(proc.stdout.readline().strip())
        postgres.stop("fast")                 # records from here on stay in the journal only
        for _ in range(100):
            printed.append(proc.stdout.readline().strip())
        os.kill(proc.pid, signal.SIGKILL)
        printed.extend(line.strip() for line in proc.stdout)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
        if not (postgres.dir / "data" / "postmaster.pid").exists():
            postgres.start_again()
    assert len(_ids(pg_url)) < len(printed)   # some were only journaled when it died
    log = AuditLog(pg_url, salt=b"s", journal=True, journal_dir=jdir, writer="next/1")
    assert log.recovered > 0
    log.close()
    stored = _ids(pg_url)
    assert set(printed) <= set(stored) and len(stored) == len(set(stored))
    res = verify_store(pg_url)
    assert res.ok, res.summary()
    assert [c.writer for c in res.chains] == ["victim/1"]     # shipped onto the dead writer's chain
    assert not list(jdir.glob("*.journal-*"))
