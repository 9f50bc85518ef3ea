"""Bad audit-store configuration stops start-up with one line naming the key: an unparseable URL, an unknown
scheme, a URL without a password source, a password file others can read, a store whose schema is newer than
this release knows, a database that cannot be reached."""
import os
import subprocess
import sys

import psycopg
import pytest

from audit.store import SchemaTooNew, make_store
from recsys.errors import ConfigError
from service.config import ServiceConfig, load_config


@pytest.mark.parametrize("url, text", [
    ("postgresql://u@db:notaport/x", "not a valid PostgreSQL URL"),
    ("postgresql://u@db:5432/x?nosuchparam=1", "not a valid PostgreSQL URL"),
    ("postgresql://u@db:5432/", "names no database"),
    ("postgresql://db:5432/x", "names no user"),
    ("mysql://u@db/x", "unknown store mysql://"),
    ("postgresql://u@db:5432/x", "no password for u@db"),
])
def test_bad_store_urls_name_the_key(url, text, monkeypatch, tmp_path):
    for var in ("ETHICREC_AUDIT_STORE_PASSWORD", "ETHICREC_AUDIT_STORE_PASSWORD_FILE", "PGPASSWORD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="config key audit_store") as err:
        load_config(env={"ETHICREC_AUDIT_STORE": url})
    assert text in str(err.value) and "\n" not in str(err.value)


def test_password_sources(monkeypatch, tmp_path):
    for var in ("ETHICREC_AUDIT_STORE_PASSWORD", "PGPASSWORD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    pw.chmod(0o644)
    with pytest.raises(ConfigError, match="config key audit_store_password_file: .* accessible to its group"):
        ServiceConfig(audit_store="postgresql://u@db/x", audit_store_password_file=pw)
    pw.chmod(0o600)
    cfg = ServiceConfig(audit_store="postgresql://u@db/x", audit_store_password_file=pw)
    assert cfg.audit_postgres and cfg.audit_target == "postgresql://u@db/x"
    store = make_store(cfg.audit_target, password_file=pw)
    assert store.target.password == "secret" and "secret" not in store.display
    monkeypatch.setenv("ETHICREC_AUDIT_STORE_PASSWORD", "from-env")
    assert make_store("postgresql://u@db/x").target.password == "from-env"
    assert ServiceConfig(audit_store="postgresql://u@%2Frun%2Fpg/x").audit_postgres  # a socket dir: peer auth


def test_a_path_is_a_sqlite_store(tmp_path):
    cfg = load_config(env={"ETHICREC_AUDIT_STORE": str(tmp_path / "a.db")})
    assert not cfg.audit_postgres and cfg.audit_target == str(tmp_path / "a.db")


def test_a_newer_schema_is_refused(pg_url):
    store = make_store(pg_url)
    store.open()
    store.close()
    with psycopg.connect(pg_url, password=os.environ["ETHICREC_AUDIT_STORE_PASSWORD"], autocommit=True) as conn:
        conn.execute("INSERT INTO ethicrec_schema (version) VALUES (99)")
    with pytest.raises(SchemaTooNew, match="schema version 99, newer than this ethicrec knows"):
        make_store(pg_url).open()


def _start(*args, env=None):
    return subprocess.run([sys.executable, "-m", "service", *args], capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", **(env or {})))


def _one_line(res, text):
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 1 and len(lines) == 1 and text in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_server_start_up_stops_in_one_line(artifact_root, pg_url, postgres, tmp_path):
    base = ["--artifacts", str(artifact_root), "--port", "0", "--device", "cpu"]
    # Unparseable: before the model loads.
    _one_line(_start(*base, "--audit-store", "postgresql://u@db:x/y"), "config key audit_store: not a valid")
    # A schema from a newer release: found before the model loads (service/audit_trail.py probe_audit_store).
    store = make_store(pg_url)
    store.open()
    store.close()
    with psycopg.connect(pg_url, password=postgres.password, autocommit=True) as conn:
        conn.execute("INSERT INTO ethicrec_schema (version) VALUES (7)")
    res = _start(*base, "--audit-store", pg_url, env={"ETHICREC_AUDIT_JOURNAL_DIR": str(tmp_path / "j")})
    _one_line(res, "config key audit_store: audit store postgresql://ethicrec@")
    assert "schema version 7, newer than this ethicrec knows" in res.stderr
    # Wrong password: the database refuses the connection.
    res = _start(*base, "--audit-store", pg_url, env={"ETHICREC_AUDIT_STORE_PASSWORD": "wrong",
                                                       "ETHICREC_AUDIT_JOURNAL_DIR": str(tmp_path / "j")})
    _one_line(res, "config key audit_store: audit store postgresql://ethicrec@")
    assert "password authentication failed" in res.stderr
