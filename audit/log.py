"""Append-only, hash-chained audit log: one row per audited request, in an audit store.

Written synchronously before the response leaves (an answer whose audit
record could not be written is not sent). Where rows are kept is the store's
business (audit/store/): a SQLite file (the default, one machine; WAL mode keeps
readers from blocking the writer) or a PostgreSQL database shared by many
replicas (`postgresql://…`, audit/store/postgres.py). This module checks and
encodes records, keeps the local journal, and hands rows to the store, which
chains and commits them.

Tamper evidence: every row stores `prev_hash` (the previous row's
`record_hash`, 64 zeros for the first) and `record_hash`, the SHA-256 of
`canonical_bytes(row)` (audit/record.py), so editing, deleting or reordering a
row breaks the chain at that point (`python -m audit.verify`). SQLite keeps one
chain; PostgreSQL one per writer (a server process, a batch job's run) plus an
anchor chain of their heads. There is no secret key: anyone who can write the
store can rewrite a chain from some row onwards, which only a head hash kept
somewhere else can expose (`audit.verify --expect-head`).

Crash safety: each commit is one transaction, so a killed writer leaves whole
rows only, and `append` returns only after the commit (direct mode) or after
the record is in the journal (journal mode). SQLite: with `synchronous=FULL` it
also fsyncs the WAL on every commit so a committed record survives power loss,
not just a killed process (NORMAL, the default, survives only the latter).
Measured on the 2-core dev VM (ext4, 500 appends of a 50-candidate record,
median of 5): 0.66 ms per append with FULL vs 0.29 ms with NORMAL (0.25 ms
before chaining); under concurrent disk load FULL rose to ~5 ms median inside
Rank (bench/audit_overhead.py), which is why the policy chooses and NORMAL is
the default. PostgreSQL: a record is durable once the database committed it
(its own WAL fsync, `synchronous_commit`).

Journal mode (`AuditLog(..., journal=True)`, the server's default via the policy's `log.write = "journal"`):
`append` checks the record, encodes it as one JSON line (one orjson call) and copies it into a per-process,
memory-mapped journal file (in the page cache at once, so durable across a killed process like SQLite under
NORMAL; under FULL written with pwrite(2) and fsynced) and returns; a background thread turns journal lines into stored rows (the JSON columns' text), chains
them in append order, commits them to the store in batches, and then drops the journal. This takes the column
encoding, the transaction and the SHA-256 off the request thread (and one transaction serves many
concurrent requests); their CPU time is still spent in this process, on the ingest thread. A journal whose process died (its `flock` is free) is ingested by the next
`AuditLog` opened on the same file (SQLite) or journal directory (PostgreSQL), skipping records that already reached the store, so nothing a caller was
told is written is lost. In-process readers call `flush()` first; others see records within about 20 ms
(INGEST_DELAY_S).
If ingestion fails (disk full, database locked past the timeout) every later `append` raises, so the audit
fails closed, and the journal keeps the records for the next start. A store that is merely unreachable
(PostgreSQL restarting, a network cut: StoreUnavailable) is retried with back-off while appends go on
filling the journal, up to `journal_max_bytes` of records not yet shipped (policy `log.journal_max_mb`);
past that bound `append` raises (fail closed) until the store is back. Records shipped again after an
ambiguous failure are skipped by audit_id, so none is stored twice.

Direct mode (`journal=False`): SQLite commits one transaction per request on the request thread; PostgreSQL
group-commits: concurrent requests' records go into one transaction, each request waiting for the commit that
holds its record (a database round trip costs more than a SQLite commit, and the durability promise is the
same: the response waits for its record's commit). With the database unreachable, those requests fail closed.

Rows written before the chain existed (no hash) are kept as they are; the
verifier reports them as an unchained legacy prefix rather than vouching for
them, and the first chained row after them starts again from 64 zeros.
"""
from __future__ import annotations

import dataclasses
import fcntl
import functools
import logging
import mmap
import operator
import os
import secrets
import socket
import threading
import time
import uuid

import numpy as np
import orjson
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from audit.pseudonym import LEGACY_SALT_ENV, AuditKey, resolve_key
from audit.sink import AuditSink
# The record schema and the chain's hash live in audit/record.py; importable from here as before.
from audit.record import (CANDIDATE_FIELDS, COLUMNS, DECISION, GENESIS, JSON_COLUMNS, AuditRecord,  # noqa: F401
                          canonical_bytes, candidate_entries, entry_row, record_digest)
