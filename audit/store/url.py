"""Which store a setting names, checked before anything is opened.

`audit_store` (config), `ETHICREC_AUDIT_STORE`, `--audit-store`/`--store`: a path is a SQLite file; a
`postgresql://` (or `postgres://`) URL is a PostgreSQL database. The password of a PostgreSQL store should not
sit in the URL (config files get committed, URLs get logged): it comes from `ETHICREC_AUDIT_STORE_PASSWORD`,
the file named by `audit_store_password_file` / `ETHICREC_AUDIT_STORE_PASSWORD_FILE` (0600, like the audit
key), libpq's own `PGPASSWORD` or password file, or the URL as a last resort. Any problem is a ConfigError of
one line naming the key.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from recsys.errors import ConfigError

PASSWORD_ENV = "ETHICREC_AUDIT_STORE_PASSWORD"
PASSWORD_FILE_ENV = "ETHICREC_AUDIT_STORE_PASSWORD_FILE"
SCHEMES = ("postgresql", "postgres")


def is_url(target: str | os.PathLike) -> bool:
    """True for anything that looks like scheme://… (a URL, even one we do not support)."""
    s = str(target)
    return "://" in s and s.split("://", 1)[0].replace("+", "").isalpha()


def is_postgres(target: str | os.PathLike | None) -> bool:
    return target is not None and str(target).split("://", 1)[0] in SCHEMES and "://" in str(target)


@dataclass(frozen=True)
class PostgresTarget:
    """A checked PostgreSQL store: the connection parameters (password apart) and a display form."""

    conninfo: str = field(repr=False)       # libpq keyword/value string, without the password
    password: str | None = field(repr=False)
    display: str                            # postgresql://user@host:port/dbname (no password)


def _read_password_file(path: Path, key: str) -> str:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"config key {key}: {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"config key {key}: {path} is not a regular file")
    if st.st_mode & 0o077:
        raise ConfigError(f"config key {key}: {path} is accessible to its group or others "
                          f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 {path}")
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise ConfigError(f"config key {key}: {path} is empty")
    return text


def _pgpass_exists(env: dict[str, str]) -> bool:
    path = env.get("PGPASSFILE") or str(Path.home() / ".pgpass")
    return Path(path).is_file()


def key_label(key: str) -> str:
    """How an error names the setting: `config key audit_store`, or `key` as given when it says more
    (`policy key log.store`)."""
    return key if " " in key else f"config key {key}"


def parse_postgres(url: str, *, password_file: str | os.PathLike | None = None, key: str = "audit_store",
                   env: dict[str, str] | None = None, need_password: bool = True) -> PostgresTarget:
    """ConfigError (naming `key`) for an unparseable URL, a missing database name or (with `need_password`)
    no password source."""
    env = os.environ if env is None else env
    label = key_label(key)
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo
    except ImportError:  # pragma: no cover - a dependency
        raise ConfigError(f"{label}: a PostgreSQL store needs psycopg (pip install 'psycopg[binary,pool]')") from None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        params = conninfo_to_dict(url)
    except Exception as exc:  # psycopg.ProgrammingError, ValueError
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{label}: not a valid PostgreSQL URL ({msg})") from None
    if not parts.hostname and not params.get("host"):
        raise ConfigError(f"{label}: the URL names no host (postgresql://USER@HOST:PORT/DBNAME)")
    if not params.get("dbname"):
        raise ConfigError(f"{label}: the URL names no database (postgresql://USER@HOST:PORT/DBNAME)")
    if not params.get("user"):
        raise ConfigError(f"{label}: the URL names no user (postgresql://USER@HOST:PORT/DBNAME)")
    password = params.pop("password", None)
    file_key = "audit_store_password_file"
    pw_file = password_file or env.get(PASSWORD_FILE_ENV)
    if env.get(PASSWORD_ENV):
        password = env[PASSWORD_ENV]
    elif pw_file:
        password = _read_password_file(Path(pw_file), file_key)
    host = str(params.get("host", ""))
    socket_only = bool(host) and all(h.startswith("/") for h in host.split(","))
    if (need_password and password is None and not socket_only and not env.get("PGPASSWORD") and not _pgpass_exists(env)
            and not params.get("sslcert")):
        raise ConfigError(f"{label}: no password for {params['user']}@{host}: set {PASSWORD_ENV} or "
                          f"{file_key} (a file, mode 0600)")
    port = params.get("port")
    display = f"postgresql://{params['user']}@{host}{':' + str(port) if port else ''}/{params['dbname']}"
    return PostgresTarget(make_conninfo(**params), password, display)
