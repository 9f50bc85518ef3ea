"""Audit stores: where the chained audit trail is kept (SQLite file or PostgreSQL database).

    store = make_store("var/audit.db")                       # SQLite (the default)
    store = make_store("postgresql://ethicrec@db:5432/audit")   # PostgreSQL; password from the environment

See audit/store/base.py for the interface, sqlite.py and postgres.py for the backends.
"""
from __future__ import annotations

import os
from pathlib import Path

from audit.store.base import AuditStore, SchemaTooNew, StoreError, StoreUnavailable, WindowSource
from audit.store.url import PASSWORD_ENV, PASSWORD_FILE_ENV, is_postgres, is_url, key_label, parse_postgres
from recsys.errors import ConfigError

__all__ = ["AuditStore", "SchemaTooNew", "StoreError", "StoreUnavailable", "WindowSource", "PASSWORD_ENV",
           "PASSWORD_FILE_ENV", "is_postgres", "is_url", "make_store", "check_target"]


def check_target(target: str | os.PathLike, *, key: str = "audit_store",
                 password_file: str | os.PathLike | None = None, need_password: bool = True) -> None:
    """ConfigError naming `key` unless `target` is a usable path or PostgreSQL URL (nothing is opened);
    `need_password`: also that a PostgreSQL URL has a password source."""
    text = str(target)
    if not text:
        raise ConfigError(f"{key_label(key)} must not be empty")
    if is_postgres(text):
        parse_postgres(text, password_file=password_file, key=key, need_password=need_password)
    elif is_url(text):
        raise ConfigError(f"{key_label(key)}: unknown store {text.split('://', 1)[0]}:// (a file path for SQLite, "
                          "or postgresql://USER@HOST:PORT/DBNAME)")


def make_store(target: str | os.PathLike, *, synchronous: str = "NORMAL", key: str = "audit_store",
               password_file: str | os.PathLike | None = None, **postgres_options) -> AuditStore:
    """The store `target` names (not opened yet); ConfigError for a bad target."""
    check_target(target, key=key, password_file=password_file)
    if is_postgres(str(target)):
        from audit.store.postgres import PostgresStore

        return PostgresStore(parse_postgres(str(target), password_file=password_file, key=key), **postgres_options)
    from audit.store.sqlite import SQLiteStore

    return SQLiteStore(Path(target), synchronous=synchronous)
