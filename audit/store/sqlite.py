"""The SQLite audit store: one file, WAL mode, one global hash chain (the default, for one machine).

Every commit is one `BEGIN IMMEDIATE` transaction: SQLite's write lock serialises writers across processes
(a server's `processes`, a batch job pointed at the same file), and the chain's previous hash is read inside
that transaction, so one chain needs no coordination of its own. Durability: `synchronous` NORMAL survives
the writer being killed at any point, FULL also an OS crash (audit/log.py has the figures).

Schema versions (`PRAGMA user_version`): 0 = a log written before versions (migrated in place), 1 = the
decision table with chain columns, 2 = `writer`, `kind` and `payload` columns (who wrote a row; entries of
other kinds, audit/record.py). A file whose version is newer than SCHEMA_VERSION was written by a newer
ethicrec and is refused (SchemaTooNew) rather than written to.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from audit.record import COLUMNS, DECISION, GENESIS, NEUTRAL_DECISION, AuditRecord, candidate_entries, record_digest
from audit.store.base import SchemaTooNew, StoreError

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
    candidates     TEXT NOT NULL,   -- JSON columns {"item_id": [...], "group": [...], "rank": [...] (0 = not returned),
                                    -- "removed": [...]}; rows written before 2026-11-29: a list of such objects
    findings       TEXT NOT NULL,   -- JSON list of findings
    user_attributes TEXT NOT NULL DEFAULT '{}',  -- JSON: only the keys the policy's log.audit_attributes allow
    prev_hash      TEXT,            -- record_hash of the row before (64 zeros for the first); NULL = legacy row
    record_hash    TEXT             -- sha256 of canonical_bytes(this row incl. prev_hash); NULL = legacy row
);
CREATE INDEX IF NOT EXISTS audit_records_ts ON audit_records (ts);
"""
SCHEMA_VERSION = 2
#: Columns added by version 2, with their defaults (rows from before read as decisions of no named writer).
V2_COLUMNS = {"writer": "''", "kind": f"'{DECISION}'", "payload": "'{}'"}
ROW_COLUMNS = (*COLUMNS, "writer", "kind", "payload")
_INSERT = (f"INSERT INTO audit_records ({', '.join(ROW_COLUMNS)}, prev_hash, record_hash)"
           f" VALUES ({', '.join('?' * (len(ROW_COLUMNS) + 2))})")


def check_version(version: int, where: str) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(f"{where} has audit schema version {version}, newer than this ethicrec knows "
                           f"({SCHEMA_VERSION}): it was written by a newer release; upgrade before writing to it")


