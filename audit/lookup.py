"""`python -m audit.lookup --log FILE --user ID` — one user's decisions in the audit log; needs the key.

    python -m audit.lookup --log var/audit.db --user 414                      # the configured key
    python -m audit.lookup --log var/audit.db --user 414 --key-file old.key --key-file new.key
    python -m audit.lookup --log var/audit.db --user 414 --legacy-salt-file /secure/audit.db.salt --json
    python -m audit.lookup --store postgresql://auditor@db:5432/ethicrec --user 414   # every replica's records

The log stores user ids only as `hmac:<key id>:<HMAC-SHA256(key, user id)>` (audit/pseudonym.py), so a
reviewer computes the user's pseudonym under each key they hold and selects the records that carry it.
Keys: `ETHICREC_AUDIT_KEY`, every `--key-file` (after a rotation, pass the old keys too: each record names
its key id, and the summary lists key ids present in the log for which no key was given), and, when none
is given, the configured or default key file (the same lookup as the server's). Records written before keyed
pseudonyms (salted SHA-256, "legacy") are searched only with `--legacy-salt-file` (or `--legacy-salt-env`
for ETHICREC_AUDIT_SALT). `audit.report` and `audit.verify` need no key.

Exit status: 0 (records found or not: the count is printed), 2 bad input (one line on stderr).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections import Counter
from pathlib import Path

from audit.log import read_records
from audit.store import StoreError, is_postgres, make_store
from audit.store.sqlite import key_ids_sqlite
from audit.pseudonym import (KEY_ENV, KEY_FILE_ENV, LEGACY_SALT_ENV, AuditKey, check_key_file, key_id_of,
                             legacy_pseudonym, read_key_file, resolve_key)
from recsys.cli import cli_main, fail
from recsys.errors import ConfigError


def _keys(args: argparse.Namespace) -> list[AuditKey]:
    keys: list[AuditKey] = []
    log = args.log   # None for a database: no directory the key must stay out of
    if os.environ.get(KEY_ENV):
        keys.append(resolve_key(log))   # type: ignore[arg-type]   # the env key, checked
    for path in args.key_file:
        keys.append(read_key_file(path, log))
    if not keys:
        found = resolve_key(log, create=False)   # ETHICREC_AUDIT_KEY_FILE or the default file
        if found is None:
            raise ConfigError(f"no audit key: set {KEY_ENV}, pass --key-file, or set {KEY_FILE_ENV} (the lookup "
                              "needs the key the records were written with)")
        keys.append(found)
    return keys


def _legacy_salts(args: argparse.Namespace) -> list[bytes]:
    salts = []
    for path in args.legacy_salt_file:
        check_key_file(path, None, "legacy salt file")
        salts.append(Path(path).read_bytes())
    if args.legacy_salt_env:
        value = os.environ.get(LEGACY_SALT_ENV)
        if not value:
            raise ConfigError(f"--legacy-salt-env: {LEGACY_SALT_ENV} is not set")
        salts.append(value.encode())
    return salts


def key_ids_in_log(path: Path | str) -> Counter:
    """Records per key id (None = legacy salted hashes), in a SQLite log or a postgresql:// store."""
    if is_postgres(str(path)):
        store = make_store(str(path), pool_size=1)
        try:
            return store.key_id_counts()
        finally:
            store.close()
    return key_ids_sqlite(path)


def lookup(log: Path | str, user_id: str, keys: list[AuditKey], legacy_salts: list[bytes] = (),
           since: float | None = None, until: float | None = None) -> tuple[list, dict]:
    """(records of `user_id`, summary) — the summary counts the log's records per key id and says which key
    ids no given key covers. `log`: a SQLite file or a postgresql:// URL."""
    if not is_postgres(str(log)) and not Path(log).is_file():
        raise ValueError(f"audit log not found: {log}")
    present = key_ids_in_log(log)
    hashes = [k.pseudonym(user_id) for k in keys] + [legacy_pseudonym(s, user_id) for s in legacy_salts]
    records = list(read_records(log, since=since, until=until, user_hashes=hashes))
    given = {k.key_id for k in keys}
    summary = {
        "user_records": len(records),
        "by_key_id": dict(Counter(key_id_of(r.user_hash) or "legacy" for r in records)),
        "log_records_by_key_id": {(kid or "legacy"): n for kid, n in sorted(present.items(), key=lambda x: str(x[0]))},
        "key_ids_without_key": sorted(k for k in present if k is not None and k not in given),
        "legacy_records_not_searched": 0 if legacy_salts else present.get(None, 0),
    }
    return records, summary


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")


