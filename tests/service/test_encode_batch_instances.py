"""How many batches of new texts the server encodes at once: one per RPC worker unless configured."""
from service.config import load_config


def test_auto_is_one_per_rpc_worker_and_an_explicit_count_wins(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(4)))
    assert load_config(env={}).encode_instances == 4
    assert load_config(env={"ETHICREC_MAX_WORKERS": "3"}).encode_instances == 3
    assert load_config(env={"ETHICREC_ENCODE_BATCH_INSTANCES": "1"}).encode_instances == 1


def test_the_servers_batchers_get_that_many(artifact_root, tmp_path):
    from service.server import load_app
    from tests.service.support import config

    app = load_app(config(artifact_root, tmp_path, max_workers=3))
    try:
        assert {b.instances for b in app.artifacts.store.batchers.values()} == {3}
    finally:
        app.close()
    app = load_app(config(artifact_root, tmp_path, max_workers=3, encode_batch_instances=1))
    try:
        assert {b.instances for b in app.artifacts.store.batchers.values()} == {1}
    finally:
        app.close()
