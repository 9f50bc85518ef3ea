"""User ids in the audit log are HMAC-SHA256 under a key kept away from the log (audit/pseudonym.py)."""
import hashlib
import logging
import os
import shutil
import stat

import pytest

from audit.log import AuditLog, AuditRecord, read_records
from audit.pseudonym import KEY_ENV, AuditKey, default_key_path, key_id_of, legacy_pseudonym, resolve_key
from recsys.errors import ConfigError

KEY = "k" * 40


def _rec(i: int, user_hash: str) -> AuditRecord:
    return AuditRecord(f"a{i}", float(i), f"r{i}", "m1", "p1", user_hash, "ENFORCE", "PASS", 10, ["x"], [],
                       [{"item_id": "x", "group": "g", "rank": 1, "removed": ""}], [])


@pytest.fixture()
def no_env_key(monkeypatch, tmp_path):
    """No ETHICREC_AUDIT_KEY and a private XDG_CONFIG_HOME, as on a fresh machine."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv("ETHICREC_AUDIT_KEY_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home-config"))
    return tmp_path / "home-config" / "ethicrec" / "audit.key"


def test_pseudonyms_are_keyed_and_carry_the_key_id(tmp_path):
    a = AuditLog(tmp_path / "a.db", key=b"one" * 11)
    b = AuditLog(tmp_path / "b.db", key=b"two" * 11)
    ha, hb = a.hash_user("42"), b.hash_user("42")
    assert ha != hb and "42" not in ha.split(":", 2)[2]
    assert ha == a.hash_user("42")
    assert ha.startswith("hmac:") and key_id_of(ha) == a.key.key_id and key_id_of(hb) == b.key.key_id
    import hmac

    assert ha.split(":")[2] == hmac.new(b"one" * 11, b"42", hashlib.sha256).hexdigest()
    assert key_id_of("ab" * 32) is None   # a legacy salted hash
    a.close(), b.close()


def test_default_key_is_created_outside_the_log_directory_and_private(no_env_key, tmp_path):
    log_dir = tmp_path / "var"
    first = AuditLog(log_dir / "audit.db")
    h = first.hash_user("u")
    first.close()
    assert no_env_key == default_key_path() and no_env_key.is_file()
    assert stat.S_IMODE(no_env_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(no_env_key.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in log_dir.iterdir() if not p.name.startswith("audit.db-")) == ["audit.db"]
    again = AuditLog(log_dir / "audit.db")
    assert again.hash_user("u") == h     # the same key the next time
    again.close()


def test_holding_the_log_directory_is_not_enough_to_reverse_ids(no_env_key, tmp_path):
    """The attack from issue 26: with everything in the log's directory, try user ids 0..2000 as the key,
    salt or both (the earlier scheme's salt file sat there). None comes back."""
    log = AuditLog(tmp_path / "var" / "audit.db")
    users = [str(u) for u in range(0, 2000, 61)]
    for i, u in enumerate(users):
        log.append(_rec(i, log.hash_user(u)))
    log.close()
    stolen = tmp_path / "stolen"
    shutil.copytree(tmp_path / "var", stolen)
    stored = {r.user_hash for r in read_records(stolen / "audit.db")}
    material = [p.read_bytes() for p in stolen.iterdir() if p.is_file()]
    recovered = set()
    for guess in map(str, range(2001)):
        for m in material:
            for secret in (m, m.strip()):
                if AuditKey(secret).pseudonym(guess) in stored or legacy_pseudonym(secret, guess) in stored:
                    recovered.add(guess)
    assert not recovered
    # With the key (a reviewer), every one of them is found.
    key = resolve_key(tmp_path / "var" / "audit.db")
    assert {u for u in map(str, range(2001)) if key.pseudonym(u) in stored} == set(users)


@pytest.mark.parametrize("where", ["log_dir", "below_log_dir"])
def test_a_key_file_in_the_log_directory_is_refused(tmp_path, monkeypatch, where):
    monkeypatch.delenv(KEY_ENV, raising=False)
    key = tmp_path / "var" / ("audit.key" if where == "log_dir" else "keys/audit.key")
    key.parent.mkdir(parents=True)
    key.write_text(KEY)
    key.chmod(0o600)
    with pytest.raises(ConfigError, match="lies in the audit log's directory"):
        AuditLog(tmp_path / "var" / "audit.db", key_file=key)
    assert not (tmp_path / "var" / "audit.db").exists()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o620])
def test_a_key_file_others_can_access_is_refused(tmp_path, monkeypatch, mode):
    monkeypatch.delenv(KEY_ENV, raising=False)
    key = tmp_path / "secrets" / "audit.key"
    key.parent.mkdir()
    key.write_text(KEY)
    key.chmod(mode)
    with pytest.raises(ConfigError, match="accessible to its group or to others"):
        AuditLog(tmp_path / "var" / "audit.db", key_file=key)
    key.chmod(0o600)
    log = AuditLog(tmp_path / "var" / "audit.db", key_file=key)
    assert log.key.source == str(key)
    log.close()


def test_short_or_missing_keys_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "too-short")
    with pytest.raises(ConfigError, match="at least 32 characters"):
        AuditLog(tmp_path / "a.db")
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ConfigError, match="not found"):
        AuditLog(tmp_path / "var" / "a.db", key_file=tmp_path / "secrets" / "nope.key")


def test_the_environment_key_wins(tmp_path, monkeypatch, no_env_key):
    monkeypatch.setenv(KEY_ENV, KEY)
    log = AuditLog(tmp_path / "a.db")
    assert log.key.source == KEY_ENV and log.key == AuditKey(KEY.encode(), KEY_ENV)
    assert not no_env_key.exists()
    log.close()


def test_lazy_log_creates_nothing_until_used(no_env_key, tmp_path):
    log = AuditLog(tmp_path / "var" / "audit.db", lazy=True)
    assert not (tmp_path / "var").exists() and not no_env_key.exists()
    log.close()
    assert not (tmp_path / "var").exists()
    log = AuditLog(tmp_path / "var" / "audit.db", lazy=True)
    log.append(_rec(1, log.hash_user("u")))
    log.close()
    assert no_env_key.exists() and [r.audit_id for r in read_records(tmp_path / "var" / "audit.db")] == ["a1"]


def test_a_legacy_salt_beside_the_log_is_warned_about(tmp_path, caplog):
    (tmp_path / "audit.db.salt").write_bytes(os.urandom(16).hex().encode())
    with caplog.at_level(logging.WARNING, logger="ethicrec.audit"):
        AuditLog(tmp_path / "audit.db", key=KEY.encode()).close()
    assert any("legacy user hashes" in r.getMessage() for r in caplog.records)
