"""Append-only audit log: one SQLite row per audited request.

Written synchronously before the response leaves (an answer whose audit
record could not be written is not sent). WAL mode keeps readers (reports)
from blocking the writer.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_records (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    audit_id       TEXT NOT NULL UNIQUE,
    ts             REAL NOT NULL,
    request_id     TEXT NOT NULL,
    model_version  TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    user_hash      TEXT NOT NULL,
    audit_mode     TEXT NOT NULL,
    verdict        TEXT NOT NULL,
    top_k          INTEGER NOT NULL,
    returned_ids   TEXT NOT NULL,   -- JSON list, in rank order
    removed        TEXT NOT NULL,   -- JSON list of {item_id, reason}
    candidates     TEXT NOT NULL,   -- JSON list of {item_id, group, rank (0 = not returned), removed}
    findings       TEXT NOT NULL,   -- JSON list of findings
    user_attributes TEXT NOT NULL DEFAULT '{}'  -- JSON: only the keys the policy's log.audit_attributes allow
);
CREATE INDEX IF NOT EXISTS audit_records_ts ON audit_records (ts);
"""


@dataclass(frozen=True)
class AuditRecord:
    audit_id: str
    ts: float
    request_id: str
    model_version: str
    policy_version: str
    user_hash: str
    audit_mode: str
    verdict: str
    top_k: int
    returned_ids: list[str]
    removed: list[dict[str, str]]
    candidates: list[dict[str, Any]]
    findings: list[dict[str, Any]]
    user_attributes: dict[str, str] = field(default_factory=dict)


def load_or_create_salt(log_path: Path) -> bytes:
    """Salt for hashing user ids: ETHICREC_AUDIT_SALT, else a 0600 file beside the log."""
    env = os.environ.get("ETHICREC_AUDIT_SALT")
    if env:
        return env.encode()
    salt_path = log_path.with_name(log_path.name + ".salt")
    if salt_path.exists():
        return salt_path.read_bytes()
    salt = secrets.token_hex(16).encode()
    fd = os.open(salt_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(salt)
    return salt


class AuditLog:
    def __init__(self, path: str | Path, salt: bytes | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._salt = salt if salt is not None else load_or_create_salt(self.path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(audit_records)")}
        if "user_attributes" not in columns:  # logs written before the column existed
            self._conn.execute("ALTER TABLE audit_records ADD COLUMN user_attributes TEXT NOT NULL DEFAULT '{}'")

    def hash_user(self, user_id: str) -> str:
        return hashlib.sha256(self._salt + b"\x00" + user_id.encode("utf-8")).hexdigest()

    def append(self, rec: AuditRecord) -> None:
        row = (rec.audit_id, rec.ts, rec.request_id, rec.model_version, rec.policy_version, rec.user_hash,
               rec.audit_mode, rec.verdict, rec.top_k, json.dumps(rec.returned_ids), json.dumps(rec.removed),
               json.dumps(rec.candidates), json.dumps(rec.findings), json.dumps(rec.user_attributes))
        with self._lock:
            self._conn.execute(
                "INSERT INTO audit_records (audit_id, ts, request_id, model_version, policy_version, user_hash,"
                " audit_mode, verdict, top_k, returned_ids, removed, candidates, findings, user_attributes)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def read_records(path: str | Path, since: float | None = None, until: float | None = None) -> Iterator[AuditRecord]:
    """Read records (oldest first), optionally within [since, until)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"audit log not found: {p}")
    conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(audit_records)")}
        if not columns:
            raise sqlite3.DatabaseError("no audit_records table")
        attrs = "user_attributes" if "user_attributes" in columns else "'{}'"  # logs from before the column
        sql = ("SELECT audit_id, ts, request_id, model_version, policy_version, user_hash, audit_mode, verdict,"
               f" top_k, returned_ids, removed, candidates, findings, {attrs} FROM audit_records WHERE 1=1")
        args: list[float] = []
        if since is not None:
            sql += " AND ts >= ?"
            args.append(since)
        if until is not None:
            sql += " AND ts < ?"
            args.append(until)
        for row in conn.execute(sql + " ORDER BY seq", args):
            yield AuditRecord(*row[:9], json.loads(row[9]), json.loads(row[10]), json.loads(row[11]),
                              json.loads(row[12]), json.loads(row[13]) if len(row) > 13 else {})
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{p} is not an ethicrec audit log: {exc}") from None
    finally:
        conn.close()
