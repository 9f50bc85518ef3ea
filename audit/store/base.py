"""The audit-store interface: where chained audit rows are kept, whatever the backend.

Two backends: SQLite (audit/store/sqlite.py, one file on one machine, the default) and PostgreSQL
(audit/store/postgres.py, one store for many replicas). AuditLog (audit/log.py) checks and encodes records,
keeps the local journal and calls a store to chain and commit rows; readers (audit.report, audit.verify,
audit.lookup) and the fleet-wide monitor windows read through the same object.

A row is the dict of stored values of one entry (audit/record.py: the decision columns, or another kind's
audit_id/ts/kind/payload). `commit` chains rows onto the chain of `writer` and commits them in one
transaction: all or none. How chains are kept differs: SQLite keeps one global chain (its write lock
serialises writers anyway); PostgreSQL one chain per writer, with a periodically anchored head (see
audit/store/postgres.py for the measured reasons).
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterator, Protocol

from recsys.errors import ConfigError, EthicrecError


class StoreError(EthicrecError):
    """The store cannot do what was asked (schema, integrity); not worth retrying."""


class StoreUnavailable(StoreError):
    """The store could not be reached (connection refused or lost, server restarting, pool timeout). A commit
    that raised this may or may not have happened: retry with `skip_existing` to find out without a duplicate."""


class SchemaTooNew(StoreError, ConfigError):
    """The store's schema was migrated by a newer ethicrec than this one: refuse to write to it."""


class AuditStore(Protocol):
    #: For messages and reports: the path, or the URL without its password.
    display: str
    #: True when several hosts may write to it at once (then monitors can share a window through it).
    shared: bool

    def open(self) -> None:
        """Create or migrate the schema (idempotent); raises SchemaTooNew for a schema newer than known."""

    def commit(self, rows: list[dict[str, Any]], *, writer: str, skip_existing: bool = False) -> int:
        """Chain `rows` (in order) onto `writer`'s chain and commit them in one transaction; returns how many
        were written. `skip_existing`: leave out rows whose audit_id the store already holds (in the same
        transaction), so committing the same rows again is a no-op."""

    def read(self, since: float | None = None, until: float | None = None,
             user_hashes: list[str] | None = None) -> Iterator[Any]:
        """Decisions (AuditRecord, oldest first) within [since, until), optionally only those of `user_hashes`."""

    def key_id_counts(self) -> Counter:
        """Records per pseudonymisation key id (None: legacy salted hashes)."""

    def close(self) -> None: ...


class WindowSource(Protocol):
    """A monitor window shared by every process writing to one store (audit/monitor.py,
    audit/exposure_window.py): `exchange` adds this process's new entries and returns the newest `window`
    entries of all of them, oldest first."""

    def exchange(self, new: list[Any]) -> list[Any]: ...
