"""SIGTERM under load on a real `python -m service` process: every call the
server accepted is answered and audited, every call it refused is UNAVAILABLE,
and the process exits 0 with the audit log closed."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest

from audit.log import read_records
from service.demo import wait_healthy
from tests.service.support import free_port, rank_request, stub


@pytest.mark.slow
def test_sigterm_under_load(artifact_root, tmp_path, known_items):
    port, db, stderr = free_port(), tmp_path / "audit.db", tmp_path / "stderr.log"
    target = f"127.0.0.1:{port}"
    with open(stderr, "w") as err_file:   # a file, not a pipe: a full pipe would block the server's logging
        proc = subprocess.Popen([sys.executable, "-m", "service", "--artifacts", str(artifact_root), "--port",
                                 str(port), "--audit-log", str(db), "--device", "cpu", "--grace-seconds", "30",
                                 "--log-format", "json"],
                                stdout=subprocess.PIPE, stderr=err_file, text=True,
                                env=dict(os.environ, HF_HUB_OFFLINE="1"))
    exited = threading.Event()
    results: list[tuple[str, str, str, float, float]] = []   # request_id, code, audit_id, sent, answered

    def client(n: int) -> None:
        """Rank back to back; on UNAVAILABLE back off exponentially, as a gRPC retry policy would."""
        backoff = 0.05
        with grpc.insecure_channel(target) as ch:
            s = stub(ch)
            end = time.monotonic() + 120
            for i in range(100_000):
                if time.monotonic() > end:
                    return
                rid, t0 = f"c{n}-{i}", time.monotonic()
                try:
                    r = s.Rank(rank_request(known_items[:30], request_id=rid), timeout=60)
                    results.append((rid, "OK", r.audit.audit_id, t0, time.monotonic()))
                except grpc.RpcError as err:
                    results.append((rid, err.code().name, "", t0, time.monotonic()))
                    if exited.is_set():
                        return
                    time.sleep(backoff)
                    backoff = min(1.0, backoff * 2)

    try:
        wait_healthy(target, 120, proc)
        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        while sum(r[1] == "OK" for r in results) < 20 and proc.poll() is None:
            time.sleep(0.05)
        t_signal = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
        exited.set()
        for t in threads:
            t.join(60)
    finally:
        if proc.poll() is None:
            proc.kill()

    assert proc.returncode == 0 and "ethicrec: stopped" in out
    codes = {r[1] for r in results}
    assert codes <= {"OK", "UNAVAILABLE"}, codes
    assert "UNAVAILABLE" in codes
    ok = {r[0]: r[2] for r in results if r[1] == "OK"}
    assert any(sent < t_signal < answered for _, code, _, sent, answered in results if code == "OK"), \
        "no call was in flight when SIGTERM arrived"
    records = {r.request_id: r.audit_id for r in read_records(db)}
    assert records == ok     # every answered call audited, nothing audited that was not answered
    logged = [json.loads(line) for line in stderr.read_text().splitlines()]   # all of stderr is JSON lines
    ranked = {x["request_id"]: x["audit_id"] for x in logged if x.get("audit_id")}
    assert ranked == ok
    assert any("draining" in x["msg"] for x in logged) and logged[-1]["msg"] == "stopped"
