"""Where the audit stage writes its records: the small interface every audit writer implements.

`AuditLog` (the hash-chained log) is the standard sink; a batch job's per-chunk buffer
(`recsys.batch.scoring.ChunkAuditLog`) is another, which holds a chunk's records and commits them in one
transaction. The audit stage sees only this interface, so a buffering writer is a sink of its own, not a
proxy in front of the log.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from audit.record import AuditRecord


@runtime_checkable
class AuditSink(Protocol):
    """append: one decision record; append_many: several, in one transaction where the sink has them
    (`skip_existing` leaves out records whose audit_id is already stored; `writer` names the chain);
    flush: until everything appended so far is stored. `hash_user` is the sink's pseudonym of a user id:
    the key it uses lives with the log, so the records and the pseudonyms agree."""

    def append(self, rec: "AuditRecord") -> None: ...

    def append_many(self, recs: list["AuditRecord"], *, skip_existing: bool = False,
                    writer: str | None = None) -> int: ...

    def flush(self) -> None: ...

    def hash_user(self, user_id: str) -> str: ...
