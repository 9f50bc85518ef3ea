"""`python -m audit.verify --log FILE` — check the audit log's hash chain.

    python -m audit.verify --log var/audit.db
    python -m audit.verify --log var/audit.db --expect-head 3f1c…   # a head hash saved elsewhere earlier
    python -m audit.verify --log var/audit.db --json

Exit status: 0 chain intact, 1 the first broken link is printed (seq, audit_id,
what is wrong), 2 bad input (one line on stderr).

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
        defaults = {"user_attributes": "'{}'", "prev_hash": "NULL", "record_hash": "NULL"}  # older logs
        names = ("seq", *COLUMNS, "prev_hash", "record_hash")
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
        row = dict(zip(COLUMNS, values))
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m audit.verify", description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", required=True, type=Path, help="the audit log (SQLite file)")
    ap.add_argument("--expect-head", metavar="HASH",
                    help="a record_hash recorded earlier (e.g. a past head); it must still be in the chain")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = ap.parse_args(argv)
    head = args.expect_head
    if head is not None and (len(head) != 64 or any(c not in "0123456789abcdef" for c in head)):
        print(f"error: --expect-head must be 64 lowercase hex digits, got {head!r}", file=sys.stderr)
        return 2
    try:
        res = verify_log(args.log, expect_head=head)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
