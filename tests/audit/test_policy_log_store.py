"""Policy keys of the audit store: log.store (where the trail is kept) and log.journal_max_mb (the journal's
bound while the store is unreachable): defaults, validation naming the key, and how the server uses them."""
import dataclasses
from pathlib import Path

import pytest

from audit.policy import load_policy, parse_policy
from recsys.errors import ConfigError
from service.config import ServiceConfig
from service.audit_trail import audit_target, make_audit_log

ROOT = Path(__file__).resolve().parents[2]


def _log(**keys) -> dict:
    return {"version": "x", "log": keys}


def test_defaults():
    pol = load_policy()
    assert pol.log.store == "" and pol.log.journal_max_mb == 64


@pytest.mark.parametrize("keys, text", [
    ({"journal_max_mb": 0}, "policy key log.journal_max_mb must be between 1 and 65536; got 0"),
    ({"journal_max_mb": 70000}, "policy key log.journal_max_mb must be between 1 and 65536"),
    ({"journal_max_mb": "64"}, "log.journal_max_mb"),
    ({"store": 5}, "log.store"),
    ({"store": "postgresql://u@db:port/x"}, "policy key log.store: not a valid PostgreSQL URL"),
    ({"store": "postgresql://u@db:5432/"}, "policy key log.store: the URL names no database"),
    ({"store": "mysql://u@db/x"}, "policy key log.store: unknown store mysql://"),
])
def test_bad_keys_name_the_key(keys, text):
    with pytest.raises(ConfigError) as err:
        parse_policy(_log(**keys))
    assert text in str(err.value) and "\n" not in str(err.value)


def test_a_postgres_store_needs_no_password_to_read_the_policy(monkeypatch):
    # Tools that only read the policy (audit.report's bands) do not hold the database password.
    for var in ("ETHICREC_AUDIT_STORE_PASSWORD", "ETHICREC_AUDIT_STORE_PASSWORD_FILE", "PGPASSWORD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    pol = parse_policy(_log(store="postgresql://ethicrec@db:5432/audit"))
    assert pol.log.store == "postgresql://ethicrec@db:5432/audit"
    # ...but the server does, and says which key named the store.
    with pytest.raises(ConfigError, match="policy key log.store: no password for ethicrec@db"):
        make_audit_log(ServiceConfig(), pol, lazy=True)


def test_config_and_policy_must_not_name_different_stores(tmp_path):
    pol = dataclasses.replace(load_policy(), log=dataclasses.replace(load_policy().log, store=str(tmp_path / "p.db")))
    assert audit_target(ServiceConfig(audit_log=tmp_path / "c.db"), pol) == str(tmp_path / "p.db")
    assert audit_target(ServiceConfig(audit_store=str(tmp_path / "p.db")), pol) == str(tmp_path / "p.db")
    with pytest.raises(ConfigError, match=r"config key audit_store \(postgresql://u@db/x\) and policy key "
                                          r"log.store .* name different audit stores"):
        audit_target(ServiceConfig(audit_store="postgresql://u:secret@db/x"), pol)
    assert audit_target(ServiceConfig(audit_log=tmp_path / "c.db"), load_policy()) == str(tmp_path / "c.db")


def test_the_server_log_takes_the_journal_bound_from_the_policy(tmp_path):
    pol = dataclasses.replace(load_policy(), log=dataclasses.replace(load_policy().log, journal_max_mb=3))
    log = make_audit_log(ServiceConfig(audit_log=tmp_path / "a.db"), pol, lazy=True)
    assert log._journal_max == 3 << 20
    log.close()


def test_a_reload_cannot_move_the_trail_to_another_store(artifact_root, tmp_path):
    from service.server import load_app

    policy = tmp_path / "policy.toml"
    default = (ROOT / "audit" / "policies" / "default.toml").read_text()
    policy.write_text(default)
    app = load_app(ServiceConfig(artifacts=artifact_root, audit_log=tmp_path / "a.db", policy=policy, device="cpu"))
    try:
        policy.write_text(default.replace('store = ""', f'store = "{tmp_path / "elsewhere.db"}"'))
        res = app.reload()
        assert not res.ok and "policy key log.store names another audit store" in res.error
        assert app.audit_log.target == str(tmp_path / "a.db")
        policy.write_text(default.replace('store = ""', f'store = "{tmp_path / "a.db"}"'))
        assert app.reload().ok       # the same store, now named by the policy: fine
    finally:
        app.close()
