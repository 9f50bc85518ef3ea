from pathlib import Path

import pytest

from recsys.errors import ConfigError
from service.config import load_config


def test_file_then_env_then_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('port = 6000\nhost = "0.0.0.0"\n[limits]\nmax_candidates = 50\n')
    cfg = load_config(f, env={"ETHICREC_PORT": "7000", "ETHICREC_ARTIFACTS": "/x"}, overrides={"host": "127.0.0.2"})
    assert cfg.port == 7000 and cfg.host == "127.0.0.2" and cfg.artifacts == Path("/x")
    assert cfg.limits.max_candidates == 50 and cfg.limits.max_top_k == 100


@pytest.mark.parametrize("text, key", [
    ("prot = 1\n", "prot"),
    ("port = 70000\n", "port"),
    ('reflection = "maybe"\n', "reflection"),
    ("[limits]\nmax_candidatez = 3\n", "limits.max_candidatez"),
    ("[limits]\nmax_top_k = 0\n", "limits.max_top_k"),
    ('port = "abc"\n', "port"),
])
def test_bad_config_names_the_key(tmp_path, text, key):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(f, env={})


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.toml", env={})


@pytest.mark.parametrize("text, key", [
    ("max_queue = -1\n", "max_queue"),
    ("max_workers = -1\n", "max_workers"),
    ("processes = 0\n", "processes"),
    ("processes = 2\nport = 0\n", "processes"),
    ("processes = 3\nmetrics_port = 65534\n", "metrics_port"),
    ("max_message_bytes = 0\n", "max_message_bytes"),
    ("metrics_port = 70000\n", "metrics_port"),
    ('log_format = "xml"\n', "log_format"),
    ('log_level = "LOUD"\n', "log_level"),
    ('tls_cert = "/nonexistent/cert.pem"\ntls_key = "/nonexistent/key.pem"\n', "tls_cert"),
    ('auth_tokens_file = "/nonexistent/tokens"\n', "auth_tokens_file"),
    ("[limits]\nmax_attributes = 0\n", "limits.max_attributes"),
    ("encode_batch_max = -1\n", "encode_batch_max"),
    ("encode_batch_wait_ms = 5000\n", "encode_batch_wait_ms"),
    ('encode_precision = "fp16"\n', "encode_precision"),
    ("encode_batch_instances = -1\n", "encode_batch_instances"),
])
def test_bad_serving_keys_name_the_key(tmp_path, text, key):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(f, env={})


def test_serving_keys_from_env(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("a-token\n")
    cfg = load_config(env={"ETHICREC_MAX_QUEUE": "3", "ETHICREC_METRICS_PORT": "9100",
                           "ETHICREC_AUTH_TOKENS": "t1, t2", "ETHICREC_AUTH_TOKENS_FILE": str(tokens),
                           "ETHICREC_LOG_FORMAT": "json", "ETHICREC_ENCODE_PRECISION": "fp32"})
    assert (cfg.max_queue, cfg.metrics_port, cfg.log_format) == (3, 9100, "json")
    assert cfg.encode_precision == "fp32" and load_config(env={}).encode_precision == "auto"
    assert cfg.auth_tokens == ("t1", "t2") and cfg.auth_enabled
    assert "t1" not in repr(cfg)     # secrets stay out of logs and tracebacks


def test_cli_rejects_a_bad_certificate_before_loading_the_model(tmp_path):
    import subprocess
    import sys

    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    res = subprocess.run([sys.executable, "-m", "service", "--artifacts", str(tmp_path / "none"), "--config",
                          str(_tls_config(tmp_path))], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "tls_cert/tls_key" in res.stderr and "Traceback" not in res.stderr


def _tls_config(tmp_path) -> Path:
    f = tmp_path / "tls.toml"
    f.write_text(f'tls_cert = "{tmp_path / "cert.pem"}"\ntls_key = "{tmp_path / "key.pem"}"\n')
    return f
