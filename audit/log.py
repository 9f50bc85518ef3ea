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

Journal mode (`AuditLog(..., journal=True)`, the server's default via the policy's `log.write = "journal"`):
`append` checks the record, encodes it as one JSON line (one orjson call) and copies it into a per-process,
memory-mapped journal file (in the page cache at once, so durable across a killed process like SQLite under
NORMAL; under FULL written with pwrite(2) and fsynced) and returns; a background thread turns journal lines into stored rows (the JSON columns' text), chains
them in append order, commits them to SQLite in batches, and then drops the journal. This takes the column
encoding, the SQLite transaction and the SHA-256 off the request thread (and one transaction serves many
concurrent requests); their CPU time is still spent in this process, on the ingest thread. A journal whose process died (its `flock` is free) is ingested by the next
`AuditLog` opened on the same file, skipping records that already reached SQLite, so nothing a caller was
told is written is lost. In-process readers call `flush()` first; others see records within about 20 ms
(INGEST_DELAY_S).
If ingestion fails (disk full, database locked past the timeout) every later `append` raises, so the audit
fails closed, and the journal keeps the records for the next start.

Rows written before the chain existed (no hash) are kept as they are; the
verifier reports them as an unchained legacy prefix rather than vouching for
them, and the first chained row after them starts again from 64 zeros.
"""
from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import json
import logging
import mmap
import operator
import os
import sqlite3
import threading
import time
import uuid

import numpy as np
import orjson
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from audit.pseudonym import LEGACY_SALT_ENV, AuditKey, resolve_key

_log = logging.getLogger("ethicrec.audit")

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
    candidates     TEXT NOT NULL,   -- JSON columns {"item_id": [...], "group": [...], "rank": [...] (0 = not returned),
                                    -- "removed": [...]}; rows written before 2026-11-29: a list of such objects
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
#: The fields of each candidate entry, stored column-wise (one JSON list per field): JSON for 100 candidates as
#: four lists costs about a fifth of 100 objects with repeated keys, on the request path.
CANDIDATE_FIELDS = ("item_id", "group", "rank", "removed")
#: Columns stored as JSON text.
JSON_COLUMNS = ("returned_ids", "removed", "candidates", "findings", "user_attributes")
_TEXT_SCALARS = tuple(name for name in COLUMNS if name not in JSON_COLUMNS and name not in ("ts", "top_k"))
_INSERT = (f"INSERT INTO audit_records ({', '.join(COLUMNS)}, prev_hash, record_hash)"
           f" VALUES ({', '.join('?' * (len(COLUMNS) + 2))})")


# Not frozen: one is built per request on the request path, and a frozen dataclass's __init__ (an
# object.__setattr__ per field, 16 fields) costs several times a plain one. The log never keeps the object.
# Slots: faster to build and to read (orjson encodes slotted dataclasses the same way).
@dataclass(slots=True)
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
    #: One entry per candidate with CANDIDATE_FIELDS; writers may instead pass the columns
    #: ({field: list}, what the audit stage does), readers always get the list of entries.
    candidates: list[dict[str, Any]] | dict[str, list[Any]]
    findings: list[dict[str, Any]]
    user_attributes: dict[str, str] = field(default_factory=dict)
    # Set by read_records; ignored by append (the log computes them). Not part of equality: same content, same record.
    prev_hash: str | None = field(default=None, compare=False)
    record_hash: str | None = field(default=None, compare=False)


_INT = frozenset((int,))


@functools.lru_cache(maxsize=32)
def _index_set(n: int) -> frozenset[int]:
    return frozenset(range(n))


def _all_indices(values: list[int], n: int) -> bool:
    """Every value (already known to be an int) indexes a list of n. For up to 4096 (a request's candidates or
    group labels) a subset test against {0, ..., n - 1}: one C pass, 1.2 vs 3.7 us for min() and max() over 100
    values (a float or bool equal to a valid index would pass it: callers check the types first)."""
    if n <= 4096:
        return _index_set(n).issuperset(values)
    return not values or (min(values) >= 0 and max(values) < n)


@dataclass(slots=True)
class CandidateCodes:
    """A record's candidates as the audit stage already holds them, for `AuditRecord.candidates`: the ids,
    the distinct group labels with each candidate's index into them, the returned positions in rank order
    and the removal reasons by position. Stored exactly as the equivalent columns (`columns()`); in journal
    mode the line carries this compact form and the ingest thread expands it, which keeps building and
    encoding four 100-entry lists off the request path. `group_codes` (a list or an integer numpy array)
    must index `group_labels`; positions must index `item_id`."""

    item_id: list[str]
    group_labels: list[str]
    group_codes: Any
    returned: list[int]
    removed: dict[int, str]

    def checked_codes(self) -> list[int]:
        """The group codes as a list, after checking that every code indexes the labels and every position
        the candidates (ValueError otherwise). Plain lists and builtins: numpy's reductions cost ~13 us of a
        ~90 us audit mid-request (their machinery is cold by then), list conversion and set tests far less."""
        ids, codes, n_labels = self.item_id, self.group_codes, len(self.group_labels)
        n = len(ids)
        if type(codes) is np.ndarray:
            ok = codes.dtype.kind in "iu"
            codes = codes.tolist()
        else:
            codes = list(codes)
            ok = set(map(type, codes)) <= _INT
        ok = ok and len(codes) == n and _all_indices(codes, n_labels)
        # Positions must be ints too: a float would pass the range check and fail only when ingested.
        ret, gone = self.returned, self.removed
        if ret:
            ok = ok and set(map(type, ret)) <= _INT and _all_indices(ret, n)
        if gone:
            ok = ok and set(map(type, gone)) <= _INT and _all_indices(list(gone), n)
        if not ok:
            raise ValueError("AuditRecord.candidates: CandidateCodes needs one group code per candidate, each an "
                             "index into group_labels, and returned/removed positions that index item_id")
        return codes

    def columns(self) -> dict[str, list[Any]]:
        return _expand_codes(self.item_id, self.group_labels, self.checked_codes(), self.returned,
                             list(self.removed.items()))


def _expand_codes(ids: list[str], labels: list[str], codes: list[int], returned: list[int],
                  removed: list[Any]) -> dict[str, list[Any]]:
    """The stored candidate columns from the compact form (`CandidateCodes`, checked, or its journal line)."""
    n = len(ids)
    rank = [0] * n
    for r, p in enumerate(returned, start=1):
        rank[p] = r
    reasons = [""] * n
    for p, reason in removed:
        reasons[p] = reason
    return {"item_id": list(ids), "group": [labels[c] for c in codes], "rank": rank, "removed": reasons}


def canonical_bytes(row: dict[str, Any], prev_hash: str) -> bytes:
    """What `record_hash` is the SHA-256 of: the stored column values (JSON columns as their stored text,
    so verifying never depends on re-serialising) plus `prev_hash`, as JSON with sorted keys, no
    whitespace and ASCII escapes (Python's json.dumps; floats in its shortest round-trip form)."""
    payload = {name: row[name] for name in COLUMNS}
    payload["prev_hash"] = prev_hash
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def record_digest(row: dict[str, Any], prev_hash: str) -> str:
    return hashlib.sha256(canonical_bytes(row, prev_hash)).hexdigest()


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):          # numpy scalars
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _json(obj: Any) -> str:
    """The stored text of a JSON column. orjson (compact, UTF-8, NaN as null) rather than json.dumps, for
    speed on the request path; the hash covers the stored text, so the encoder never needs to be
    reproduced, and readers use json.loads."""
    return orjson.dumps(obj, default=_json_default).decode("utf-8")


def _check_scalars(rec: AuditRecord) -> None:
    """Text columns must already be str (SQLite would silently turn 5 into '5'); ts a number, top_k an int."""
    # The audit stage's records pass this one expression (no loop, no getattr by name: it runs on every
    # request); anything else takes the checks below, which name the offending field.
    if (type(rec.audit_id) is str and type(rec.request_id) is str and type(rec.model_version) is str
            and type(rec.policy_version) is str and type(rec.user_hash) is str and type(rec.audit_mode) is str
            and type(rec.verdict) is str and type(rec.top_k) is int and type(rec.ts) is float):
        return
    for name in _TEXT_SCALARS:
        if not isinstance(getattr(rec, name), str):
            raise TypeError(f"AuditRecord.{name} must be str, got {type(getattr(rec, name)).__name__}")
    operator.index(rec.top_k)
    float(rec.ts)


def _checked_values(rec: AuditRecord) -> dict[str, Any]:
    """The record's column values in COLUMNS order, checked, with the JSON columns still as Python objects
    (candidates in column form); ts a double, top_k an int."""
    _check_scalars(rec)
    row: dict[str, Any] = {
        "audit_id": rec.audit_id, "ts": float(rec.ts), "request_id": rec.request_id,
        "model_version": rec.model_version, "policy_version": rec.policy_version, "user_hash": rec.user_hash,
        "audit_mode": rec.audit_mode, "verdict": rec.verdict, "top_k": int(operator.index(rec.top_k)),
        "returned_ids": rec.returned_ids, "removed": rec.removed, "candidates": candidate_columns(rec.candidates),
        "findings": rec.findings, "user_attributes": rec.user_attributes,
    }
    return row


def _journal_line(rec: AuditRecord) -> bytes:
    """The record as one journal line: the same checks as `_checked_values`, then orjson encodes the
    dataclass itself (no intermediate dict; the request path's only encoding). ts and top_k are coerced
    and the JSON columns' stored text is made when the line is ingested (`_journal_row`)."""
    _check_scalars(rec)
    cands = rec.candidates
    if type(cands) is CandidateCodes:
        return _compact_line(rec, cands)
    # Other writers may pass exactly the stored columns; anything else is converted (or refused) by
    # candidate_columns. Spelled out for the four fields: this runs on every request.
    if type(cands) is dict and len(cands) == len(CANDIDATE_FIELDS):
        ids, groups, ranks, removed = (cands.get("item_id"), cands.get("group"), cands.get("rank"),
                                       cands.get("removed"))
        ok = (type(ids) is list and type(groups) is list and type(ranks) is list and type(removed) is list
              and len(ids) == len(groups) == len(ranks) == len(removed))
    else:
        ok = False
    if not ok:
        rec = dataclasses.replace(rec, candidates=candidate_columns(cands))   # raises on a bad shape
    return orjson.dumps(rec, default=_json_default, option=orjson.OPT_APPEND_NEWLINE)


#: First element of a compact (positional) journal line; object lines are the earlier format.
_COMPACT_LINE = 2


def _compact_line(rec: AuditRecord, c: CandidateCodes) -> bytes:
    """The record as a positional JSON array in COLUMNS order after a format tag, with the candidates in
    `CandidateCodes` form: about 40 % of the object line's encoding time (no key strings, no per-candidate
    columns). Checked here, not at ingest, so that a bad record fails its own request instead of stopping
    ingestion for every later one."""
    return orjson.dumps(
        [_COMPACT_LINE, rec.audit_id, rec.ts, rec.request_id, rec.model_version, rec.policy_version, rec.user_hash,
         rec.audit_mode, rec.verdict, rec.top_k, rec.returned_ids, rec.removed,
         [c.item_id, c.group_labels, c.checked_codes(), c.returned, list(c.removed.items())], rec.findings,
         rec.user_attributes],
        default=_json_default, option=orjson.OPT_APPEND_NEWLINE)


def _encode_json_columns(row: dict[str, Any]) -> dict[str, Any]:
    for name in JSON_COLUMNS:
        row[name] = _json(row[name])
    return row


def _stored_values(rec: AuditRecord) -> dict[str, Any]:
    """The values exactly as SQLite will store them, so the hash taken here matches the row read back."""
    return _encode_json_columns(_checked_values(rec))


def candidate_columns(candidates: list[dict[str, Any]] | dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The stored (column-wise) form of a record's candidates; raises on missing or extra fields."""
    if isinstance(candidates, CandidateCodes):
        return candidates.columns()
    if isinstance(candidates, dict):
        cols = candidates
        if set(cols) != set(CANDIDATE_FIELDS) or len({len(v) for v in cols.values()}) > 1:
            raise ValueError(f"AuditRecord.candidates columns must be {', '.join(CANDIDATE_FIELDS)} of equal length")
        return {name: list(cols[name]) for name in CANDIDATE_FIELDS}
    for entry in candidates:
        if set(entry) != set(CANDIDATE_FIELDS):
            raise ValueError(f"AuditRecord.candidates entries must have exactly {', '.join(CANDIDATE_FIELDS)};"
                             f" got {sorted(entry)}")
    return {name: [entry[name] for entry in candidates] for name in CANDIDATE_FIELDS}


def candidate_entries(stored: list[dict[str, Any]] | dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Stored candidates back as one dict per candidate (rows from before the column form are already so)."""
    if isinstance(stored, list):
        return stored
    return [dict(zip(CANDIDATE_FIELDS, values)) for values in zip(*(stored[name] for name in CANDIDATE_FIELDS))]


def _warn_legacy_salt(log_path: Path) -> None:
    """The earlier scheme kept its salt beside the log, which makes the legacy user hashes in this log
    reversible for whoever holds the directory; say so (the log itself is never rewritten)."""
    salt = log_path.with_name(log_path.name + ".salt")
    if salt.exists():
        _log.warning("%s holds the salt of this log's legacy user hashes (records written before keyed "
                     "pseudonyms): anyone who can read it can recover those user ids by trying candidates. Move it "
                     "out of the log's directory, to where the audit key is kept (audit.lookup "
                     "--legacy-salt-file reads it there), or delete it", salt)
    if os.environ.get(LEGACY_SALT_ENV):
        _log.warning("%s is set but no longer used for new records (they use the audit key); audit.lookup "
                     "--legacy-salt-env reads it for records written before", LEGACY_SALT_ENV)


class AuditLog:
    """The audit log at `path`.

    User ids are stored pseudonymised with the audit key (audit/pseudonym.py): `key` (an `AuditKey`, or
    the key's bytes; `salt` is the earlier name of the same argument, for embedding and tests), else the
    configured key (`ETHICREC_AUDIT_KEY`, `key_file`, or the default key file, created if missing).

    `lazy`: create nothing on disk yet (not the database, not a default key file); `open()` does, and so
    does the first write or the first `hash_user`. A server opens its log once its port is bound, a batch
    job once its input has been checked, so a start-up that fails leaves nothing behind. A misconfigured
    key (a key file that may not be read, a short ETHICREC_AUDIT_KEY) raises ConfigError here even so.
    """

    def __init__(self, path: str | Path, salt: bytes | None = None, *, key: AuditKey | bytes | None = None,
                 key_file: str | Path | None = None, synchronous: str = "NORMAL", journal: bool = False,
                 lazy: bool = False) -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}; got {synchronous!r}")
        self.path = Path(path)
        given = key if key is not None else salt
        self._key_file = Path(key_file) if key_file is not None else None
        if isinstance(given, AuditKey):
            self._key: AuditKey | None = given
        elif given is not None:
            self._key = AuditKey(bytes(given), "given")
        else:
            self._key = resolve_key(self.path, self._key_file, create=False)   # checks now, creates later
        self._user_hashes: dict[str, str] = {}
        self._full = synchronous == "FULL"
        self._synchronous = synchronous
        self._want_journal = journal
        self._lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._journal: _Journal | None = None
        self.recovered = 0
        if not lazy:
            self.open()

    @property
    def key(self) -> AuditKey:
        """The pseudonymisation key (created now if it is the default key file and does not exist yet)."""
        if self._key is None:
            with self._open_lock:
                if self._key is None:
                    self._key = resolve_key(self.path, self._key_file, create=True)
        return self._key   # type: ignore[return-value]

    @property
    def opened(self) -> bool:
        return self._conn is not None

    def open(self) -> "AuditLog":
        """Create (or open) the database, ingest dead processes' journals, start this one's; idempotent."""
        with self._open_lock:
            if self._conn is not None:
                return self
            if self._key is None:
                self._key = resolve_key(self.path, self._key_file, create=True)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.executescript(SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(audit_records)")}
            # Logs written before these columns existed; their old rows stay unchained (NULL hashes).
            if "user_attributes" not in columns:
                conn.execute("ALTER TABLE audit_records ADD COLUMN user_attributes TEXT NOT NULL DEFAULT '{}'")
            for name in ("prev_hash", "record_hash"):
                if name not in columns:
                    conn.execute(f"ALTER TABLE audit_records ADD COLUMN {name} TEXT")
            self._conn = conn
            _warn_legacy_salt(self.path)
            self.recovered = self._recover_journals()
            if self._want_journal:
                self._journal = _Journal(self)
        return self

    def hash_user(self, user_id: str) -> str:
        # Cached: the same users come back request after request (a bounded dict; cleared when full).
        digest = self._user_hashes.get(user_id)
        if digest is None:
            if len(self._user_hashes) >= 100_000:
                self._user_hashes.clear()
            digest = self._user_hashes[user_id] = self.key.pseudonym(user_id)
        return digest

    def append(self, rec: AuditRecord) -> None:
        """Record one decision; returns only once it survives this process being killed (and, under FULL,
        an OS crash). Direct mode commits it to SQLite here; journal mode appends it to the journal."""
        if self._journal is not None:
            self._journal.append(_journal_line(rec))
        else:
            if self._conn is None:
                self.open()
                if self._journal is not None:
                    self._journal.append(_journal_line(rec))
                    return
            self._commit([_stored_values(rec)])

    def append_many(self, recs: list[AuditRecord], *, skip_existing: bool = False) -> int:
        """Chain and commit several records in one transaction (one fsync under FULL); returns once all
        are durable, or raises with none of them written. Batch jobs commit a chunk's records this way
        (straight to SQLite, also in journal mode: it is one transaction already).

        `skip_existing`: leave out records whose audit_id the log already holds (inside the same
        transaction), so writing the same records again is a no-op: a batch job's rerun of a chunk whose
        records were committed before it was killed. Returns how many were written."""
        rows = [_stored_values(rec) for rec in recs]
        return self._commit(rows, skip_existing=skip_existing) if rows else 0

    def flush(self) -> None:
        """Wait until every record appended so far is in SQLite (journal mode; a no-op otherwise)."""
        if self._journal is not None:
            self._journal.flush()

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
        with self._lock:
            if self._conn is not None:
                self._conn.close()

    def _commit(self, rows: list[dict[str, Any]], *, skip_existing: bool = False) -> int:
        """Chain and commit rows in one transaction; returns how many were inserted.

        prev_hash is read from the last row inside the write transaction rather than cached, because
        BEGIN IMMEDIATE is what serialises writers across processes (a batch run pointed at the service's
        log): a per-process cache would fork the chain. The lookup is one primary-key seek.
        """
        if self._conn is None:
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
                    params.append((*row.values(), prev, digest))
                    prev = digest
                conn.executemany(_INSERT, params)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return len(params)

    def _recover_journals(self) -> int:
        """Ingest the journals of processes that died before all their records reached SQLite; returns the
        number of records that were missing from SQLite (now added)."""
        n = 0
        for jpath in sorted(self.path.parent.glob(self.path.name + JOURNAL_SUFFIX + "*")):
            try:
                fd = os.open(jpath, os.O_RDWR)
            except FileNotFoundError:
                continue  # another opener got there first
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its process is alive and ingests it itself
                if not jpath.exists():
                    continue
                with os.fdopen(os.dup(fd), "rb") as f:
                    rows = _journal_rows(f.read())
                if rows:
                    n += self._commit(rows, skip_existing=True)
                jpath.unlink()
            finally:
                os.close(fd)
        return n


#: Journal files sit beside the log: `<log name>.journal-<pid>-<random>`.
JOURNAL_SUFFIX = ".journal-"
#: A journal is replaced by a fresh one once this many bytes were written to it and its records ingested.
JOURNAL_ROTATE_BYTES = 4 << 20
#: Under synchronous=NORMAL a journal file is created this long (sparse, zero-filled) and memory-mapped;
#: records are copied into the mapping, and a record that would run past it is written with pwrite(2).
JOURNAL_MAP_BYTES = 8 << 20
#: The ingest thread keeps this much of the mapping past the last record populated writable
#: (madvise MADV_POPULATE_WRITE), so the request path's copy does not take the first-write page faults
#: (tight loop, 2.7 KB records into a fresh mapping: 5.2-6.0 us each; pre-faulted: 0.4-0.7 us).
JOURNAL_POPULATE_AHEAD = 256 << 10
#: Linux's MADV_POPULATE_WRITE (5.14+); Python 3.11's mmap module does not name it.
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)
#: The ingest thread gathers records for up to this long (or this many) before one transaction: it holds
#: the GIL while it chains and encodes, so waking it per record would stall request threads more often.
INGEST_DELAY_S = 0.02
INGEST_BATCH = 256


def _journal_rows(data: bytes) -> list[dict[str, Any]]:
    """The complete lines of a journal as stored values; a torn last line belongs to an append that never
    returned. A memory-mapped journal is zero-filled past its last record (JSON lines never hold a NUL)."""
    end = data.find(b"\0")
    if end >= 0:
        data = data[:end]
    lines = data.split(b"\n")
    return [_journal_row(line) for line in lines[:-1] if line]


def _journal_row(line: bytes) -> dict[str, Any]:
    """One journal line as the values SQLite stores. Lines hold the JSON columns as JSON values, encoded
    once on the request path: the audit stage's records as a positional array (`_compact_line`, the
    candidates as `CandidateCodes`, expanded here), other writers' as an object; journals written before
    2026-11-29 hold the columns as their stored text already.
    orjson reads back exactly what it wrote (floats round-trip), so the stored text is the same as
    direct mode's `_json` of the original objects."""
    obj = orjson.loads(line)
    if type(obj) is list:   # compact line (`_compact_line`)
        if obj[0] != _COMPACT_LINE:
            raise ValueError(f"unknown journal line format {obj[0]!r}")
        row = dict(zip(COLUMNS, obj[1:]))
        row["candidates"] = _expand_codes(*row["candidates"])
        row["ts"], row["top_k"] = float(row["ts"]), int(row["top_k"])
        return _encode_json_columns(row)
    row = {name: obj[name] for name in COLUMNS}
    if isinstance(row["returned_ids"], str):
        return row
    row["ts"], row["top_k"] = float(row["ts"]), int(row["top_k"])
    return _encode_json_columns(row)


class _Journal:
    """The request path's half of journal mode: each record copied into the journal file, ingestion in a
    thread.

    Under synchronous=NORMAL the file is memory-mapped and a record is a memcpy into the shared mapping:
    the bytes are in the page cache at once, so they survive the process being killed exactly as after a
    write(2), and the request thread does not release the GIL here (after a write(2) it often had to wait
    for the ingest thread or gRPC's threads to give the GIL back). The ingest thread pre-faults the mapping
    ahead of the records (`_populate_ahead`), since the first write to each page is a page fault costing
    more than the copy. Measured inside the audit stage (in-process pipeline, median): 18-20 us per record
    with write(2), 4.9 us now. Under FULL every record is written with pwrite(2) and fdatasync'd."""

    def __init__(self, log: AuditLog) -> None:
        self._log = log
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._pending: list[bytes] = []   # journal lines not yet in SQLite
        self._appended = 0          # records appended so far (sequence numbers)
        self._ingested = 0          # records committed to SQLite so far
        self._error: BaseException | None = None
        self._closing = False
        self._waiters = 0           # flush() callers waiting: ingest now instead of gathering
        self._path, self._fd, self._map = self._open_new()
        self._bytes = 0
        self._populated = 0          # bytes of the current mapping populated writable
        self._can_populate = True    # False once the kernel refuses MADV_POPULATE_WRITE
        self._populate_ahead()
        self._thread = threading.Thread(target=self._run, name="audit-log-ingest", daemon=True)
        self._thread.start()

    def _open_new(self) -> tuple[Path, int, mmap.mmap | None]:
        path = self._log.path.with_name(f"{self._log.path.name}{JOURNAL_SUFFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # held for the file's life: recovery leaves live journals alone
        if self._log._full:
            return path, fd, None
        os.ftruncate(fd, JOURNAL_MAP_BYTES)
        return path, fd, mmap.mmap(fd, JOURNAL_MAP_BYTES, flags=mmap.MAP_SHARED)

    def _populate_ahead(self) -> None:
        """Pre-fault the next JOURNAL_POPULATE_AHEAD bytes of the mapping (ingest thread and start-up only).
        It changes no byte, so it needs no lock against a concurrent append."""
        m = self._map
        if m is None or not self._can_populate:
            return
        target = min(len(m), self._bytes + JOURNAL_POPULATE_AHEAD)
        if target <= self._populated:
            return
        start = self._populated - self._populated % mmap.PAGESIZE
        try:
            m.madvise(_MADV_POPULATE_WRITE, start, target - start)
        except Exception:   # an older kernel (EINVAL), or anything else: appends take the page faults themselves
            self._can_populate = False
            return
        self._populated = target

    def append(self, data: bytes) -> None:
        """`data` as `_journal_line` gives it; the ingest thread turns the line into the stored values
        (`_journal_row`), so the request thread does one orjson call per record."""
        with self._lock:   # the condition's own lock: Condition.__enter__ is a Python-level call
            if self._error is not None:
                raise RuntimeError(f"audit log ingestion failed earlier ({self._error}); records are kept in "
                                   f"the journal beside {self._log.path}") from self._error
            if self._closing:
                raise RuntimeError("audit log is closed")
            start = self._bytes
            end = start + len(data)
            if self._map is not None and end <= len(self._map):
                self._map[start:end] = data
            else:
                view = memoryview(data)
                while view:
                    n = os.pwrite(self._fd, view, start)
                    view, start = view[n:], start + n
                if self._log._full:
                    os.fdatasync(self._fd)
            self._bytes = end
            self._pending.append(data)
            self._appended += 1
            if len(self._pending) == 1 or len(self._pending) >= INGEST_BATCH:
                self._cond.notify_all()

    def flush(self) -> None:
        with self._cond:
            target = self._appended
            self._waiters += 1
            self._cond.notify_all()
            try:
                while self._ingested < target and self._error is None:
                    self._cond.wait()
            finally:
                self._waiters -= 1
            if self._error is not None:
                raise RuntimeError(f"audit log ingestion failed ({self._error})") from self._error

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        with self._cond:
            if self._error is None and self._ingested == self._appended:
                self._path.unlink(missing_ok=True)
            if self._map is not None:
                self._map.close()
            os.close(self._fd)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                deadline = time.monotonic() + INGEST_DELAY_S
                while len(self._pending) < INGEST_BATCH and not self._closing and not self._waiters:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if not self._pending:
                    return  # closing, all ingested
                batch, self._pending = self._pending, []
                old = None
                if self._bytes >= JOURNAL_ROTATE_BYTES:
                    # Every record in the old file is in `batch` or already ingested: drop it after the commit.
                    old = (self._path, self._fd, self._map)
                    self._path, self._fd, self._map = self._open_new()
                    self._bytes = self._populated = 0
            try:
                self._log._commit([_journal_row(line) for line in batch])
            except BaseException as exc:  # noqa: BLE001 - surfaced to every later append (fail closed)
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                return
            if old is not None:
                old[0].unlink(missing_ok=True)  # before close: the flock keeps recovery away until it is gone
                if old[2] is not None:
                    old[2].close()
                os.close(old[1])
            with self._cond:
                self._ingested += len(batch)
                self._cond.notify_all()
            self._populate_ahead()


def read_records(path: str | Path, since: float | None = None, until: float | None = None,
                 user_hashes: list[str] | None = None) -> Iterator[AuditRecord]:
    """Read records (oldest first), optionally within [since, until) and only those whose stored user hash
    is one of `user_hashes` (see audit.lookup). Does not verify the chain."""
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
        args: list[Any] = []
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
            yield AuditRecord(*row[:9], json.loads(row[9]), json.loads(row[10]),
                              candidate_entries(json.loads(row[11])), json.loads(row[12]), json.loads(row[13]),
                              prev_hash=row[14], record_hash=row[15])
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{p} is not an ethicrec audit log: {exc}") from None
    finally:
        conn.close()
