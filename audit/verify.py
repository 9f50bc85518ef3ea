"""`python -m audit.verify --log FILE` / `--store URL` — check the audit trail's hash chains.

    python -m audit.verify --log var/audit.db
    python -m audit.verify --log var/audit.db --expect-head 3f1c…   # a head hash saved elsewhere earlier
    python -m audit.verify --log var/audit.db --json
    python -m audit.verify --store postgresql://auditor@db:5432/ethicrec   # every writer's chain + the anchors

Exit status: 0 chain(s) intact, 1 the first broken link is printed (seq, audit_id,
what is wrong; for a PostgreSQL store the first one of every writer whose chain
is broken), 2 bad input (one line on stderr).

PostgreSQL (audit/store/postgres.py): one chain per writer, walked in writer_seq
order with the same checks as below (seq numbers contiguous from 1, links,
hashes), and the anchor chain (every anchor linked to the one before and still
naming a record that is in its writer's chain with that hash, so a writer's
chain cut short of an anchored head is reported as tail_truncated).
`--expect-head` then names a head of the anchor chain kept elsewhere. The
password comes from ETHICREC_AUDIT_STORE_PASSWORD, --password-file or libpq's
PGPASSWORD / ~/.pgpass; a read-only role is enough.

What it can and cannot prove. Walking the rows in seq order it recomputes every
record_hash and checks every prev_hash against the row before, so an edited
field, a deleted or inserted row, a reordering or a forged link shows up at
the first row where it happens. The chain has no secret key, though: someone
who can write the file can also rewrite every hash from the edited row to the
end, and can cut rows off the tail leaving a shorter, still-valid chain. The
log itself can only hint at the latter (SQLite's AUTOINCREMENT counter running
past the last row, which an editor can also reset); the real defence is an
external anchor — record the reported head somewhere the log's writer cannot
change (a ticket, a release note, another host) and pass it later as
--expect-head: the check then also requires that record to still be in the
chain, which proves nothing up to it was truncated or rewritten.

Rows written before the chain existed (NULL hashes) are accepted only as a
prefix of the log: they are counted and reported as "unchained legacy
records", never vouched for, and the first chained row after them must start
from the genesis hash (64 zeros). A NULL hash after the chain has started is a
failure.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from audit.log import COLUMNS, GENESIS, JOURNAL_SUFFIX, record_digest
from audit.record import DECISION
from audit.store import is_postgres, make_store
from recsys.cli import cli_main, fail
from recsys.errors import ConfigError


@dataclass(frozen=True)
class Break:
    """The first place the chain does not hold."""
    seq: int | None          # None for problems not tied to one row (truncated tail, missing anchor)
    audit_id: str | None
    # content_altered | link_broken | record_deleted | unchained_record | tail_truncated | anchor_missing
    kind: str
    detail: str


@dataclass(frozen=True)
class VerifyResult:
    # Counts cover the rows walked: all of them, or up to and including the row with the problem.
    records: int             # rows, legacy included
    chained: int             # rows carrying a verified hash
    legacy: int              # unchained rows before the chain starts
    head: str                # record_hash of the last verified row (GENESIS if none)
    first_chained_seq: int | None
    problem: Break | None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if self.problem is not None:
            p = self.problem
            where = f"seq {p.seq} (audit_id {p.audit_id})" if p.seq is not None else "log"
            return f"BROKEN at {where}: {p.kind.replace('_', ' ')}: {p.detail}"
        text = f"OK: {self.records} records, chain intact, head {self.head}"
        if self.legacy:
            text += (f" ({self.legacy} unchained legacy records before seq {self.first_chained_seq},"
                     " not verified)" if self.first_chained_seq is not None
                     else f" ({self.legacy} unchained legacy records, none chained yet, not verified)")
        return text


def _open(path: Path) -> tuple[sqlite3.Connection, set[str]]:
    if not path.is_file():
        raise ValueError(f"audit log not found: {path}")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(audit_records)")}
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{path} is not an ethicrec audit log: {exc}") from None
    missing = set(COLUMNS) - {"user_attributes"} - columns
    if missing:
        conn.close()
        raise ValueError(f"{path} is not an ethicrec audit log: no audit_records table with columns "
                         f"{', '.join(sorted(missing))}")
    return conn, columns


def _digest(row: dict, prev_hash: str) -> str | None:
    """None when a value has a type no append could have stored (the row was edited by hand)."""
    try:
        return record_digest(row, prev_hash)
    except (TypeError, ValueError):
        return None


def verify_log(path: str | Path, expect_head: str | None = None) -> VerifyResult:
    """Walk the chain of the log at `path`; raises ValueError if it is not an audit log."""
    conn, columns = _open(Path(path))
    try:
        defaults = {"user_attributes": "'{}'", "prev_hash": "NULL", "record_hash": "NULL",  # older logs
                    "kind": f"'{DECISION}'", "payload": "'{}'"}
        names = ("seq", *COLUMNS, "kind", "payload", "prev_hash", "record_hash")
        cols = ", ".join(c if c in columns else defaults[c] for c in names)
        conn.execute("BEGIN")  # one snapshot for the rows and the counter while a writer keeps appending
        rows = conn.execute(f"SELECT {cols} FROM audit_records ORDER BY seq")
        return _walk(rows, conn, expect_head)
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{path} is not a readable ethicrec audit log: {exc}") from None
    finally:
        conn.close()


def _walk(rows, conn: sqlite3.Connection, expect_head: str | None) -> VerifyResult:
    n = chained = legacy = 0
    head, first, found_anchor = GENESIS, None, expect_head is None
    prev_seq = 0  # AUTOINCREMENT starts at 1 and never reuses or skips a number on its own

    def result(problem: Break | None) -> VerifyResult:
        return VerifyResult(n, chained, legacy, head, first, problem)

    for seq, *values, prev_hash, record_hash in rows:
        n += 1
        row = dict(zip((*COLUMNS, "kind", "payload"), values))
        audit_id = row["audit_id"]
        if record_hash is None and prev_hash is None and first is None:
            legacy += 1
            prev_seq = seq
            continue
        if record_hash is None or prev_hash is None:
            return result(Break(seq, audit_id, "unchained_record",
                                "a row without hashes after the chain started (hashes cleared or row inserted)"))
        if first is None:
            first = seq
        gap = "" if seq == prev_seq + 1 else f"seq {prev_seq + 1}" + (f"..{seq - 1}" if seq - 1 > prev_seq + 1 else "")
        if gap:  # with or without an intact link: intact only if everything after the gap was re-hashed
            return result(Break(seq, audit_id, "record_deleted", f"{gap} missing before this row"))
        if prev_hash != head:
            before = f"the hash of seq {prev_seq}" if chained else "the genesis hash (first chained row)"
            return result(Break(seq, audit_id, "link_broken",
                                f"prev_hash {str(prev_hash)[:16]}… does not match {before} ({head[:16]}…): the row "
                                "before was altered and re-hashed, or rows were reordered, inserted or forged"))
        if _digest(row, prev_hash) != record_hash:
            return result(Break(seq, audit_id, "content_altered",
                                "the stored fields do not hash to the row's record_hash"))
        chained += 1
        head, prev_seq = record_hash, seq
        found_anchor = found_anchor or record_hash == expect_head

    counter = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit_records'").fetchone()
    if counter and counter[0] > prev_seq:
        return result(Break(None, None, "tail_truncated", f"rows up to seq {counter[0]} were written but the "
                            + (f"last row is seq {prev_seq}" if prev_seq else "log is empty")))
    if not found_anchor:
        return result(Break(None, None, "anchor_missing",
                            f"no record has hash {expect_head}: the log was truncated or rewritten since that "
                            "head was recorded (or the hash belongs to another log)"))
    return result(None)


@dataclass(frozen=True)
class ChainResult:
    """One writer's chain in a PostgreSQL store (`records`, `head`: up to the problem, if any)."""
    writer: str
    records: int
    head: str
    problem: Break | None     # Break.seq is the writer_seq

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if self.problem is not None:
            p = self.problem
            where = f"writer_seq {p.seq} (audit_id {p.audit_id})" if p.seq is not None else "its tail"
            return f"writer {self.writer}: BROKEN at {where}: {p.kind.replace('_', ' ')}: {p.detail}"
        return f"writer {self.writer}: OK, {self.records} records, head {self.head}"


