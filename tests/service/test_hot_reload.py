"""Hot reload: a new artifact version or policy is swapped in under load without
a failed call; a corrupt version or a bad policy leaves the old one serving."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from recsys.artifacts import publish, resolve_version_dir
from tests.service.support import config, free_port, rank_request, running, stub

DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "audit" / "policies" / "default.toml"


def _publish_copy(root: Path, version: str, corrupt: bool = False) -> None:
    """Publish a copy of the current version under a new name, as training would."""
    staging = root / f".staging-{version}"
    shutil.copytree(resolve_version_dir(root), staging)
    meta = json.loads((staging / "metadata.json").read_text())
    meta["version"] = version
    (staging / "metadata.json").write_text(json.dumps(meta))
    if corrupt:
        (staging / "ranker.txt").write_text("not a model")
    publish(root, staging, version)


def _policy(path: Path, version: str) -> Path:
    path.write_text(re.sub(r'(?m)^version\s*=.*$', f'version = "{version}"', DEFAULT_POLICY.read_text()))
    return path


class _Load:
    """Client threads calling Rank back to back until stopped; every outcome kept."""

    def __init__(self, target: str, items: list[str], threads: int = 3) -> None:
        self.results: list[tuple[int, str, str, str]] = []   # (thread, code, model_version, policy_version)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(target, items, n)) for n in range(threads)]

    def _run(self, target, items, n):
        with grpc.insecure_channel(target) as ch:
            s = stub(ch)
            while not self._stop.is_set():
                try:
                    r = s.Rank(rank_request(items), timeout=30)
                    self.results.append((n, "OK", r.model_version, r.audit.policy_version))
                except grpc.RpcError as err:
                    self.results.append((n, err.code().name, "", ""))

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def wait_for(self, n: int, timeout: float = 60) -> None:
        end, start = time.monotonic() + timeout, len(self.results)
        while len(self.results) < start + n and time.monotonic() < end:
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(60)


def test_reload_under_load_swaps_version_without_failures(copy_artifacts, tmp_path, known_items):
    policy = _policy(tmp_path / "policy.toml", "p1")
    cfg = config(copy_artifacts, tmp_path, policy=policy)
    with running(cfg) as (app, target):
        v1 = app.artifacts.version
        with _Load(target, known_items[:20]) as load:
            load.wait_for(10)
            _publish_copy(copy_artifacts, "v2")
            _policy(policy, "p2")
            result = app.reload()
            assert result.ok, result.error
            assert (result.previous_model_version, result.model_version) == (v1, "v2")
            load.wait_for(10)
        assert {code for _, code, _, _ in load.results} == {"OK"}
        for n in range(3):   # per client: the old version, then only the new one
            seen = [(m, p) for t, _, m, p in load.results if t == n]
            switch = seen.index(("v2", "p2"))
            assert set(seen[:switch]) <= {(v1, "p1")} and set(seen[switch:]) == {("v2", "p2")}
        assert app.metrics.registry.get_sample_value("ethicrec_model_info",
                                                     {"model_version": "v2", "policy_version": "p2"}) == 1


def test_failed_reload_keeps_serving_the_old_version(copy_artifacts, tmp_path, known_items):
    policy = _policy(tmp_path / "policy.toml", "p1")
    cfg = config(copy_artifacts, tmp_path, policy=policy)
    with running(cfg) as (app, target), grpc.insecure_channel(target) as ch:
        v1 = app.artifacts.version
        _publish_copy(copy_artifacts, "v-corrupt", corrupt=True)
        with _Load(target, known_items[:20]) as load:
            load.wait_for(5)
            result = app.reload()
            load.wait_for(5)
        assert not result.ok and "sha256" in result.error and result.model_version == v1
        assert {(code, m) for _, code, m, _ in load.results} == {("OK", v1)}
        policy.write_text("this is not toml = = =\n")
        (copy_artifacts / "LATEST").write_text(v1 + "\n")
        result = app.reload()
        assert not result.ok and "policy" in result.error.lower()
        resp = stub(ch).Rank(rank_request(known_items[:5]), timeout=30)
        assert (resp.model_version, resp.audit.policy_version) == (v1, "p1")
        assert app.metrics.registry.get_sample_value("ethicrec_reloads_total", {"result": "failed"}) == 2


@pytest.mark.slow
def test_sighup_reloads_a_running_server(copy_artifacts, tmp_path, known_items):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "service", "--artifacts", str(copy_artifacts), "--port", str(port),
                             "--audit-log", str(tmp_path / "a.db"), "--device", "cpu"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "stderr.log", "w"),
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    try:
        from service.demo import stop_process, wait_healthy

        wait_healthy(f"127.0.0.1:{port}", 120, proc)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            s = stub(ch)
            v1 = s.Rank(rank_request(known_items[:5]), timeout=30).model_version
            _publish_copy(copy_artifacts, "v-hup")
            proc.send_signal(signal.SIGHUP)
            versions = set()
            end = time.monotonic() + 60
            while "v-hup" not in versions and time.monotonic() < end:
                versions.add(s.Rank(rank_request(known_items[:5]), timeout=30).model_version)
        assert versions <= {v1, "v-hup"} and "v-hup" in versions
        stop_process(proc)
        assert proc.returncode == 0
        logged = [json.loads(line) for line in (tmp_path / "stderr.log").read_text().splitlines()]
        assert any(x["msg"].startswith("reloaded: model") for x in logged)
    finally:
        if proc.poll() is None:
            proc.kill()
