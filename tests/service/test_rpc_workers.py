"""The gRPC thread pool's size: max_workers when set, else sized to the usable CPUs (2..8)."""
import pytest

from service.config import load_config


@pytest.mark.parametrize("cpus, expected", [(1, 2), (2, 2), (4, 4), (8, 8), (64, 8)])
def test_auto_follows_the_usable_cpus_within_2_to_8(monkeypatch, cpus, expected):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cpus)))
    cfg = load_config(env={})
    assert cfg.max_workers == 0 and cfg.rpc_workers == expected


def test_an_explicit_count_wins(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)))
    assert load_config(env={"ETHICREC_MAX_WORKERS": "3"}).rpc_workers == 3
    assert load_config(env={"ETHICREC_MAX_WORKERS": "1"}).rpc_workers == 1


def test_the_server_pool_gets_that_size(monkeypatch, artifact_root, tmp_path):
    from concurrent import futures

    from service.server import create_server, load_app
    from tests.service.support import config

    sizes = []
    real = futures.ThreadPoolExecutor

    def recording(*args, **kw):
        if kw.get("thread_name_prefix") == "ethicrec-rpc":
            sizes.append(kw.get("max_workers"))
        return real(*args, **kw)

    monkeypatch.setattr(futures, "ThreadPoolExecutor", recording)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(3)))
    cfg = config(artifact_root, tmp_path, max_workers=0)
    app = load_app(cfg)
    try:
        server, _ = create_server(cfg, app)
        server.stop(None)
    finally:
        app.close()
    assert sizes == [3]
