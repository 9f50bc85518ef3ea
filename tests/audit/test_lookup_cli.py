"""`python -m audit.lookup`: one user's decisions, found with the key (old keys after a rotation, legacy
salted records with their salt); without the key, nothing to go on."""
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from audit.log import AuditLog, AuditRecord
from audit.pseudonym import KEY_ENV, legacy_pseudonym

OLD, NEW = "old-key-" + "o" * 32, "new-key-" + "n" * 32


def _rec(i: int, user_hash: str) -> AuditRecord:
    return AuditRecord(f"a{i}", 1_700_000_000.0 + i, f"req-{i}", "m1", "p1", user_hash, "ENFORCE", "PASS", 3,
                       ["x", "y"], [], [{"item_id": "x", "group": "g", "rank": 1, "removed": ""}], [])


def _key_file(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture()
def rotated_log(tmp_path):
    """A log with legacy salted records, then records under OLD, then (after a rotation) under NEW."""
    db = tmp_path / "var" / "audit.db"
    db.parent.mkdir()
    salt = b"legacy-salt-0123"
    log = AuditLog(db, key=OLD.encode())
    i = 0
    for user in ("7", "8"):                       # legacy records, as the earlier scheme wrote them
        log.append(_rec(i, legacy_pseudonym(salt, user)))
        i += 1
    for user in ("7", "8", "7"):
        log.append(_rec(i, log.hash_user(user)))
        i += 1
    log.close()
    log = AuditLog(db, key=NEW.encode())
    for user in ("7", "9"):
        log.append(_rec(i, log.hash_user(user)))
        i += 1
    log.close()
    keys = tmp_path / "keys"
    return db, _key_file(keys / "old.key", OLD), _key_file(keys / "new.key", NEW), _key_file(keys / "salt", "x"), salt


def _lookup(*args, env_key=None):
    env = {k: v for k, v in os.environ.items() if k not in (KEY_ENV, "ETHICREC_AUDIT_KEY_FILE")}
    if env_key:
        env[KEY_ENV] = env_key
    env["XDG_CONFIG_HOME"] = "/nonexistent-ethicrec-test"
    return subprocess.run([sys.executable, "-m", "audit.lookup", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_all_keys_find_all_of_a_users_records(rotated_log):
    db, old, new, salt_file, salt = rotated_log
    salt_file.write_bytes(salt)
    salt_file.chmod(0o600)
    res = _lookup("--log", str(db), "--user", "7", "--key-file", str(old), "--key-file", str(new),
                  "--legacy-salt-file", str(salt_file), "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert [r["request_id"] for r in data["records"]] == ["req-0", "req-2", "req-4", "req-5"]
    assert data["summary"]["key_ids_without_key"] == [] and data["summary"]["legacy_records_not_searched"] == 0


def test_only_the_new_key_says_what_it_could_not_search(rotated_log):
    db, old, new, *_ = rotated_log
    res = _lookup("--log", str(db), "--user", "7", env_key=NEW)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("20")] == ["a5"]
    assert "1 records for user '7'" in res.stdout
    assert "not searched: no key given for them" in res.stdout      # the OLD key's records
    assert "2 legacy records" in res.stdout


def test_without_any_key_it_refuses(rotated_log):
    db, *_ = rotated_log
    res = _lookup("--log", str(db), "--user", "7")
    assert res.returncode == 2 and "no audit key" in res.stderr and res.stdout == ""


def test_a_key_file_others_can_read_is_refused(rotated_log):
    db, old, *_ = rotated_log
    old.chmod(0o644)
    res = _lookup("--log", str(db), "--user", "7", "--key-file", str(old))
    assert res.returncode == 2 and "accessible to its group or to others" in res.stderr


def test_the_report_needs_no_key(rotated_log, tmp_path):
    """audit.report reads decisions, not user ids: it runs with no key anywhere in reach."""
    db, *_ = rotated_log
    env = {k: v for k, v in os.environ.items() if k not in (KEY_ENV, "ETHICREC_AUDIT_KEY_FILE")}
    env["XDG_CONFIG_HOME"] = "/nonexistent-ethicrec-test"
    res = subprocess.run([sys.executable, "-m", "audit.report", "--log", str(db), "--out", str(tmp_path / "rep"),
                          "--no-gate"], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "rep" / "report.json").is_file()
    conn = sqlite3.connect(db)
    assert all(h.startswith("hmac:") or len(h) == 64 for (h,) in conn.execute("SELECT user_hash FROM audit_records"))
    conn.close()