class SQLiteStore:
    """The file at `path` (created with its directory on `open`)."""

    shared = False

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL") -> None:
        self.path = Path(path)
        self.display = str(self.path)
        self._synchronous = synchronous
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._closed = False   # closed by its owner: a later commit fails (fail closed) instead of reopening

    @property
    def opened(self) -> bool:
        return self._conn is not None

    def open(self) -> None:
        if self._conn is not None:
            return
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
        try:
            check_version(conn.execute("PRAGMA user_version").fetchone()[0], str(self.path))
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("BEGIN IMMEDIATE")   # one migrator at a time
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            check_version(version, str(self.path))
            if version < SCHEMA_VERSION:
                for statement in SCHEMA.split(";\n"):   # (a comment in the table holds a ";")
                    if statement.strip():
                        conn.execute(statement)
                columns = {row[1] for row in conn.execute("PRAGMA table_info(audit_records)")}
                # Logs written before these columns existed; their old rows stay unchained (NULL hashes).
                if "user_attributes" not in columns:
                    conn.execute("ALTER TABLE audit_records ADD COLUMN user_attributes TEXT NOT NULL DEFAULT '{}'")
                for name in ("prev_hash", "record_hash"):
                    if name not in columns:
                        conn.execute(f"ALTER TABLE audit_records ADD COLUMN {name} TEXT")
                for name, default in V2_COLUMNS.items():
                    if name not in columns:
                        conn.execute(f"ALTER TABLE audit_records ADD COLUMN {name} TEXT NOT NULL DEFAULT {default}")
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            raise
        self._conn = conn

    def commit(self, rows: list[dict[str, Any]], *, writer: str = "", skip_existing: bool = False) -> int:
        """Chain and commit rows in one transaction; returns how many were inserted.

        prev_hash is read from the last row inside the write transaction rather than cached, because
        BEGIN IMMEDIATE is what serialises writers across processes (a batch run pointed at the service's
        log): a per-process cache would fork the chain. The lookup is one primary-key seek. `writer` is
        recorded with each row; SQLite keeps one chain for all of them.
        """
        if self._conn is None:
            if self._closed:
                raise StoreError(f"audit log {self.display} is closed")
            self.open()
        conn = self._conn
        assert conn is not None
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if skip_existing:
                    rows = [r for r in rows if conn.execute(
                        "SELECT 1 FROM audit_records WHERE audit_id = ?", (r["audit_id"],)).fetchone() is None]
                last = conn.execute(
                    "SELECT record_hash FROM audit_records ORDER BY seq DESC LIMIT 1").fetchone()
                prev = last[0] if last and last[0] else GENESIS
                params = []
                for row in rows:
                    digest = record_digest(row, prev)
                    kind = row.get("kind", DECISION)
                    if kind == DECISION:
                        params.append((*(row[c] for c in COLUMNS), writer, DECISION, "{}", prev, digest))
                    else:
                        full = {**NEUTRAL_DECISION, **row}
                        params.append((*(full[c] for c in COLUMNS), writer, kind, row["payload"], prev, digest))
                    prev = digest
                conn.executemany(_INSERT, params)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return len(params)

    def read(self, since: float | None = None, until: float | None = None,
             user_hashes: list[str] | None = None) -> Iterator[AuditRecord]:
        return read_sqlite(self.path, since, until, user_hashes)

    def key_id_counts(self) -> Counter:
        return key_ids_sqlite(self.path)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _ro(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise FileNotFoundError(f"audit log not found: {path}")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def read_sqlite(path: str | Path, since: float | None = None, until: float | None = None,
                user_hashes: list[str] | None = None) -> Iterator[AuditRecord]:
    """Decisions (oldest first), optionally within [since, until) and only those whose stored user hash is one
    of `user_hashes`. Read-only; does not verify the chain."""
    p = Path(path)
    conn = _ro(p)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(audit_records)")}
        if not columns:
            raise sqlite3.DatabaseError("no audit_records table")
        # Logs from before a column existed read as if it had its default.
        optional = {"user_attributes": "'{}'", "prev_hash": "NULL", "record_hash": "NULL", "writer": "''"}
        extra = ", ".join(name if name in columns else default for name, default in optional.items())
        sql = ("SELECT audit_id, ts, request_id, model_version, policy_version, user_hash, audit_mode, verdict,"
               f" top_k, returned_ids, removed, candidates, findings, {extra} FROM audit_records WHERE 1=1")
        args: list[Any] = []
        if "kind" in columns:
            sql += " AND kind = ?"
            args.append(DECISION)
        if user_hashes is not None:
            sql += f" AND user_hash IN ({', '.join('?' * len(user_hashes))})"
            args.extend(user_hashes)
        if since is not None:
            sql += " AND ts >= ?"
            args.append(since)
        if until is not None:
            sql += " AND ts < ?"
            args.append(until)
        for row in conn.execute(sql + " ORDER BY seq", args):
            yield record_from_row(row)
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{p} is not an ethicrec audit log: {exc}") from None
    finally:
        conn.close()


def record_from_row(row) -> AuditRecord:
    """An AuditRecord from (the 13 decision columns after audit_id.., user_attributes, prev, hash, writer)."""
    return AuditRecord(*row[:9], json.loads(row[9]), json.loads(row[10]), candidate_entries(json.loads(row[11])),
                       json.loads(row[12]), json.loads(row[13]), prev_hash=row[14], record_hash=row[15],
                       writer=row[16] or None)


def key_ids_sqlite(path: str | Path) -> Counter:
    p = Path(path)
    conn = _ro(p)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(audit_records)")}
        where = f" WHERE kind = '{DECISION}'" if "kind" in columns else ""
        rows = conn.execute("SELECT CASE WHEN user_hash LIKE 'hmac:%' THEN substr(user_hash, 6, 12) END AS kid,"
                            f" COUNT(*) FROM audit_records{where} GROUP BY kid").fetchall()
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{p} is not an ethicrec audit log: {exc}") from None
    finally:
        conn.close()
    return Counter({kid: n for kid, n in rows})