@dataclass(frozen=True)
class StoreVerifyResult:
    store: str
    chains: list[ChainResult]
    anchors: int
    anchor_head: str
    anchor_problem: Break | None

    @property
    def ok(self) -> bool:
        return self.anchor_problem is None and all(c.ok for c in self.chains)

    def summary(self) -> str:
        lines = [c.summary() for c in self.chains]
        if self.anchor_problem is not None:
            p = self.anchor_problem
            where = f"anchor seq {p.seq}" if p.seq is not None else "anchors"
            lines.append(f"anchors: BROKEN at {where}: {p.kind.replace('_', ' ')}: {p.detail}")
        else:
            lines.append(f"anchors: OK, {self.anchors} anchors, head {self.anchor_head}")
        broken = sum(not c.ok for c in self.chains)
        records = sum(c.records for c in self.chains)
        lines.append(f"OK: {len(self.chains)} chains, {records} records, every chain intact" if self.ok else
                     f"BROKEN: {broken} of {len(self.chains)} chains broken"
                     + ("; the anchor chain is broken" if self.anchor_problem else ""))
        return "\n".join(lines)


def verify_store(target: str, expect_head: str | None = None, *, password_file: str | Path | None = None
                 ) -> StoreVerifyResult:
    """Walk every writer's chain and the anchor chain of the PostgreSQL store `target` (a URL). ValueError
    if it holds no audit trail; ConfigError for a bad URL; StoreUnavailable if it cannot be reached."""
    from audit.store.postgres import anchor_digest

    store = make_store(target, password_file=password_file, pool_size=1)
    try:
        with store.snapshot() as (anchors, rows):
            return _walk_store(store.display, anchors, rows, expect_head, anchor_digest)
    finally:
        store.close()


