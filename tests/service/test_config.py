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
