"""`python -m service` as a process: bad start-ups fail fast in one line; SIGTERM drains and exits 0."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from ethicrec.v1 import recommender_pb2 as pb
from ethicrec.v1 import recommender_pb2_grpc as pb_grpc

from recsys.artifacts import resolve_version_dir


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "service", *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))


def _one_line_failure(res, text):
    assert res.returncode == 1
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and text in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_missing_artifact_dir(tmp_path):
    _one_line_failure(_run("--artifacts", str(tmp_path / "none"), "--port", "0"), "artifact directory not found")


def test_corrupt_artifact(copy_artifacts, tmp_path):
    vdir = resolve_version_dir(copy_artifacts)
    (vdir / "catalog.parquet").write_bytes(b"garbage")
    _one_line_failure(_run("--artifacts", str(copy_artifacts), "--port", "0"), "does not match the sha256")


def test_bad_policy_and_config(artifact_root, tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text('version = "x"\n[harm]\naction = "DELETE"\n')
    _one_line_failure(_run("--artifacts", str(artifact_root), "--policy", str(bad)), "harm.action")
    cfg = tmp_path / "c.toml"
    cfg.write_text("colour = 1\n")
    _one_line_failure(_run("--config", str(cfg)), "config key colour")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_drains_and_exits_zero(artifact_root, tmp_path, known_items):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "service", "--artifacts", str(artifact_root), "--port", str(port),
                             "--audit-log", str(tmp_path / "a.db")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    try:
        from service.demo import wait_healthy

        wait_healthy(f"127.0.0.1:{port}", 120, proc)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            resp = pb_grpc.RecommenderStub(ch).Rank(pb.RankRequest(
                user=pb.User(user_id="1"), candidates=[pb.Candidate(item_id=i) for i in known_items[:10]]), timeout=30)
        assert len(resp.items) == 10
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()


def test_port_in_use_is_one_line_error(artifact_root, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = _run("--artifacts", str(artifact_root), "--port", str(port), "--audit-log", str(tmp_path / "a.db"))
    assert res.returncode == 1
    assert "could not bind" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("busy", ["grpc", "grpc_processes", "metrics", "metrics_processes"])
def test_a_start_that_cannot_bind_creates_nothing(artifact_root, tmp_path, busy):
    """Zero configuration (no key anywhere): a start that fails on a busy port leaves no audit log, no
    journal and no key file behind."""
    env = {k: v for k, v in os.environ.items() if k not in ("ETHICREC_AUDIT_KEY", "ETHICREC_AUDIT_KEY_FILE")}
    env.update(HF_HUB_OFFLINE="1", XDG_CONFIG_HOME=str(tmp_path / "config"))
    var = tmp_path / "var"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        with socket.socket() as f:
            f.bind(("127.0.0.1", 0))
            free = f.getsockname()[1]
        args = ["--artifacts", str(artifact_root), "--audit-log", str(var / "audit.db")]
        args += {"grpc": ["--port", str(taken)], "grpc_processes": ["--port", str(taken), "--processes", "2"],
                 "metrics": ["--port", str(free), "--metrics-port", str(taken)],
                 "metrics_processes": ["--port", str(free), "--processes", "2", "--metrics-port", str(taken - 1)]}[busy]
        res = subprocess.run([sys.executable, "-m", "service", *args], capture_output=True, text=True, timeout=180,
                             env=env)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr and ("could not bind" in res.stderr or "in use" in res.stderr), res.stderr
    assert not var.exists() or not any(var.iterdir())
    assert not (tmp_path / "config").exists()


def test_zero_configuration_start_keeps_the_key_away_from_the_log(artifact_root, tmp_path, known_items):
    """What `make run` does: no key configured anywhere. The server creates the default key file (0600, in
    a 0700 directory under XDG_CONFIG_HOME), not in the log's directory, and the log's records carry it."""
    import stat

    from audit.log import read_records
    from audit.pseudonym import AuditKey

    env = {k: v for k, v in os.environ.items() if k not in ("ETHICREC_AUDIT_KEY", "ETHICREC_AUDIT_KEY_FILE")}
    # Run from an empty directory (the default log is ./var/audit.db), with this checkout's packages.
    root = str(Path(__file__).resolve().parents[2])
    env.update(HF_HUB_OFFLINE="1", XDG_CONFIG_HOME=str(tmp_path / "config"),
               PYTHONPATH=os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")])))
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "service", "--artifacts", str(artifact_root), "--port", str(port)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        from service.demo import wait_healthy

        wait_healthy(f"127.0.0.1:{port}", 120, proc)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            pb_grpc.RecommenderStub(ch).Rank(pb.RankRequest(user=pb.User(user_id="414"), candidate_ids=known_items[:5]),
                                             timeout=30)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
    key = tmp_path / "config" / "ethicrec" / "audit.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    var = tmp_path / "var"
    assert sorted(p.name for p in var.iterdir() if not p.name.startswith("audit.db-")) == ["audit.db"]
    [rec] = list(read_records(var / "audit.db"))
    assert rec.user_hash == AuditKey(key.read_text().strip().encode()).pseudonym("414")