def _walk_store(display: str, anchors: list[tuple], rows, expect_head: str | None, anchor_digest) -> StoreVerifyResult:
    anchored: dict[tuple[str, int], tuple[int, str]] = {}   # (writer, writer_seq) -> (anchor seq, head)
    last_anchored: dict[str, tuple[int, int]] = {}         # writer -> (highest anchored writer_seq, anchor seq)
    a_head, a_problem, found = GENESIS, None, expect_head is None
    for i, (seq, ts, writer, wseq, head, prev, digest) in enumerate(anchors, start=1):
        if a_problem is None:
            if seq != i:
                a_problem = Break(seq, None, "record_deleted", f"anchor seq {i} missing before this anchor")
            elif prev != a_head:
                a_problem = Break(seq, None, "link_broken", "prev_hash does not match the anchor before")
            elif anchor_digest(seq, ts, writer, wseq, head, prev) != digest:
                a_problem = Break(seq, None, "content_altered", "the anchor's fields do not hash to its anchor_hash")
            else:
                a_head = digest
                found = found or digest == expect_head
        anchored[(writer, wseq)] = (seq, head)
        if wseq > last_anchored.get(writer, (0, 0))[0]:
            last_anchored[writer] = (wseq, seq)
    if a_problem is None and not found:
        a_problem = Break(None, None, "anchor_missing", f"no anchor has hash {expect_head}: the anchors were "
                          "truncated or rewritten since that head was recorded (or it belongs to another store)")

    chains: list[ChainResult] = []
    state: dict = {}

    def finish() -> None:
        if not state:
            return
        w, problem = state["writer"], state["problem"]
        if problem is None and last_anchored.get(w, (0, 0))[0] > state["seq"]:
            wseq, aseq = last_anchored[w]
            problem = Break(None, None, "tail_truncated", f"anchor {aseq} names writer_seq {wseq}, but the "
                            f"chain ends at writer_seq {state['seq']}")
        chains.append(ChainResult(w, state["n"], state["head"], problem))

    for writer, wseq, _id, row, prev, digest in rows:
        if not state or state["writer"] != writer:
            finish()
            state = {"writer": writer, "n": 0, "head": GENESIS, "seq": 0, "problem": None}
        if state["problem"] is not None:
            continue
        audit_id = row["audit_id"]
        expected = state["seq"] + 1
        if wseq != expected:
            state["problem"] = Break(wseq, audit_id, "record_deleted", f"writer_seq {expected}"
                                     + (f"..{wseq - 1}" if wseq - 1 > expected else "") + " missing before this row")
        elif prev != state["head"]:
            state["problem"] = Break(wseq, audit_id, "link_broken", "prev_hash does not match the hash of the row "
                                     "before: it was altered and re-hashed, or rows were reordered, inserted or forged")
        elif _digest(row, prev) != digest:
            state["problem"] = Break(wseq, audit_id, "content_altered",
                                     "the stored fields do not hash to the row's record_hash")
        elif (writer, wseq) in anchored and anchored[(writer, wseq)][1] != digest:
            state["problem"] = Break(wseq, audit_id, "link_broken", f"anchor {anchored[(writer, wseq)][0]} "
                                     "recorded another hash for this row: the chain was rewritten after it")
        else:
            state["n"] += 1
            state["head"], state["seq"] = digest, wseq
    finish()
    seen = {c.writer for c in chains}
    for w, (wseq, aseq) in sorted(last_anchored.items()):
        if w not in seen:
            chains.append(ChainResult(w, 0, GENESIS, Break(None, None, "tail_truncated",
                                                           f"anchor {aseq} names writer_seq {wseq}, but the store "
                                                           "holds no row of this writer")))
    return StoreVerifyResult(display, chains, len(anchors) if a_problem is None else 0, a_head, a_problem)


