"""What one audit-trail entry is and what its hash covers, apart from where it is stored.

Every entry of the trail is a row in `audit_records`; the chain links rows by `prev_hash` / `record_hash`
(SHA-256 of `canonical_bytes`). Most entries are *decisions* (one audited request, the columns in COLUMNS).
Other kinds (a reviewer's note on a decision, issue 28) are appended to the same chains: such an entry has
an `audit_id`, a `ts`, its `kind` and a JSON `payload`, and its hash covers exactly those (the decision
columns of its row hold neutral defaults). Decision hashes cover the decision columns only, so every hash
written before kinds existed still verifies.

The stores (audit/store/) hold these rows; audit/log.py turns records into rows on the request path.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

#: The hashed columns of a decision, in table order; `seq` is left out because the chain itself fixes the order.
COLUMNS = ("audit_id", "ts", "request_id", "model_version", "policy_version", "user_hash", "audit_mode",
           "verdict", "top_k", "returned_ids", "removed", "candidates", "findings", "user_attributes")
GENESIS = "0" * 64
#: The fields of each candidate entry, stored column-wise (one JSON list per field): JSON for 100 candidates as
#: four lists costs about a fifth of 100 objects with repeated keys, on the request path.
CANDIDATE_FIELDS = ("item_id", "group", "rank", "removed")
#: Columns stored as JSON text.
JSON_COLUMNS = ("returned_ids", "removed", "candidates", "findings", "user_attributes")
#: The kind of an audited request's record; the default of every row.
DECISION = "decision"
#: What the decision columns of a row of another kind hold (stored, not hashed).
NEUTRAL_DECISION = {"request_id": "", "model_version": "", "policy_version": "", "user_hash": "", "audit_mode": "",
                    "verdict": "", "top_k": 0, "returned_ids": "[]", "removed": "[]", "candidates": "[]",
                    "findings": "[]", "user_attributes": "{}"}


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
    #: Which writer's chain holds the record (a replica's process, a batch job's run); set by read_records.
    writer: str | None = field(default=None, compare=False)


def entry_row(kind: str, audit_id: str, ts: float, payload: dict[str, Any]) -> dict[str, Any]:
    """The stored row of an entry of another kind than DECISION (see the module docstring)."""
    if kind == DECISION or not kind or not isinstance(kind, str):
        raise ValueError(f"kind must be a non-empty string other than {DECISION!r}; got {kind!r}")
    if not isinstance(audit_id, str) or not audit_id:
        raise ValueError("audit_id must be a non-empty string")
    return {"audit_id": audit_id, "ts": float(ts), **NEUTRAL_DECISION, "kind": kind,
            "payload": json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)}


def canonical_bytes(row: dict[str, Any], prev_hash: str) -> bytes:
    """What `record_hash` is the SHA-256 of: the stored column values (JSON columns as their stored text,
    so verifying never depends on re-serialising) plus `prev_hash`, as JSON with sorted keys, no
    whitespace and ASCII escapes (Python's json.dumps; floats in its shortest round-trip form). A decision
    covers COLUMNS; an entry of another kind its audit_id, ts, kind and payload."""
    kind = row.get("kind", DECISION)
    if kind == DECISION:
        payload = {name: row[name] for name in COLUMNS}
    else:
        payload = {"audit_id": row["audit_id"], "ts": row["ts"], "kind": kind, "payload": row["payload"]}
    payload["prev_hash"] = prev_hash
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def record_digest(row: dict[str, Any], prev_hash: str) -> str:
    return hashlib.sha256(canonical_bytes(row, prev_hash)).hexdigest()


def candidate_entries(stored: list[dict[str, Any]] | dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Stored candidates back as one dict per candidate (rows from before the column form are already so)."""
    if isinstance(stored, list):
        return stored
    return [dict(zip(CANDIDATE_FIELDS, values)) for values in zip(*(stored[name] for name in CANDIDATE_FIELDS))]
