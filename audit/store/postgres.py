"""The PostgreSQL audit store: one audit trail for many replicas (psycopg 3, a connection pool).

Chains: one per writer. Each process that writes (a server process, a batch job's run) has a writer id
(`<name>/<pid>-<random>`, the name from `audit_writer`, default the host name: a pod's name) and its own hash
chain, numbered by `writer_seq` 1, 2, … . A commit takes a transaction-scoped advisory lock on its writer id,
reads that chain's head and appends: writers never wait for each other, and two processes that share a writer
id (a batch job's workers) still extend one chain in turn, never fork it. The alternative measured against it
(bench/audit_store.py, bench/README.md "Audit store on PostgreSQL") is one global chain: the same code with
every process writing as writer "global", so every commit in the fleet waits for the one lock. On the 2-core
dev VM it sustained far fewer records per second once several writers committed at once, and every replica's
request latency would then depend on the slowest commit in the fleet; that is why per-writer chains are the
design, and why `global` is not offered as a setting.

What a per-writer chain cannot show by itself is a tail cut off (its last rows deleted): the shorter chain
still verifies. So every `anchor_every_s` (and when a writer closes) a commit also appends the writer's head
(writer, writer_seq, record_hash) to `audit_anchors`, which is itself one global hash chain (rare writes, so
its lock costs nothing). `audit.verify --store` checks that every anchored head is still in its chain; a
deletion after the last anchor shows only against an anchor head kept elsewhere (`--expect-head`), as for
the SQLite log.

Schema: versioned migrations (MIGRATIONS, applied in one transaction under an advisory lock, recorded in
`ethicrec_schema`). A store whose version is newer than this code knows is refused (SchemaTooNew) before
anything is written. JSON columns are `text`, not `jsonb`: the hash covers the stored text byte for byte,
and jsonb would re-serialise it.

Unreachable database: every connection error (refused, lost mid-transaction, server shutting down, pool
timeout) is raised as StoreUnavailable. A commit that failed that way may have happened; committing the same
rows again with `skip_existing` (what the journal does) finds out without a duplicate.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import Counter
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from audit.record import COLUMNS, DECISION, GENESIS, NEUTRAL_DECISION, AuditRecord, record_digest
from audit.store.base import SchemaTooNew, StoreError, StoreUnavailable
from audit.store.url import PostgresTarget

_log = logging.getLogger("ethicrec.audit")

#: Advisory lock classes (pg_advisory_xact_lock(class, key)): 'ETHR' + 0/1/2.
LOCK_WRITER, LOCK_ANCHOR, LOCK_MIGRATE = 0x45544800, 0x45544801, 0x45544802
#: How long a caller waits for a pooled connection (a request in direct mode, the ingest thread) before the
#: store counts as unreachable; and libpq's connect timeout.
CHECKOUT_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 3
#: How long the pool keeps retrying a lost connection (1 s, then 2 s apart) before it gives up; the next caller
#: (the ingest thread retries at least every second) starts a new attempt at once. psycopg_pool's backoff
#: doubles without bound within this time: with its usual 10 minutes, a database back after a 15 s outage was
#: reconnected only 9 s later (bench/README.md, "Audit store on PostgreSQL"); with 2 s, within about a second.
RECONNECT_S = 2.0
#: A writer's head is anchored at least this often (and when it closes).
ANCHOR_EVERY_S = 60.0

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, f"""
CREATE TABLE audit_records (
    id              bigserial PRIMARY KEY,           -- commit order across writers
    writer          text NOT NULL,                   -- whose chain (audit/store/postgres.py)
    writer_seq      bigint NOT NULL,                 -- 1, 2, ... within the writer's chain
    kind            text NOT NULL DEFAULT '{DECISION}',  -- decision, or another entry kind (audit/record.py)
    audit_id        text NOT NULL UNIQUE,
    ts              double precision NOT NULL,
    request_id      text NOT NULL DEFAULT '',
    model_version   text NOT NULL DEFAULT '',
    policy_version  text NOT NULL DEFAULT '',
    user_hash       text NOT NULL DEFAULT '',
    audit_mode      text NOT NULL DEFAULT '',
    verdict         text NOT NULL DEFAULT '',
    top_k           integer NOT NULL DEFAULT 0,
    returned_ids    text NOT NULL DEFAULT '[]',      -- JSON text, hashed as stored
    removed         text NOT NULL DEFAULT '[]',
    candidates      text NOT NULL DEFAULT '[]',
    findings        text NOT NULL DEFAULT '[]',
    user_attributes text NOT NULL DEFAULT '{{}}',
    payload         text NOT NULL DEFAULT '{{}}',     -- JSON of an entry of another kind
    prev_hash       text NOT NULL,
    record_hash     text NOT NULL,
    UNIQUE (writer, writer_seq)
);
CREATE INDEX audit_records_ts ON audit_records (ts);
CREATE INDEX audit_records_user_hash ON audit_records (user_hash);
CREATE TABLE audit_anchors (
    seq         bigint PRIMARY KEY,                  -- 1, 2, ... (one global chain of anchors)
    ts          double precision NOT NULL,
    writer      text NOT NULL,
    writer_seq  bigint NOT NULL,
    head        text NOT NULL,                       -- the writer's record_hash at writer_seq
    prev_hash   text NOT NULL,
    anchor_hash text NOT NULL
);
CREATE TABLE audit_windows (                         -- fleet-wide monitor windows (not audit records)
    id     bigserial PRIMARY KEY,
    kind   text NOT NULL,
    ts     double precision NOT NULL,
    writer text NOT NULL,
    data   text NOT NULL
);
CREATE INDEX audit_windows_kind_id ON audit_windows (kind, id);
"""),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

ROW_COLUMNS = (*COLUMNS, "kind", "payload")
_INSERT = (f"INSERT INTO audit_records (writer, writer_seq, {', '.join(ROW_COLUMNS)}, prev_hash, record_hash)"
           f" VALUES ({', '.join(['%s'] * (len(ROW_COLUMNS) + 4))})")
_DECISION_SELECT = ("SELECT audit_id, ts, request_id, model_version, policy_version, user_hash, audit_mode, verdict,"
                    " top_k, returned_ids, removed, candidates, findings, user_attributes, prev_hash, record_hash,"
                    " writer FROM audit_records")


def anchor_digest(seq: int, ts: float, writer: str, writer_seq: int, head: str, prev_hash: str) -> str:
    payload = {"seq": seq, "ts": ts, "writer": writer, "writer_seq": writer_seq, "head": head, "prev_hash": prev_hash}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=True).encode("ascii")).hexdigest()


def _unavailable_types() -> tuple[type[BaseException], ...]:
    import psycopg
    from psycopg_pool import PoolTimeout, PoolClosed

    return (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, PoolClosed)


class PostgresStore:
    """The database a PostgresTarget names. `pool_size`: connections this process may hold (the ingest thread
    needs one; direct mode's group commit one; monitors and readers share the rest)."""

    shared = True

    def __init__(self, target: PostgresTarget, *, pool_size: int = 4, anchor_every_s: float = ANCHOR_EVERY_S,
                 checkout_timeout_s: float = CHECKOUT_TIMEOUT_S, application_name: str = "ethicrec") -> None:
        self.target = target
        self.display = target.display
        self.anchor_every_s = anchor_every_s
        self._pool_size = pool_size
        self._timeout = checkout_timeout_s
        self._app = application_name
        self._pool = None
        self._pool_lock = threading.Lock()
        self._closed = False   # after close(), no new pool behind the caller's back (a monitor thread still running)
        self._anchored: dict[str, float] = {}   # writer -> monotonic time of its last anchor
        self._unavailable = _unavailable_types()

    # -- connections -------------------------------------------------------------------------
    def _kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S, "application_name": self._app}
        if self.target.password is not None:
            kw["password"] = self.target.password
        return kw

    def _get_pool(self):
        if self._pool is None:
            with self._pool_lock:
                if self._closed:
                    raise StoreUnavailable(f"audit store {self.display} is closed")
                if self._pool is None:
                    from psycopg_pool import ConnectionPool

                    # check: a pooled connection is tested (one round trip) before it is handed out, so after the
                    # database restarted the first commit gets a fresh connection instead of a dead one.
                    self._pool = ConnectionPool(self.target.conninfo, kwargs=self._kwargs(), min_size=1,
                                                max_size=self._pool_size, timeout=self._timeout, open=False,
                                                check=ConnectionPool.check_connection, name="ethicrec-audit",
                                                reconnect_timeout=RECONNECT_S)
                    self._pool.open(wait=False)
        return self._pool

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A pooled connection in a transaction (committed when the block ends, rolled back on an error);
        connection problems come out as StoreUnavailable."""
        try:
            with self._get_pool().connection() as conn:
                yield conn
        except self._unavailable as exc:
            raise StoreUnavailable(f"audit store {self.display} is unreachable: {_first_line(exc)}") from exc

    # -- schema ------------------------------------------------------------------------------
    def open(self) -> None:
        """Apply missing migrations (one transaction, one migrator at a time); SchemaTooNew when the store was
        migrated by a newer ethicrec. Raises StoreUnavailable if the database cannot be reached."""
        import psycopg

        try:
            with psycopg.connect(self.target.conninfo, **self._kwargs()) as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_MIGRATE,))
                conn.execute("CREATE TABLE IF NOT EXISTS ethicrec_schema (version integer PRIMARY KEY,"
                             " applied_at timestamptz NOT NULL DEFAULT now())")
                version = conn.execute("SELECT coalesce(max(version), 0) FROM ethicrec_schema").fetchone()[0]
                self._check_version(version)
                for number, sql in MIGRATIONS:
                    if number > version:
                        conn.execute(sql)
                        conn.execute("INSERT INTO ethicrec_schema (version) VALUES (%s)", (number,))
                        _log.info("audit store %s: schema migrated to version %d", self.display, number)
        except StoreError:
            raise
        except self._unavailable as exc:
            raise StoreUnavailable(f"audit store {self.display} is unreachable: {_first_line(exc)}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"audit store {self.display}: {_first_line(exc)}") from exc
        with self._pool_lock:
            self._closed = False
        self._get_pool()

    def probe(self) -> None:
        """Connect once and check the schema version without creating or changing anything: what a server
        checks before its slow model load, so a wrong password, an unreachable database or a schema from a
        newer release stops start-up at once (SchemaTooNew, StoreUnavailable, StoreError)."""
        import psycopg

        try:
            with psycopg.connect(self.target.conninfo, **self._kwargs()) as conn:
                if conn.execute("SELECT to_regclass('ethicrec_schema')").fetchone()[0] is not None:
                    self._check_version(conn.execute("SELECT coalesce(max(version), 0) FROM ethicrec_schema")
                                        .fetchone()[0])
        except StoreError:
            raise
        except self._unavailable as exc:
            raise StoreUnavailable(f"audit store {self.display} is unreachable: {_first_line(exc)}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"audit store {self.display}: {_first_line(exc)}") from exc

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(f"audit store {self.display} has schema version {version}, newer than this ethicrec "
                               f"knows ({SCHEMA_VERSION}): it was migrated by a newer release; upgrade before "
                               "writing to it")

    def schema_version(self) -> int:
        with self.connection() as conn:
            if conn.execute("SELECT to_regclass('ethicrec_schema')").fetchone()[0] is None:
                return 0
            return conn.execute("SELECT coalesce(max(version), 0) FROM ethicrec_schema").fetchone()[0]

    # -- writing -----------------------------------------------------------------------------
    def commit(self, rows: list[dict[str, Any]], *, writer: str, skip_existing: bool = False) -> int:
        if not rows:
            return 0
        with self.connection() as conn:
            cur = conn.cursor()
            cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_WRITER, writer))
            if skip_existing:
                present = {r[0] for r in cur.execute("SELECT audit_id FROM audit_records WHERE audit_id = ANY(%s)",
                                                     ([r["audit_id"] for r in rows],))}
                if present:
                    rows = [r for r in rows if r["audit_id"] not in present]
            head = cur.execute("SELECT writer_seq, record_hash FROM audit_records WHERE writer = %s"
                               " ORDER BY writer_seq DESC LIMIT 1", (writer,)).fetchone()
            seq, prev = head if head else (0, GENESIS)
            params = []
            for row in rows:
                digest = record_digest(row, prev)
                seq += 1
                kind = row.get("kind", DECISION)
                if kind == DECISION:
                    params.append((writer, seq, *(row[c] for c in COLUMNS), DECISION, "{}", prev, digest))
                else:
                    full = {**NEUTRAL_DECISION, **row}
                    params.append((writer, seq, *(full[c] for c in COLUMNS), kind, row["payload"], prev, digest))
                prev = digest
            if params:
                cur.executemany(_INSERT, params)
            now = time.monotonic()
            due = now - self._anchored.get(writer, float("-inf")) >= self.anchor_every_s
            if due and seq:
                self._append_anchor(cur, writer, seq, prev)
        if due and seq:
            self._anchored[writer] = now
        return len(params)

    def anchor(self, writer: str) -> None:
        """Anchor `writer`'s current head now (a writer closing)."""
        with self.connection() as conn:
            cur = conn.cursor()
            cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_WRITER, writer))
            head = cur.execute("SELECT writer_seq, record_hash FROM audit_records WHERE writer = %s"
                               " ORDER BY writer_seq DESC LIMIT 1", (writer,)).fetchone()
            if head is None:
                return
            last = cur.execute("SELECT writer_seq FROM audit_anchors WHERE writer = %s ORDER BY seq DESC LIMIT 1",
                               (writer,)).fetchone()
            if last is None or last[0] != head[0]:
                self._append_anchor(cur, writer, head[0], head[1])
        self._anchored[writer] = time.monotonic()

    @staticmethod
    def _append_anchor(cur, writer: str, writer_seq: int, head: str) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_ANCHOR,))
        last = cur.execute("SELECT seq, anchor_hash FROM audit_anchors ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
        ts = time.time()
        cur.execute("INSERT INTO audit_anchors (seq, ts, writer, writer_seq, head, prev_hash, anchor_hash)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (seq, ts, writer, writer_seq, head, prev, anchor_digest(seq, ts, writer, writer_seq, head, prev)))

    # -- reading -----------------------------------------------------------------------------
    @contextmanager
    def _reading(self) -> Iterator[Any]:
        """A connection for readers; ValueError if the database holds no audit trail."""
        with self.connection() as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            if conn.execute("SELECT to_regclass('audit_records')").fetchone()[0] is None:
                raise ValueError(f"{self.display} holds no ethicrec audit trail (no audit_records table)")
            yield conn

    def read(self, since: float | None = None, until: float | None = None,
             user_hashes: list[str] | None = None) -> Iterator[AuditRecord]:
        from audit.store.sqlite import record_from_row

        sql, args = _DECISION_SELECT + " WHERE kind = %s", [DECISION]
        if user_hashes is not None:
            sql += " AND user_hash = ANY(%s)"
            args.append(list(user_hashes))
        if since is not None:
            sql += " AND ts >= %s"
            args.append(since)
        if until is not None:
            sql += " AND ts < %s"
            args.append(until)
        with self._reading() as conn:
            with conn.cursor(name="ethicrec_read") as cur:   # server-side: the store may not fit in memory
                cur.itersize = 2000
                cur.execute(sql + " ORDER BY id", args)
                for row in cur:
                    yield record_from_row(row)

    def key_id_counts(self) -> Counter:
        with self._reading() as conn:
            rows = conn.execute("SELECT CASE WHEN user_hash LIKE 'hmac:%%' THEN substr(user_hash, 6, 12) END AS kid,"
                                " count(*) FROM audit_records WHERE kind = %s GROUP BY kid", (DECISION,)).fetchall()
        return Counter({kid: n for kid, n in rows})

    def writers(self) -> dict[str, int]:
        """Records per writer."""
        with self._reading() as conn:
            return dict(conn.execute("SELECT writer, count(*) FROM audit_records GROUP BY writer ORDER BY writer"))

    @contextmanager
    def snapshot(self) -> Iterator[tuple[list[tuple], Iterator[tuple]]]:
        """For audit.verify, in one consistent snapshot: the anchors (seq, ts, writer, writer_seq, head,
        prev_hash, anchor_hash) in order, and every row as (writer, writer_seq, id, stored values, prev_hash,
        record_hash) by writer and writer_seq (streamed from a server-side cursor)."""
        names = ("writer", "writer_seq", "id", *ROW_COLUMNS, "prev_hash", "record_hash")
        with self._reading() as conn:
            anchors = conn.execute("SELECT seq, ts, writer, writer_seq, head, prev_hash, anchor_hash"
                                   " FROM audit_anchors ORDER BY seq").fetchall()

            def rows() -> Iterator[tuple]:
                with conn.cursor(name="ethicrec_verify") as cur:
                    cur.itersize = 5000
                    cur.execute(f"SELECT {', '.join(names)} FROM audit_records ORDER BY writer, writer_seq")
                    for writer, wseq, rid, *values, prev, digest in cur:
                        yield writer, wseq, rid, dict(zip(ROW_COLUMNS, values)), prev, digest

            yield anchors, rows()

    # -- fleet-wide monitor windows -------------------------------------------------------------
    def window(self, kind: str, size: int, writer: str, encode: Callable[[Any], Any],
               decode: Callable[[Any], Any]) -> "PostgresWindow":
        return PostgresWindow(self, kind, size, writer, encode, decode)

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            if self._pool is not None:
                self._pool.close(timeout=5.0)
                self._pool = None


class PostgresWindow:
    """A monitor window kept in `audit_windows` (kind = which monitor): every process of the fleet adds its
    entries, and each reads the newest `size` of all of them. Rows past 2 x size are pruned by whoever adds."""

    def __init__(self, store: PostgresStore, kind: str, size: int, writer: str, encode: Callable[[Any], Any],
                 decode: Callable[[Any], Any]) -> None:
        self.store, self.kind, self.size, self.writer = store, kind, size, writer
        self._encode, self._decode = encode, decode
        self._adds = 0

    def exchange(self, new: list[Any]) -> list[Any]:
        now = time.time()
        with self.store.connection() as conn:
            cur = conn.cursor()
            if new:
                cur.executemany("INSERT INTO audit_windows (kind, ts, writer, data) VALUES (%s, %s, %s, %s)",
                                [(self.kind, now, self.writer, json.dumps(self._encode(x))) for x in new])
                self._adds += 1
                if self._adds % 10 == 1:
                    cur.execute("DELETE FROM audit_windows WHERE kind = %s AND id < (SELECT id FROM audit_windows"
                                " WHERE kind = %s ORDER BY id DESC OFFSET %s LIMIT 1)",
                                (self.kind, self.kind, 2 * self.size))
            rows = cur.execute("SELECT data FROM audit_windows WHERE kind = %s ORDER BY id DESC LIMIT %s",
                               (self.kind, self.size)).fetchall()
        return [self._decode(json.loads(r[0])) for r in reversed(rows)]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
