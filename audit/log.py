"""Append-only, hash-chained audit log: one SQLite row per audited request.

Written synchronously before the response leaves (an answer whose audit
record could not be written is not sent). WAL mode keeps readers (reports)
from blocking the writer.

Tamper evidence: every row stores `prev_hash` (the previous row's
`record_hash`, 64 zeros for the first) and `record_hash`, the SHA-256 of
`canonical_bytes(row)`, so editing, deleting or reordering a row breaks the
chain at that point (`python -m audit.verify`). There is no secret key: anyone
who can write the file can rewrite the chain from some row onwards, which only
a head hash kept somewhere else can expose (`audit.verify --expect-head`).

Crash safety: each append is one transaction (`BEGIN IMMEDIATE` … `COMMIT`),
so a killed writer leaves whole rows only, and `append` returns only after the
commit. With `synchronous=FULL` SQLite also fsyncs the WAL on every commit so
a committed record survives power loss, not just a killed process (NORMAL,
the default, survives only the latter). Measured on the 2-core dev VM (ext4,
500 appends of a 50-candidate record, median of 5): 0.66 ms per append with
FULL vs 0.29 ms with NORMAL (0.25 ms before chaining); under concurrent disk
load FULL rose to ~5 ms median inside Rank (bench/audit_overhead.py), which
is why the policy chooses and NORMAL is the default.

Rows written before the chain existed (no hash) are kept as they are; the
verifier reports them as an unchained legacy prefix rather than vouching for
them, and the first chained row after them starts again from 64 zeros.
"""
from __future__ import annotations

import hashlib
import json
import operator
import os
import secrets
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