def _check_head(head: str | None) -> str | None:
    if head is not None and (len(head) != 64 or any(c not in "0123456789abcdef" for c in head)):
        raise ValueError(f"--expect-head must be 64 lowercase hex digits, got {head!r}")
    return head


def _known_errors() -> tuple[type[BaseException], ...]:
    from audit.store import StoreError

    return (ValueError, ConfigError, StoreError)


@cli_main(errors=_known_errors)
def main(argv: list[str] | None = None) -> int:
    """Exit 0: the chain verifies; 1: it does not (tampered, broken or missing head); 2: bad input."""
    ap = argparse.ArgumentParser(prog="python -m audit.verify", description=__doc__.split("\n\n")[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--log", type=Path, help="the audit log (SQLite file)")
    where.add_argument("--store", help="the audit store: a SQLite file or a postgresql:// URL")
    ap.add_argument("--password-file", type=Path, help="PostgreSQL: a file holding the password (mode 0600)")
    ap.add_argument("--expect-head", metavar="HASH",
                    help="a head recorded earlier (SQLite: a record_hash; PostgreSQL: an anchor_hash); it must "
                         "still be in the chain")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = ap.parse_args(argv)
    head = _check_head(args.expect_head)
    if args.store is not None and is_postgres(args.store):
        sres = verify_store(args.store, expect_head=head, password_file=args.password_file)
        if args.json:
            print(json.dumps({"ok": sres.ok, **asdict(sres)}))
        else:
            print(sres.summary())
        return 0 if sres.ok else 1
    if args.store is not None:
        if "://" in args.store:
            fail(f"--store {args.store.split('://', 1)[0]}:// is not a known store (a SQLite file or "
                 "postgresql://USER@HOST:PORT/DBNAME)")
        args.log = Path(args.store)
    return _main_sqlite(args, head)


def _main_sqlite(args, head: str | None) -> int:
    res = verify_log(args.log, expect_head=head)
    journals = sorted(args.log.parent.glob(args.log.name + JOURNAL_SUFFIX + "*"))
    if args.json:
        print(json.dumps({"ok": res.ok, **asdict(res), "journal_files": [str(j) for j in journals]}))
    else:
        print(res.summary())
        if journals:
            # Journal mode (audit/log.py): a running writer's journal, or a dead one's awaiting ingestion.
            print(f"note: {len(journals)} journal file(s) beside the log; records in them are not checked until "
                  "a writer ingests them (a running server does so within milliseconds; a dead one's are "
                  "ingested when the log is next opened)")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