@cli_main(errors=(ConfigError, ValueError, OSError, StoreError))
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m audit.lookup", description=__doc__.split("\n\n")[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--log", type=Path, help="the audit log (SQLite file)")
    where.add_argument("--store", help="the audit store: a SQLite file or postgresql://USER@HOST:PORT/DBNAME "
                                       "(password from ETHICREC_AUDIT_STORE_PASSWORD or libpq's PGPASSWORD)")
    ap.add_argument("--user", required=True, help="the user id as the frontend sent it")
    ap.add_argument("--key-file", action="append", default=[], type=Path,
                    help="an audit key file (repeat for keys rotated out; default: the configured key)")
    ap.add_argument("--legacy-salt-file", action="append", default=[], type=Path,
                    help="the salt of records written before keyed pseudonyms (was <log>.salt)")
    ap.add_argument("--legacy-salt-env", action="store_true", help=f"also search legacy records with ${LEGACY_SALT_ENV}")
    ap.add_argument("--since", type=float, default=None, help="epoch seconds")
    ap.add_argument("--until", type=float, default=None, help="epoch seconds")
    ap.add_argument("--json", action="store_true", help="one JSON object: records and summary")
    args = ap.parse_args(argv)
    source: Path | str = args.log
    if args.store is not None:
        if is_postgres(args.store):
            source = args.store
        elif "://" in args.store:
            fail(f"--store {args.store.split('://', 1)[0]}:// is not a known store (a SQLite file or "
                 "postgresql://USER@HOST:PORT/DBNAME)")
        else:
            source = args.log = Path(args.store)
    keys = _keys(args)
    salts = _legacy_salts(args)
    records, summary = lookup(source, args.user, keys, salts, args.since, args.until)
    if args.json:
        print(json.dumps({"user": args.user, "summary": summary, "records": [
            {"audit_id": r.audit_id, "ts": r.ts, "request_id": r.request_id, "model_version": r.model_version,
             "policy_version": r.policy_version, "key_id": key_id_of(r.user_hash) or "legacy",
             "audit_mode": r.audit_mode, "verdict": r.verdict, "top_k": r.top_k, "returned_ids": r.returned_ids,
             "removed": r.removed, "findings": r.findings, "user_attributes": r.user_attributes}
            for r in records]}))
        return 0
    for r in records:
        removed = ", ".join(f"{x.get('item_id')}:{x.get('reason')}" for x in r.removed) or "-"
        findings = ", ".join(sorted({f.get("code", "?") for f in r.findings})) or "-"
        print(f"{_when(r.ts)}  {r.audit_id}  request {r.request_id or '-'}  {r.verdict}  "
              f"returned {len(r.returned_ids)}  removed {removed}  findings {findings}  "
              f"key {key_id_of(r.user_hash) or 'legacy'}")
    by_key = ", ".join(f"{k} ({n})" for k, n in summary["by_key_id"].items())
    print(f"{summary['user_records']} records for user {args.user!r}" + (f" (key ids: {by_key})" if by_key else ""))
    if summary["key_ids_without_key"]:
        print(f"note: records under key id(s) {', '.join(summary['key_ids_without_key'])} were not searched: no key "
              "given for them (pass the rotated-out key with --key-file)")
    if summary["legacy_records_not_searched"]:
        print(f"note: {summary['legacy_records_not_searched']} legacy records (salted SHA-256, written before keyed "
              "pseudonyms) were not searched: pass --legacy-salt-file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