# NORMAL (default): in WAL mode a committed record survives the process being killed at any point
# (tests/audit/test_log_kill.py), but not an OS crash or power loss. FULL: also survives those, at the price
# of an fsync per request (policy key log.synchronous).
SYNCHRONOUS = ("NORMAL", "FULL")

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
    user_attributes TEXT NOT NULL DEFAULT '{}',  -- JSON: only the keys the policy's log.audit_attributes allow
    prev_hash      TEXT,            -- record_hash of the row before (64 zeros for the first); NULL = legacy row
    record_hash    TEXT             -- sha256 of canonical_bytes(this row incl. prev_hash); NULL = legacy row
);
CREATE INDEX IF NOT EXISTS audit_records_ts ON audit_records (ts);
"""

#: The hashed columns, in table order; `seq` is left out because the chain itself fixes the order.
COLUMNS = ("audit_id", "ts", "request_id", "model_version", "policy_version", "user_hash", "audit_mode",
           "verdict", "top_k", "returned_ids", "removed", "candidates", "findings", "user_attributes")
GENESIS = "0" * 64
_TEXT = frozenset(COLUMNS) - {"ts", "top_k"}
_INSERT = (f"INSERT INTO audit_records ({', '.join(COLUMNS)}, prev_hash, record_hash)"
           f" VALUES ({', '.join('?' * (len(COLUMNS) + 2))})")


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
    # Set by read_records; ignored by append (the log computes them). Not part of equality: same content, same record.
    prev_hash: str | None = field(default=None, compare=False)
    record_hash: str | None = field(default=None, compare=False)


def canonical_bytes(row: dict[str, Any], prev_hash: str) -> bytes:
    """What `record_hash` is the SHA-256 of: the stored column values (JSON columns as their stored text,
    so verifying never depends on re-serialising) plus `prev_hash`, as JSON with sorted keys, no
    whitespace and ASCII escapes (Python's json.dumps; floats in its shortest round-trip form)."""
    payload = {name: row[name] for name in COLUMNS}
    payload["prev_hash"] = prev_hash
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def record_digest(row: dict[str, Any], prev_hash: str) -> str:
    return hashlib.sha256(canonical_bytes(row, prev_hash)).hexdigest()


def _stored_values(rec: AuditRecord) -> dict[str, Any]:
    """The values exactly as SQLite will store them, so the hash taken here matches the row read back:
    text columns must already be str (SQLite would silently turn 5 into '5'), ts is a double, top_k an int."""
    row: dict[str, Any] = {
        "audit_id": rec.audit_id, "ts": float(rec.ts), "request_id": rec.request_id,
        "model_version": rec.model_version, "policy_version": rec.policy_version, "user_hash": rec.user_hash,
        "audit_mode": rec.audit_mode, "verdict": rec.verdict, "top_k": operator.index(rec.top_k),
        "returned_ids": json.dumps(rec.returned_ids), "removed": json.dumps(rec.removed),
        "candidates": json.dumps(rec.candidates), "findings": json.dumps(rec.findings),
        "user_attributes": json.dumps(rec.user_attributes),
    }
    for name in _TEXT:
        if not isinstance(row[name], str):
            raise TypeError(f"AuditRecord.{name} must be str, got {type(row[name]).__name__}")
    row["top_k"] = int(row["top_k"])  # numpy ints -> int, which sqlite3 can bind
    return row


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
    def __init__(self, path: str | Path, salt: bytes | None = None, *, synchronous: str = "NORMAL") -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}; got {synchronous!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._salt = salt if salt is not None else load_or_create_salt(self.path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        self._conn.executescript(SCHEMA)
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(audit_records)")}
        # Logs written before these columns existed; their old rows stay unchained (NULL hashes).
        if "user_attributes" not in columns:
            self._conn.execute("ALTER TABLE audit_records ADD COLUMN user_attributes TEXT NOT NULL DEFAULT '{}'")
        for name in ("prev_hash", "record_hash"):
            if name not in columns:
                self._conn.execute(f"ALTER TABLE audit_records ADD COLUMN {name} TEXT")

    def hash_user(self, user_id: str) -> str:
        return hashlib.sha256(self._salt + b"\x00" + user_id.encode("utf-8")).hexdigest()

    def append(self, rec: AuditRecord) -> None:
        """Chain and commit one record; returns only once it is durable.

        prev_hash is read from the last row inside the write transaction rather than cached, because
        BEGIN IMMEDIATE is what serialises writers across processes (a batch run pointed at the service's
        log): a per-process cache would fork the chain. The lookup is one primary-key seek.
        """
        row = _stored_values(rec)
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                last = self._conn.execute(
                    "SELECT record_hash FROM audit_records ORDER BY seq DESC LIMIT 1").fetchone()
                prev = last[0] if last and last[0] else GENESIS
                self._conn.execute(_INSERT, (*row.values(), prev, record_digest(row, prev)))
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def append_many(self, recs: list[AuditRecord]) -> None:
        """Chain and commit several records in one transaction (one fsync under FULL); returns once all
        are durable, or raises with none of them written. Batch jobs commit a chunk's records this way."""
        rows = [_stored_values(rec) for rec in recs]
        if not rows:
            return
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                last = self._conn.execute(
                    "SELECT record_hash FROM audit_records ORDER BY seq DESC LIMIT 1").fetchone()
                prev = last[0] if last and last[0] else GENESIS
                params = []
                for row in rows:
                    digest = record_digest(row, prev)
                    params.append((*row.values(), prev, digest))
                    prev = digest
                self._conn.executemany(_INSERT, params)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def read_records(path: str | Path, since: float | None = None, until: float | None = None) -> Iterator[AuditRecord]:
    """Read records (oldest first), optionally within [since, until). Does not verify the chain."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"audit log not found: {p}")
    conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(audit_records)")}
        if not columns:
            raise sqlite3.DatabaseError("no audit_records table")
        # Logs from before a column existed read as if it had its default.
        optional = {"user_attributes": "'{}'", "prev_hash": "NULL", "record_hash": "NULL"}
        extra = ", ".join(name if name in columns else default for name, default in optional.items())
        sql = ("SELECT audit_id, ts, request_id, model_version, policy_version, user_hash, audit_mode, verdict,"
               f" top_k, returned_ids, removed, candidates, findings, {extra} FROM audit_records WHERE 1=1")
        args: list[float] = []
        if since is not None:
            sql += " AND ts >= ?"
            args.append(since)
        if until is not None:
            sql += " AND ts < ?"
            args.append(until)
        for row in conn.execute(sql + " ORDER BY seq", args):
            yield AuditRecord(*row[:9], json.loads(row[9]), json.loads(row[10]), json.loads(row[11]),
                              json.loads(row[12]), json.loads(row[13]), prev_hash=row[14], record_hash=row[15])
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{p} is not an ethicrec audit log: {exc}") from None
    finally:
        conn.close()