from audit.store import StoreUnavailable, is_postgres, make_store
from audit.store.sqlite import SCHEMA  # noqa: F401  (re-exported)

_log = logging.getLogger("ethicrec.audit")

# NORMAL (default): in WAL mode a committed record survives the process being killed at any point
# (tests/audit/test_log_kill.py), but not an OS crash or power loss. FULL: also survives those, at the price
# of an fsync per request (policy key log.synchronous).
SYNCHRONOUS = ("NORMAL", "FULL")
_TEXT_SCALARS = tuple(name for name in COLUMNS if name not in JSON_COLUMNS and name not in ("ts", "top_k"))
#: Records not yet in the store that the journal may hold before appends fail closed (policy log.journal_max_mb).
JOURNAL_MAX_BYTES = 64 << 20
#: Where a PostgreSQL-backed log keeps its journals when no directory is given.
DEFAULT_JOURNAL_DIR = Path("var/audit-journal")


def default_writer(name: str | None = None) -> str:
    """A writer id unique to this process: `<name>/<pid>-<random>`, the name defaulting to the host name
    (a Kubernetes pod's name)."""
    return f"{name or socket.gethostname()}/{os.getpid()}-{secrets.token_hex(4)}"


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


class AuditLog(AuditSink):
    """The audit log in the store `path` names: a SQLite file (a path), or a PostgreSQL database (a
    `postgresql://` URL; its password from ETHICREC_AUDIT_STORE_PASSWORD or `password_file`, audit/store/url.py).

    User ids are stored pseudonymised with the audit key (audit/pseudonym.py): `key` (an `AuditKey`, or
    the key's bytes; `salt` is the earlier name of the same argument, for embedding and tests), else the
    configured key (`ETHICREC_AUDIT_KEY`, `key_file`, or the default key file, created if missing).

    `lazy`: create nothing on disk yet (not the database, not a default key file); `open()` does, and so
    does the first write or the first `hash_user`. A server opens its log once its port is bound, a batch
    job once its input has been checked, so a start-up that fails leaves nothing behind. A misconfigured
    key (a key file that may not be read, a short ETHICREC_AUDIT_KEY) raises ConfigError here even so.

    PostgreSQL only: `journal_dir` holds this process's journal (journal mode) and the journals of dead
    processes it ships on `open`; `writer` names this process's chain (default `default_writer()`);
    `shared_windows` lets the monitors read one window for every process writing to the store
    (`window_source`); `store_options` go to PostgresStore (pool_size, anchor_every_s).
    """

    def __init__(self, path: str | Path, salt: bytes | None = None, *, key: AuditKey | bytes | None = None,
                 key_file: str | Path | None = None, synchronous: str = "NORMAL", journal: bool = False,
                 lazy: bool = False, journal_dir: str | Path | None = None, writer: str | None = None,
                 journal_max_bytes: int = JOURNAL_MAX_BYTES, password_file: str | Path | None = None,
                 shared_windows: bool = False, store_options: dict[str, Any] | None = None) -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}; got {synchronous!r}")
        self.target = str(path)
        self.postgres = is_postgres(self.target)
        self.store = make_store(self.target, synchronous=synchronous, password_file=password_file,
                                **(store_options or {}))
        #: Where journals live: beside the SQLite file, or in journal_dir for PostgreSQL (`<dir>/audit-store.journal-…`).
        self.path = (Path(journal_dir or DEFAULT_JOURNAL_DIR) / "audit-store") if self.postgres else Path(path)
        self.writer = writer or default_writer()
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
        self._journal_max = journal_max_bytes
        self._shared_windows = shared_windows and self.store.shared
        self._open_lock = threading.Lock()
        self._opened = False
        self._journal: _Journal | None = None
        self._group: _GroupCommit | None = _GroupCommit(self) if self.postgres else None
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
        return self._opened

    def open(self) -> "AuditLog":
        """Create (or open and migrate) the store, ingest dead processes' journals, start this one's;
        idempotent. Raises SchemaTooNew (a ConfigError) for a store written by a newer release and
        StoreUnavailable for a database that cannot be reached."""
        with self._open_lock:
            if self._opened:
                return self
            if self._key is None:
                self._key = resolve_key(self.path, self._key_file, create=True)
            self.store.open()
            if self.postgres and self._want_journal:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            else:
                _warn_legacy_salt(self.path)
            self._opened = True
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
        an OS crash). Direct mode commits it to the store here; journal mode appends it to the journal."""
        if self._journal is not None:
            self._journal.append(_journal_line(rec))
        else:
            if not self._opened:
                self.open()
                if self._journal is not None:
                    self._journal.append(_journal_line(rec))
                    return
            if self._group is not None:
                self._group.submit(_stored_values(rec))
            else:
                self._commit([_stored_values(rec)])

    def append_many(self, recs: list[AuditRecord], *, skip_existing: bool = False, writer: str | None = None) -> int:
        """Chain and commit several records in one transaction (one fsync under FULL); returns once all
        are durable, or raises with none of them written. Batch jobs commit a chunk's records this way
        (straight to the store, also in journal mode: it is one transaction already), on the chain of
        `writer` (a batch job's run) when given.

        `skip_existing`: leave out records whose audit_id the log already holds (inside the same
        transaction), so writing the same records again is a no-op: a batch job's rerun of a chunk whose
        records were committed before it was killed. Returns how many were written."""
        rows = [_stored_values(rec) for rec in recs]
        return self._commit(rows, skip_existing=skip_existing, writer=writer) if rows else 0

    def append_entry(self, kind: str, audit_id: str, payload: dict[str, Any], *, ts: float | None = None,
                     writer: str | None = None) -> None:
        """Append an entry of another kind than a decision (e.g. a reviewer's note, issue 28) to this
        writer's chain, committed before returning (audit/record.py says what its hash covers)."""
        row = entry_row(kind, audit_id, time.time() if ts is None else ts, payload)
        if self._journal is not None:
            self._journal.flush()   # keep the chain in append order
        self._commit([row], writer=writer)

    def flush(self) -> None:
        """Wait until every record appended so far is in the store (journal mode; a no-op otherwise)."""
        if self._journal is not None:
            self._journal.flush()

    def pending(self) -> int:
        """Records appended to the journal and not yet in the store."""
        return self._journal.pending() if self._journal is not None else 0

    def store_error(self) -> str | None:
        """Why the store was last unreachable, while it still is (journal mode); None when it is fine."""
        return self._journal.unavailable() if self._journal is not None else None

    def window_source(self, kind: str, size: int, encode: Callable[[Any], Any], decode: Callable[[Any], Any]):
        """A window every process writing to this store shares (audit/store/base.py WindowSource), or None
        when the store is not shared or the log was not opened with `shared_windows`."""
        if not self._shared_windows:
            return None
        return self.store.window(kind, size, self.writer.split("/", 1)[0], encode, decode)

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
        if self.postgres and self._opened:
            try:
                self.store.anchor(self.writer)
            except Exception as exc:  # noqa: BLE001 - the records are committed; only the final anchor is missing
                _log.warning("audit store %s: the head of %s was not anchored at close: %s", self.store.display,
                             self.writer, exc)
        self.store.close()

    def _commit(self, rows: list[dict[str, Any]], *, skip_existing: bool = False, writer: str | None = None) -> int:
        """Chain and commit rows in one transaction on `writer`'s chain (this log's by default); returns how
        many were inserted."""
        if not self._opened:
            self.open()
        return self.store.commit(rows, writer=writer or self.writer, skip_existing=skip_existing)

    def _recover_journals(self) -> int:
        """Ingest the journals of processes that died before all their records reached the store; returns the
        number of records that were missing from it (now added), each on the chain of the writer that
        journaled it."""
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
                    data = f.read()
                rows = _journal_rows(data)
                if rows:
                    n += self._commit(rows, skip_existing=True, writer=_journal_writer(data) or self.writer)
                jpath.unlink()
            finally:
                os.close(fd)
        return n


class _GroupCommit:
    """Direct mode on a database: each request hands its row over and waits; whichever request finds no
    commit running takes every row queued so far and commits them in one transaction, while the others wait
    for it (and the rows that arrive meanwhile form the next one). Every request returns only after the
    commit that holds its row, or raises what that commit raised."""

    def __init__(self, log: AuditLog) -> None:
        self._log = log
        self._cond = threading.Condition()
        self._queue: list[list[Any]] = []
        self._busy = False

    def submit(self, row: dict[str, Any]) -> None:
        entry: list[Any] = [row, None, False]   # row, error, done
        with self._cond:
            self._queue.append(entry)
            while not entry[2]:
                if self._busy:
                    self._cond.wait()
                    continue
                self._busy = True
                batch, self._queue = self._queue, []
                error: BaseException | None = None
                self._cond.release()
                try:
                    self._log._commit([e[0] for e in batch])
                except BaseException as exc:  # noqa: BLE001 - handed to every request of the batch
                    error = exc
                finally:
                    self._cond.acquire()
                for e in batch:
                    e[1], e[2] = error, True
                self._busy = False
                self._cond.notify_all()
        if entry[1] is not None:
            raise entry[1]


#: Journal files sit beside the log: `<log name>.journal-<pid>-<random>-<n>` (n counts a process's files, so
#: they sort in the order they were written).
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
#: At most this many records per transaction when a backlog is shipped (a store back after an outage).
INGEST_MAX_BATCH = 2048
#: Back-off between attempts while the store is unreachable, and how long `close` keeps trying before it
#: leaves the journal for the next start.
RETRY_MIN_S, RETRY_MAX_S, CLOSE_RETRY_S = 0.05, 1.0, 5.0
#: First element of a journal header line (`[0, {"writer": …}]`, the writer whose chain the records extend).
_HEADER_LINE = 0


def _journal_writer(data: bytes) -> str | None:
    """The writer named by a journal's header line (None for journals written before headers)."""
    if data.startswith(b"[0,"):
        line = data.split(b"\n", 1)[0]
        try:
            return orjson.loads(line)[1]["writer"]
        except (orjson.JSONDecodeError, IndexError, KeyError, TypeError):
            return None
    return None


def _journal_rows(data: bytes) -> list[dict[str, Any]]:
    """The complete lines of a journal as stored values; a torn last line belongs to an append that never
    returned. A memory-mapped journal is zero-filled past its last record (JSON lines never hold a NUL)."""
    end = data.find(b"\0")
    if end >= 0:
        data = data[:end]
    lines = data.split(b"\n")
    return [_journal_row(line) for line in lines[:-1] if line and not line.startswith(b"[0,")]


def _journal_row(line: bytes) -> dict[str, Any]:
    """One journal line as the values the store keeps. Lines hold the JSON columns as JSON values, encoded
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


class JournalFull(RuntimeError):
    """The store has been unreachable long enough that the journal holds its bound of unshipped records."""


class _Journal:
    """The request path's half of journal mode: each record copied into the journal file, ingestion in a
    thread.

    Under synchronous=NORMAL the file is memory-mapped and a record is a memcpy into the shared mapping:
    the bytes are in the page cache at once, so they survive the process being killed exactly as after a
    write(2), and the request thread does not release the GIL here (after a write(2) it often had to wait
    for the ingest thread or gRPC's threads to give the GIL back). The ingest thread pre-faults the mapping
    ahead of the records (`_populate_ahead`), since the first write to each page is a page fault costing
    more than the copy. Measured inside the audit stage (in-process pipeline, median): 18-20 us per record
    with write(2), 4.9 us now. Under FULL every record is written with pwrite(2) and fdatasync'd.

    While the store is unreachable (StoreUnavailable) the thread keeps the records and retries with back-off;
    `append` goes on until `journal_max_bytes` of records are waiting, then raises JournalFull."""

    def __init__(self, log: AuditLog) -> None:
        self._log = log
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._pending: list[bytes] = []   # journal lines not yet in the store
        self._pending_bytes = 0      # their bytes, and those of the batch being committed
        self._max_bytes = log._journal_max
        self._appended = 0          # records appended so far (sequence numbers)
        self._ingested = 0          # records committed to the store so far
        self._error: BaseException | None = None
        self._unavailable: StoreUnavailable | None = None
        self._closing = False
        self._waiters = 0           # flush() callers waiting: ingest now instead of gathering
        self._files = 0
        self._header = orjson.dumps([_HEADER_LINE, {"writer": log.writer}], option=orjson.OPT_APPEND_NEWLINE)
        self._path, self._fd, self._map = self._open_new()
        self._bytes = len(self._header)
        self._retired: list[tuple[Path, int, mmap.mmap | None, int]] = []   # rotated files and their last seq
        self._populated = 0          # bytes of the current mapping populated writable
        self._can_populate = True    # False once the kernel refuses MADV_POPULATE_WRITE
        self._populate_ahead()
        self._thread = threading.Thread(target=self._run, name="audit-log-ingest", daemon=True)
        self._thread.start()

    def _open_new(self) -> tuple[Path, int, mmap.mmap | None]:
        if not self._files:
            self._stem = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._files += 1
        path = self._log.path.with_name(f"{self._log.path.name}{JOURNAL_SUFFIX}{self._stem}-{self._files:06d}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # held for the file's life: recovery leaves live journals alone
        os.pwrite(fd, self._header, 0)
        if self._log._full:
            os.fdatasync(fd)
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
            if self._pending_bytes + len(data) > self._max_bytes:
                why = self._unavailable or "its commits are not keeping up"
                raise JournalFull(f"the audit store {self._log.store.display} is not taking records ({why}) and "
                                  f"the local journal holds its bound of {self._max_bytes >> 20} MiB of unshipped records "
                                  "(policy log.journal_max_mb); refusing further records until it is back")
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
            self._pending_bytes += len(data)
            self._appended += 1
            if len(self._pending) == 1 or len(self._pending) >= INGEST_BATCH:
                self._cond.notify_all()

    def pending(self) -> int:
        return self._appended - self._ingested

    def unavailable(self) -> str | None:
        u = self._unavailable
        return None if u is None else str(u)

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
            self._close_deadline = time.monotonic() + CLOSE_RETRY_S
            self._cond.notify_all()
        self._thread.join()
        with self._cond:
            if self._error is None and self._ingested == self._appended:
                self._path.unlink(missing_ok=True)
                for path, _, _, _ in self._retired:
                    path.unlink(missing_ok=True)
            elif self._appended > self._ingested:
                _log.warning("audit log closed with %d records not yet in the store %s (%s); they stay in the "
                             "journal %s and are shipped by the next start", self._appended - self._ingested,
                             self._log.store.display, self._error or self._unavailable, self._path)
            for _, fd, m, _ in self._retired:
                if m is not None:
                    m.close()
                os.close(fd)
            if self._map is not None:
                self._map.close()
            os.close(self._fd)

    def _run(self) -> None:
        retry = False
        backoff = RETRY_MIN_S
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                deadline = time.monotonic() + INGEST_DELAY_S
                while len(self._pending) < INGEST_BATCH and not self._closing and not self._waiters and not retry:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if not self._pending:
                    return  # closing, all ingested
                batch, self._pending = self._pending[:INGEST_MAX_BATCH], self._pending[INGEST_MAX_BATCH:]
                if self._bytes >= JOURNAL_ROTATE_BYTES:
                    # Every record of the old file is in `batch` or before it: delete the file once they are in.
                    self._retired.append((self._path, self._fd, self._map, self._appended))
                    self._path, self._fd, self._map = self._open_new()
                    self._bytes, self._populated = len(self._header), 0
            try:
                self._log._commit([_journal_row(line) for line in batch], skip_existing=retry)
            except StoreUnavailable as exc:
                # Unreachable, not broken: keep the records (in order) and try again after a pause; appends
                # go on into the journal up to its bound. The retry skips what an ambiguous commit stored.
                with self._cond:
                    self._pending[:0] = batch
                    self._unavailable = exc
                    if self._closing and time.monotonic() >= self._close_deadline:
                        self._error = exc
                        self._cond.notify_all()
                        return
                    self._cond.wait(backoff)
                if retry is False:
                    _log.warning("audit store %s unreachable; journaling records until it is back: %s",
                                 self._log.store.display, exc)
                retry, backoff = True, min(backoff * 2, RETRY_MAX_S)
                continue
            except BaseException as exc:  # noqa: BLE001 - surfaced to every later append (fail closed)
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                return
            if retry:
                _log.info("audit store %s reachable again; shipping the journaled records", self._log.store.display)
            retry, backoff = False, RETRY_MIN_S
            with self._cond:
                self._unavailable = None
                ingested = self._ingested + len(batch)
                done = [r for r in self._retired if r[3] <= ingested]
                self._retired = [r for r in self._retired if r[3] > ingested]
            # Retired files whose records are all in the store go before flush() callers are told: once a
            # flush returns, no journal of ingested records is left behind.
            for path, fd, m, _ in done:
                path.unlink(missing_ok=True)  # before close: the flock keeps recovery away until it is gone
                if m is not None:
                    m.close()
                os.close(fd)
            with self._cond:
                self._ingested = ingested
                self._pending_bytes -= sum(map(len, batch))
                self._cond.notify_all()
            self._populate_ahead()


def read_records(path: str | Path, since: float | None = None, until: float | None = None,
                 user_hashes: list[str] | None = None) -> Iterator[AuditRecord]:
    """Read decisions (oldest first) from the store `path` names (a SQLite file or a postgresql:// URL),
    optionally within [since, until) and only those whose stored user hash is one of `user_hashes` (see
    audit.lookup). Does not verify the chain."""
    if is_postgres(str(path)):
        store = make_store(str(path))
        try:
            yield from store.read(since, until, user_hashes)
        finally:
            store.close()
        return
    from audit.store.sqlite import read_sqlite

    yield from read_sqlite(path, since, until, user_hashes)
