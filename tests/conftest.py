"""Session fixtures: one tiny random BERT and one artifact trained from it on a
slice of the bundled data (real training code, small sizes), built once."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The audit key for every log the tests open without one of their own (servers, batch subprocesses), so that
# no test creates the default key file in the real ~/.config (tests of that default point XDG_CONFIG_HOME
# at a temporary directory and remove this variable).
os.environ.setdefault("ETHICREC_AUDIT_KEY", "tests-only-audit-key-0123456789abcdef0123456789")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "ml-latest-small"
ML100K = ROOT.parent / "shared" / "data" / "ml-100k"


def pytest_collection_modifyitems(config, items) -> None:
    """Mark every test that needs the session's trained artifact (`artifact_root`, directly or through another
    fixture) `artifact`, from its fixture closure, so `make test-fast` (-m "not slow and not artifact") can
    leave out the 2-3 minutes of building it without each test having to say so."""
    for item in items:
        if "artifact_root" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.artifact)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BERT with the real MiniLM tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from recsys.encoder import base_model_path

    path = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(base_model_path(), local_files_only=True)
    import torch

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=256)
    BertModel(cfg).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BertForSequenceClassification (one logit) with the real MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from recsys.encoder import base_model_path

    path = tmp_path_factory.mktemp("tiny-cross-encoder")
    tok = AutoTokenizer.from_pretrained(base_model_path(), local_files_only=True)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=256, num_labels=1)
    BertForSequenceClassification(cfg).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def artifact_root(tmp_path_factory, tiny_bert) -> Path:
    from recsys.train import TrainConfig, train

    root = tmp_path_factory.mktemp("artifacts")
    cfg = TrainConfig(data=DATA, out=root, base_model=tiny_bert, sample_users=200, max_pairs=256, batch_size=32,
                      lr=5e-4, harm_max_rows=1500, seed=0, als_grid="quick", ranker_grid="quick")
    train(cfg)
    return root


@pytest.fixture(scope="session")
def artifacts(artifact_root):
    from recsys.compose import load_artifacts

    return load_artifacts(artifact_root, device="cpu")


@pytest.fixture()
def audit_log(tmp_path):
    from audit.log import AuditLog

    log = AuditLog(tmp_path / "audit.db", salt=b"test-salt")
    yield log
    log.close()


@pytest.fixture()
def pipeline(artifacts, audit_log):
    from audit.policy import load_policy
    from recsys.compose import build_pipeline

    return build_pipeline(artifacts, policy=load_policy(), audit_log=audit_log)


@pytest.fixture()
def known_items(artifacts) -> list[str]:
    """40 catalog ids with benign catalog texts, most popular first."""
    import numpy as np

    cat = artifacts.catalog
    order = np.argsort(-cat.stats.log_pop, kind="stable")
    ok = [cat.item_ids[i] for i in order if cat.harm_score[i] < artifacts.harm.threshold]
    return ok[:40]


@pytest.fixture()
def copy_artifacts(artifact_root, tmp_path):
    """A private copy of the artifact root that a test may damage."""
    dst = tmp_path / "artifacts"
    shutil.copytree(artifact_root, dst)
    return dst


@pytest.fixture()
def server(artifact_root, tmp_path):
    """A real in-process server on an ephemeral port."""
    from service.config import ServiceConfig
    from service.server import create_server, load_app

    cfg = ServiceConfig(host="127.0.0.1", port=0, artifacts=artifact_root, audit_log=tmp_path / "server-audit.db",
                        device="cpu", max_workers=4)
    app = load_app(cfg)
    srv, port = create_server(cfg, app)
    srv.start()
    yield app, f"127.0.0.1:{port}"
    srv.stop(0).wait()
    app.close()


@pytest.fixture()
def stub(server):
    import grpc

    _, target = server
    with grpc.insecure_channel(target) as ch:
        from ethicrec.v1 import recommender_pb2_grpc as pb_grpc

        yield pb_grpc.RecommenderStub(ch)


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (tests/postgres_server.py: initdb into a temporary directory,
    pg_ctl start on a loopback port, as an unprivileged user when the tests run as root). Tests that need it
    are skipped, saying why, only when it cannot be started here; under CI (the CI variable set) they fail
    instead, so CI never passes without running them."""
    import subprocess

    from tests.postgres_server import LocalPostgres, PostgresUnavailable

    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401

        pg = LocalPostgres().start()
    except (ImportError, PostgresUnavailable, OSError, subprocess.TimeoutExpired) as exc:
        msg = f"PostgreSQL could not be started here ({exc}); `make postgresql` installs the server"
        if os.environ.get("CI"):
            pytest.fail(msg + " — CI must run the PostgreSQL audit-store tests", pytrace=False)
        pytest.skip(msg)
    yield pg
    pg.cleanup()


@pytest.fixture()
def pg_url(postgres, monkeypatch) -> str:
    """A fresh, empty database on the session's server, its password in ETHICREC_AUDIT_STORE_PASSWORD."""
    import secrets

    monkeypatch.setenv("ETHICREC_AUDIT_STORE_PASSWORD", postgres.password)
    return postgres.create_database("t_" + secrets.token_hex(6))
