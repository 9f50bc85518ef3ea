"""Three replicas, one PostgreSQL audit store: real server processes on separate ports write concurrently under
load from several clients; mid-run the database is stopped (each replica journals), one replica is SIGKILLed
while its journal holds records the database has not seen, and the database comes back. Afterwards every OK
response has exactly one record, every chain verifies, the dead replica's journal is shipped onto its own chain
by what its replacement runs at start-up, the shared monitor windows hold the fleet's traffic, and the bias
report covers all three replicas."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import psycopg
import pytest
from ethicrec.v1 import recommender_pb2 as pb
from ethicrec.v1 import recommender_pb2_grpc as pb_grpc

from audit.log import read_records
from audit.verify import verify_store
from tests.service.support import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
N_CLIENTS = 6


def _start(artifact_root, url, port, jdir, name):
    env = dict(os.environ, HF_HUB_OFFLINE="1", ETHICREC_AUDIT_JOURNAL_DIR=str(jdir), ETHICREC_AUDIT_WRITER=name,
               PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "service", "--artifacts", str(artifact_root), "--port", str(port),
                             "--device", "cpu", "--audit-store", url, "--log-format", "json"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _wait_serving(procs, timeout=240):
    """Each replica prints `ethicrec: serving` once its model is loaded, its port bound and its store open."""
    ready = threading.Barrier(len(procs) + 1, timeout=timeout)

    def watch(proc):
        for line in proc.stdout:
            if line.startswith("ethicrec: serving"):
                break
        ready.wait()
        for _ in proc.stdout:   # keep draining, so a full pipe never blocks the server
            pass

    for proc in procs:
        threading.Thread(target=watch, args=(proc,), daemon=True).start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        raise AssertionError(f"replicas did not start: exit codes {[p.poll() for p in procs]}") from None


class Load:
    """N_CLIENTS threads, each with a channel to every replica, sending `Rank` round-robin over the replicas."""

    def __init__(self, ports, items):
        self.ports, self.items = ports, items
        self.ok: list[tuple[int, str]] = []      # (replica index, audit_id)
        self.failed = Counter()                  # status code name -> calls
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True) for c in range(N_CLIENTS)]

    def _run(self, client: int) -> None:
        channels = [grpc.insecure_channel(f"127.0.0.1:{p}") for p in self.ports]
        stubs = [pb_grpc.RecommenderStub(ch) for ch in channels]
        i = client
        while not self._stop.is_set():
            r = i % len(stubs)
            user = pb.User(user_id=str(1 + i % 50), audit_attributes={"gender": "FM"[i % 2]})
            req = pb.RankRequest(user=user, top_k=5,
                                 candidates=[pb.Candidate(item_id=x) for x in self.items[i % 7:i % 7 + 12]])
            try:
                resp = stubs[r].Rank(req, timeout=20)
                with self._lock:
                    self.ok.append((r, resp.audit.audit_id))
            except grpc.RpcError as exc:
                with self._lock:
                    self.failed[exc.code().name] += 1
                time.sleep(0.02)
            i += N_CLIENTS
        for ch in channels:
            ch.close()

    def start(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def wait_for(self, more: int, timeout: float = 120) -> None:
        target = len(self.ok) + more
        deadline = time.monotonic() + timeout
        while len(self.ok) < target:
            assert time.monotonic() < deadline, f"only {len(self.ok)} of {target} OK responses ({self.failed})"
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)


def _window_replicas(url, postgres) -> set[str]:
    """Replicas with entries in both shared windows (the user-group monitor's and the exposure window's)."""
    with psycopg.connect(url, password=postgres.password) as conn:
        rows = conn.execute("SELECT DISTINCT kind, writer FROM audit_windows").fetchall()
    kinds = {"monitor", "exposure_window"}
    return {w for _, w in rows if {k for k, w2 in rows if w2 == w} >= kinds}


def test_three_replicas_one_trail_through_a_kill_and_a_database_restart(artifact_root, artifacts, known_items,
                                                                        pg_url, postgres, tmp_path):
    cat = artifacts.catalog
    tail = [cat.item_ids[i] for i in (cat.stats.group == "long_tail").nonzero()[0][:20]]
    items = [x for pair in zip(known_items[:20], tail) for x in pair]   # both item groups in every request
    ports = [free_port() for _ in range(3)]
    jdirs = [tmp_path / f"journal-{r}" for r in range(3)]
    procs = [_start(artifact_root, pg_url, ports[r], jdirs[r], f"replica-{r}") for r in range(3)]
    load = None
    try:
        _wait_serving(procs)
        load = Load(ports, items).start()
        load.wait_for(60)
        postgres.stop("fast")                      # the database goes away: every replica journals
        try:
            load.wait_for(45)
            procs[2].send_signal(signal.SIGKILL)   # its journal holds records PostgreSQL has not seen
            procs[2].wait(timeout=30)
            load.wait_for(20)
        finally:
            postgres.start_again()                 # ... and comes back
        load.wait_for(45)
        # The fleet-wide monitor windows: each live replica adds its observations at its next refresh (at most
        # FLEET_REFRESH_S apart, audit/monitor.py), once the database is back.
        deadline = time.monotonic() + 60
        while _window_replicas(pg_url, postgres) != {"replica-0", "replica-1"}:
            assert time.monotonic() < deadline, _window_replicas(pg_url, postgres)
            time.sleep(0.5)
        load.stop()
        ok_by_replica = Counter(r for r, _ in load.ok)
        assert all(ok_by_replica[r] > 10 for r in range(3)), ok_by_replica
        assert set(load.failed) <= {"UNAVAILABLE"}, load.failed   # only calls to the killed replica
        assert list(jdirs[2].glob("audit-store.journal-*")), "the killed replica left no journal"

        # What a replacement replica 2 runs before it serves (service/audit_trail.py: make_audit_log, open_audit_log):
        # the dead process's journal is shipped onto the dead writer's chain, each record once.
        from audit.policy import load_policy
        from service.config import load_config
        from service.audit_trail import make_audit_log, open_audit_log

        cfg = load_config(env={"ETHICREC_AUDIT_STORE": pg_url, "ETHICREC_AUDIT_JOURNAL_DIR": str(jdirs[2]),
                               "ETHICREC_AUDIT_WRITER": "replica-2"})
        replacement = make_audit_log(cfg, load_policy(), lazy=True)
        open_audit_log(replacement)
        assert replacement.recovered > 0
        replacement.close()

        for proc in procs[:2]:                     # a rolling update's SIGTERM: drain, ship, anchor, exit 0
            proc.send_signal(signal.SIGTERM)
        assert [proc.wait(timeout=90) for proc in procs[:2]] == [0, 0]
    finally:
        if load is not None:
            load.stop()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)

    records = list(read_records(pg_url))
    stored = Counter(r.audit_id for r in records)
    assert all(n == 1 for n in stored.values())
    ok_ids = [a for _, a in load.ok]
    assert len(set(ok_ids)) == len(ok_ids) and all(stored[a] == 1 for a in ok_ids)   # every OK: one record
    # Records beyond the OK responses: only calls in flight on the killed replica (written, never answered).
    assert len(stored) - len(ok_ids) <= N_CLIENTS
    replica_of = {r.audit_id: r.writer.split("/", 1)[0] for r in records}
    assert all(replica_of[a] == f"replica-{r}" for r, a in load.ok)

    res = verify_store(pg_url)
    assert res.ok, res.summary()
    assert sorted({c.writer.split("/", 1)[0] for c in res.chains}) == ["replica-0", "replica-1", "replica-2"]
    assert all(not list(d.glob("audit-store.journal-*")) for d in jdirs)

    from audit.report.__main__ import main as report_main

    out = tmp_path / "report"
    assert report_main(["--store", pg_url, "--out", str(out), "--no-gate", "--n-boot", "0"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["log"]["sources"]["replicas"] == dict(sorted(Counter(replica_of.values()).items()))
    assert report["log"]["records"] == len(stored)
    assert report["inputs"]["store"] == pg_url   # no password in the URL, so shown as given
