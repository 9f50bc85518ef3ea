"""`processes` > 1: several server processes share the port (SO_REUSEPORT), each serving its own connections, all
writing one audit log; they start and stop together, and one dying stops the rest."""
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from ethicrec.v1 import recommender_pb2 as pb
from ethicrec.v1 import recommender_pb2_grpc as pb_grpc

from audit.verify import verify_log

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(artifact_root, tmp_path, port, metrics_port, n=2):
    return subprocess.Popen(
        [sys.executable, "-m", "service", "--artifacts", str(artifact_root), "--port", str(port), "--processes", str(n),
         "--metrics-port", str(metrics_port), "--audit-log", str(tmp_path / "a.db"), "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))


def _rank_count(metrics_port: int) -> float | None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    found = re.findall(r'^ethicrec_rpc_requests_total\{[^}]*code="OK"[^}]*Rank"[^}]*\} (\S+)$', text, re.M)
    found += re.findall(r'^ethicrec_rpc_requests_total\{[^}]*Rank"[^}]*code="OK"[^}]*\} (\S+)$', text, re.M)
    return sum(float(v) for v in found)


def _wait_all_serving(proc, metrics_ports, timeout=180):
    """Every child serves /metrics only once its model is loaded and its gRPC server bound."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if all(_rank_count(p) is not None for p in metrics_ports):
            return
        time.sleep(0.5)
    raise AssertionError("the server processes did not all start")


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    if not path.exists():
        pytest.skip("/proc/<pid>/task/<pid>/children is not available here")
    pids = [int(x) for x in path.read_text().split()]
    # the server processes, not multiprocessing's resource tracker (a child of a spawn-mode parent too)
    return [p for p in pids if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


def test_processes_share_the_port_and_stop_together(artifact_root, tmp_path, known_items):
    port, mport = _free_port(), _free_port()
    while mport + 1 == port:
        mport = _free_port()
    proc = _start(artifact_root, tmp_path, port, mport)
    try:
        _wait_all_serving(proc, (mport, mport + 1))
        children = _children(proc.pid)
        assert len(children) == 2
        req = pb.RankRequest(user=pb.User(user_id="1"), candidates=[pb.Candidate(item_id=i) for i in known_items[:10]])
        calls = 40
        for _ in range(calls):   # a connection each: the kernel spreads connections over the processes
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                assert len(pb_grpc.RecommenderStub(ch).Rank(req, timeout=30).items) == 10
        served = [_rank_count(mport), _rank_count(mport + 1)]
        assert sum(served) == calls and min(served) >= 1, served
        proc.send_signal(signal.SIGHUP)      # forwarded: every process reloads
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert err.count("SIGHUP: reloading") == 2, err
        assert "ethicrec: 2 server processes" in out and out.count("ethicrec: stopped") == 3, out
        assert not any(Path(f"/proc/{c}").exists() for c in children)
        result = verify_log(tmp_path / "a.db")
        assert result.ok and result.records == calls, result
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_dying_process_stops_the_others(artifact_root, tmp_path):
    port, mport = _free_port(), _free_port()
    proc = _start(artifact_root, tmp_path, port, mport)
    try:
        _wait_all_serving(proc, (mport, mport + 1))
        first, second = _children(proc.pid)
        os.kill(first, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1
        assert "exited with -9; stopping" in err, err
        assert not Path(f"/proc/{second}").exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_port_in_use_fails_in_one_line_before_loading(artifact_root, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        t0 = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "service", "--artifacts", str(artifact_root), "--port", str(port),
                              "--processes", "2", "--audit-log", str(tmp_path / "a.db")],
                             capture_output=True, text=True, timeout=120, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert res.returncode == 1
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "could not bind" in lines[0], res.stderr
    assert time.monotonic() - t0 < 60
