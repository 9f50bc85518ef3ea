"""Turning a chunk of whole users into RankRequests, checking them, and scoring
them through the serving Pipeline.

Every user is one RankRequest run through the same stage objects the server
uses, so batch and gRPC answers agree. What differs is only *how* the work
is done for a chunk, never the result:

* the chunk goes through `Pipeline.decide_many` (`run_many` without building
  response objects: batch writes every candidate's row from what was
  decided): the stages run stage by stage over all requests of the chunk,
  and the rank stage predicts the chunk's stacked feature rows in one
  LightGBM call (tree ensembles score each row independently, so the numbers
  are identical);
* numpy's BLAS runs single-threaded while a chunk is scored (see _one_blas_thread);
* the audit stage writes to a `ChunkAuditLog` sink (audit/sink.py), which holds
  the chunk's records and commits them to the audit log in one transaction
  after the chunk is scored (one fsync instead of one per user) and before
  its output part is committed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import repeat
from types import MappingProxyType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from audit.record import AuditRecord
from audit.sink import AuditSink
from recsys.batch.inputs import Chunk, InputSpec, as_str
from recsys.domain import AuditMode, Candidate, RankRequest, UserContext
from recsys.errors import InvalidRequest
from recsys.pipeline import Pipeline
from recsys.validation import Limits, validate_request

# Batch requests carry whole candidate lists: no per-request caps on size or top_k.
BATCH_LIMITS = Limits(max_candidates=10_000_000, max_top_k=10_000_000)

OUTPUT_FIELDS = (("score", pa.float64()), ("interest_score", pa.float64()), ("ranker_score", pa.float64()),
                 ("rank", pa.int32()), ("removed", pa.bool_()), ("reason", pa.string()),
                 ("verdict", pa.string()), ("audit_id", pa.string()), ("model_version", pa.string()))

_NO_VALUES: Mapping[str, Any] = MappingProxyType({})
_FIELD = re.compile(r"^candidates\[(\d+)\]\.(\w+)(?:\[(.*)\])?")
_COLUMN_OF = {"item_id": "item_id", "text": "text", "group": "group", "features": "feature.", "attributes": "attr."}


class UserError(Exception):
    """One user's rows cannot be scored; `row` is the input row it points at."""

    def __init__(self, row: int, message: str) -> None:
        super().__init__(message)
        self.row = row


def catalog_array(catalog_index) -> pa.Array:
    """The catalog's item ids in row order, as the Arrow array chunk columns are looked up in."""
    return pa.array(list(catalog_index), pa.string())


def output_schema(spec: InputSpec) -> pa.Schema:
    fields = [pa.field(c, pa.float64()) if c in spec.features else spec.schema.field(c) for c in spec.columns]
    return pa.schema(fields + [pa.field(n, t) for n, t in OUTPUT_FIELDS])


@dataclass
class ChunkColumns:
    """The chunk's columns as Python lists / arrays, computed once."""

    items: list
    texts: list
    groups: list
    features: dict[str, np.ndarray]      # name -> float64, NaN = missing
    bad_feature: dict[str, np.ndarray]   # CSV only: rows whose text is not a number
    attrs: dict[str, list]
    audits: dict[str, list]
    unknown_no_text: np.ndarray          # not in the catalog and no text (bool per row)


def _floats(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray | None]:
    """float64 with NaN for missing; for text columns also a mask of values that are not numbers."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        try:
            return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            out, bad = np.full(len(col), np.nan), np.zeros(len(col), dtype=bool)
            for i, v in enumerate(col.to_pylist()):
                if v is None:
                    continue
                try:
                    out[i] = float(v)
                except ValueError:
                    bad[i] = True
            return out, bad
    arr = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    return np.asarray(arr, dtype=np.float64), None


def chunk_columns(chunk: Chunk, spec: InputSpec, catalog_ids: pa.Array) -> ChunkColumns:
    t = chunk.table
    n = t.num_rows
    item_col = pc.cast(t.column("item_id"), pa.string())
    items = item_col.to_pylist()
    texts = as_str(t.column("text")) if "text" in spec.columns else [None] * n
    groups = as_str(t.column("group")) if "group" in spec.columns else [None] * n
    features, bad = {}, {}
    for c in spec.features:
        values, mask = _floats(t.column(c))
        features[c.removeprefix("feature.")] = values
        if mask is not None and mask.any():
            bad[c] = mask
    known = pc.is_in(item_col, value_set=catalog_ids).to_numpy(zero_copy_only=False)
    has_text = np.array([bool(x) for x in texts], dtype=bool) if "text" in spec.columns else np.zeros(n, bool)
    return ChunkColumns(items, texts, groups, features, bad,
                        {c.removeprefix("attr."): as_str(t.column(c)) for c in spec.attrs},
                        {c.removeprefix("audit."): as_str(t.column(c)) for c in spec.audits},
                        ~known & ~has_text)


def _user_error(exc: InvalidRequest, rows: np.ndarray, user: str) -> UserError:
    m = _FIELD.match(exc.field)
    if m:
        i, what, key = int(m.group(1)), m.group(2), m.group(3)
        col = _COLUMN_OF.get(what, what)
        if col.endswith(".") and key:
            col += key
        return UserError(int(rows[i]), f"row {int(rows[i])} (user {user!r}, column {col}): {exc.description}")
    return UserError(int(rows[0]), f"row {int(rows[0])} (user {user!r}): {exc}")


def build_requests(chunk: Chunk, cols: ChunkColumns, *, top_k: int | None, audit_mode: AuditMode,
                   request_prefix: str, validate: bool) -> list[RankRequest | UserError]:
    """One RankRequest per user of the chunk, or the UserError that stops it (with `validate`).

    Checks, in the order the server applies them: validate_request (ids, texts,
    duplicates, limits, finite features), then "not in the catalog and has no
    text"; batch-only checks first: a feature cell that is not a number (CSV),
    an audit.<name> value that differs between rows of one user.
    """
    out: list[RankRequest | UserError] = []
    items, texts, groups = cols.items, cols.texts, cols.groups
    feats = list(cols.features.items())
    attrs = list(cols.attrs.items())
    if not (feats or attrs):
        texts_or_none = [t or None for t in texts]
        groups_or_none = [g or None for g in groups]
    for u, user in enumerate(chunk.user_ids):
        s, e = int(chunk.starts[u]), int(chunk.starts[u + 1])
        rows = chunk.rows[s:e]
        try:
            if validate:
                for c, mask in cols.bad_feature.items():
                    hit = np.flatnonzero(mask[s:e])
                    if len(hit):
                        r = int(rows[hit[0]])
                        raise UserError(r, f"row {r} (user {user!r}, column {c}): "
                                           f"{chunk.table.column(c)[s + int(hit[0])].as_py()!r} is not a number")
            user_attrs: dict[str, str] = {}
            for name, values in cols.audits.items():
                distinct = {v for v in values[s:e] if v is not None}
                if len(distinct) > 1 and validate:
                    raise UserError(int(rows[0]), f"row {int(rows[0])} (user {user!r}, column audit.{name}): "
                                                  f"differs between the user's rows ({', '.join(sorted(distinct))})")
                if distinct:
                    user_attrs[name] = min(distinct)
            if feats or attrs:
                cands = tuple(
                    Candidate(items[r], texts[r] or None, {k: float(v[r]) for k, v in feats if v[r] == v[r]},
                              groups[r] or None, {k: v[r] for k, v in attrs if v[r] is not None})
                    for r in range(s, e))
            else:   # one read-only empty mapping shared by all: two dicts per row were 40 % of this loop
                cands = tuple(map(Candidate, items[s:e], texts_or_none[s:e], repeat(_NO_VALUES),
                                  groups_or_none[s:e], repeat(_NO_VALUES)))
            req = RankRequest(UserContext(user, (), (), user_attrs), cands, top_k or len(cands), audit_mode,
                              request_id=f"{request_prefix}{int(rows[0])}")
            if validate:
                try:
                    validate_request(req, BATCH_LIMITS)
                except InvalidRequest as exc:
                    raise _user_error(exc, rows, user) from None
                hit = np.flatnonzero(cols.unknown_no_text[s:e])
                if len(hit):
                    i = int(hit[0])
                    raise _user_error(InvalidRequest(f"candidates[{i}].item_id",
                                                     f"item {items[s + i]!r} is not in the catalog and has no text"),
                                      rows, user)
            out.append(req)
        except UserError as exc:
            out.append(exc)
    return out


def plainly_valid(chunk: Chunk, cols: ChunkColumns, spec: InputSpec, *, top_k: int | None, request_prefix: str,
                  limits: Limits = BATCH_LIMITS) -> bool:
    """True only if every user of the chunk passes `build_requests(..., validate=True)`, decided from whole
    columns (pyarrow / numpy) without building a RankRequest per user.

    The input check runs over the whole input before anything is written; building and validating one
    request per user there cost as much as a third of a warm batch run. This check is conservative: any
    doubt (a null id, a value near a limit it does not model) returns False, and the exact per-user path
    then finds the first problem and its message. tests/recsys/test_batch_fast_check.py compares both
    on inputs with every kind of defect.
    """
    t = chunk.table
    n = t.num_rows
    if n == 0 or cols.bad_feature or cols.unknown_no_text.any():
        return False
    max_id = limits.max_id_chars
    if top_k is not None and not 1 <= top_k <= limits.max_top_k:
        return False
    sizes = np.diff(chunk.starts)
    if sizes.min() < 1 or sizes.max() > limits.max_candidates or (top_k is None and sizes.max() > limits.max_top_k):
        return False
    if len(request_prefix) + len(str(int(chunk.rows.max()))) > max_id:
        return False
    if any(not isinstance(u, str) or len(u) > max_id for u in chunk.user_ids):
        return False

    def lengths_within(column: str, low: int, high: int, *, allow_null: bool) -> bool:
        col = pc.cast(t.column(column), pa.string())
        if col.null_count == len(col):
            return allow_null
        if col.null_count and not allow_null:
            return False
        lens = pc.utf8_length(col)
        return low <= pc.min(lens).as_py() and pc.max(lens).as_py() <= high

    if not lengths_within("item_id", 1, max_id, allow_null=False):
        return False
    if "text" in spec.columns and not lengths_within("text", 0, limits.max_text_chars, allow_null=True):
        return False
    if "group" in spec.columns and not lengths_within("group", 0, max_id, allow_null=True):
        return False
    for names in (spec.features, spec.attrs, spec.audits):   # each is at most one map entry per column
        if len(names) > limits.max_attributes or any(len(c.split(".", 1)[1]) > max_id for c in names):
            return False
    if any(not lengths_within(c, 0, max_id, allow_null=True) for c in (*spec.attrs, *spec.audits)):
        return False
    if any(np.isinf(v).any() for v in cols.features.values()):
        return False
    # A user's audit.<name> values must agree (nulls aside): per user, the smallest and largest code match.
    seg_starts = chunk.starts[:-1]
    for c in spec.audits:
        enc = pc.dictionary_encode(pc.cast(t.column(c), pa.string())).combine_chunks()
        codes = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        hi = np.maximum.reduceat(codes, seg_starts)
        lo = np.minimum.reduceat(np.where(codes < 0, np.iinfo(np.int64).max, codes), seg_starts)
        if np.any((hi >= 0) & (lo != hi)):
            return False
    # No item twice for one user: (user, item) keys all distinct.
    enc = pc.dictionary_encode(pc.cast(t.column("item_id"), pa.string())).combine_chunks()
    item_codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    keys = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes) * (len(enc.dictionary) + 1) + item_codes
    return len(np.unique(keys)) == n


def batch_audit_id(part: int, request_id: str) -> str:
    """The audit_id of a batch user's record: a function of (job, run, chunk, user) — the request_id names
    the job, the run and the user's first input row — so re-scoring a chunk after a crash yields the same
    ids and `skip_existing` keeps the log at one record per user (recsys/batch/job.py). 32 hex digits,
    like the serving path's ids."""
    return hashlib.sha256(f"{request_id}/part-{part}".encode()).hexdigest()[:32]


class ChunkAuditLog(AuditSink):
    """The audit sink a batch pipeline's audit stage writes to: records are held until `flush_chunk`, which
    gives them their (job, run, chunk, user) audit_ids and appends the chunk's records to `log` in one
    transaction, leaving out any the log already holds."""

    def __init__(self, log: AuditSink) -> None:
        self.log = log
        self.pending: list[AuditRecord] = []

    def append(self, rec: AuditRecord) -> None:
        self.pending.append(rec)

    def append_many(self, recs: list[AuditRecord], *, skip_existing: bool = False,
                    writer: str | None = None) -> int:
        """Held like `append`'s (committed at the next flush, which decides skipping and the writer)."""
        self.pending.extend(recs)
        return len(recs)

    def hash_user(self, user_id: str) -> str:
        return self.log.hash_user(user_id)

    def window_source(self, kind: str, size: int, encode, decode):
        """The log's shared window (None when the log shares none): batch changes nothing there."""
        source = getattr(self.log, "window_source", None)   # an optional capability of a sink
        return source(kind, size, encode, decode) if source is not None else None

    def flush(self) -> None:
        """Commit the held records as they are (their own audit_ids), then flush the log."""
        self._commit(None)
        self.log.flush()

    def flush_chunk(self, part: int) -> dict[str, str]:
        """Commit the held records re-keyed by `batch_audit_id(part, ...)`, leaving out those the log
        already holds (a chunk re-scored after a crash). Returns {request_id: audit_id} of the records."""
        return self._commit(part)

    def _commit(self, part: int | None) -> dict[str, str]:
        recs, self.pending = self.pending, []
        if part is not None:
            for rec in recs:
                rec.audit_id = batch_audit_id(part, rec.request_id)
        if recs:
            self.log.append_many(recs, skip_existing=part is not None, writer=batch_writer(recs[0].request_id))
        return {rec.request_id: rec.audit_id for rec in recs}

    def discard(self) -> None:
        self.pending = []


def batch_writer(request_id: str) -> str | None:
    """The audit writer of a batch job: `batch-<job id>/<run token>` from its request ids
    (`batch-<job id>.<run token>-row<N>`, recsys/batch/job.py), so every record of a job sits on the job's own
    chain of a PostgreSQL store, whichever worker wrote it, and reports show the job as one writer."""
    if not request_id.startswith("batch-") or "-row" not in request_id:
        return None
    return request_id.rsplit("-row", 1)[0].replace(".", "/", 1)


def batch_policy(policy):
    """The policy as batch applies it: the rolling user-group monitor (a serving-time
    signal whose findings depend on which requests came before) is off, so a
    user's result does not depend on chunking, engine, or a restart."""
    monitor = getattr(policy, "monitor", None)
    if monitor is not None and getattr(monitor, "enabled", False):
        policy = dataclasses.replace(policy, monitor=dataclasses.replace(monitor, enabled=False))
    return policy


_blas_controller = None


def _one_blas_thread():
    """The per-user matrix products are small: a multi-threaded BLAS spends more time waking
    threads than multiplying (3x slower per chunk on a busy 2-core machine). Parallelism
    comes from the engine (worker processes, Ray actors), not from BLAS. The controller that
    finds the loaded BLAS libraries is made once: finding them cost ~2 % of a warm run per chunk."""
    global _blas_controller
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - scikit-learn brings it
        import contextlib

        return contextlib.nullcontext()
    if _blas_controller is None:
        _blas_controller = ThreadpoolController()
    return _blas_controller.limit(limits=1, user_api="blas")


class ChunkScorer:
    """Scores chunks with one pipeline (built once per process or Ray actor)."""

    def __init__(self, pipeline: Pipeline, spec: InputSpec, catalog_ids: pa.Array, *, top_k: int | None,
                 audit_mode: AuditMode, request_prefix: str, model_version: str) -> None:
        self.pipeline = pipeline
        self.spec = spec
        self.catalog_ids = catalog_ids
        self.top_k = top_k
        self.audit_mode = audit_mode
        self.request_prefix = request_prefix
        self.model_version = model_version
        self.schema = output_schema(spec)
        # The chunk buffers the pipeline's audit stage writes to (recsys/batch/recipe.py builds them in).
        self.audit_logs = [sink for sink in pipeline.resources().sinks if isinstance(sink, ChunkAuditLog)]

    def score(self, chunk: Chunk) -> pa.Table:
        """The chunk's rows in input order with the output columns; audit records flushed."""
        cols = chunk_columns(chunk, self.spec, self.catalog_ids)
        reqs = build_requests(chunk, cols, top_k=self.top_k, audit_mode=self.audit_mode,
                              request_prefix=self.request_prefix, validate=False)
        ids: dict[str, str] = {}
        try:
            with _one_blas_thread():
                ctxs = self.pipeline.decide_many(reqs)  # type: ignore[arg-type]
            for log in self.audit_logs:
                ids.update(log.flush_chunk(chunk.index))
        except BaseException:
            for log in self.audit_logs:
                log.discard()
            raise
        n = chunk.table.num_rows
        score, interest, ranker = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
        rank = np.zeros(n, dtype=np.int32)
        removed = np.zeros(n, dtype=bool)
        reason: list = [""] * n
        verdict: list = []
        audit_id: list = []
        for u, ctx in enumerate(ctxs):
            s, e = int(chunk.starts[u]), int(chunk.starts[u + 1])
            score[s:e], interest[s:e], ranker[s:e] = ctx.scores, ctx.interest, ctx.ranker_scores
            if ctx.final:
                rank[s + np.asarray(ctx.final, dtype=np.int64)] = np.arange(1, len(ctx.final) + 1, dtype=np.int32)
            if ctx.removed:
                pos = {iid: i for i, iid in enumerate(ctx.item_ids)}
                for x in ctx.removed:
                    removed[s + pos[x.item_id]] = True
                    reason[s + pos[x.item_id]] = x.reason
            verdict += [ctx.audit.verdict.value] * (e - s)
            audit_id += [ids.get(ctx.request.request_id, ctx.audit.audit_id)] * (e - s)
        table = chunk.table
        for c in self.spec.features:   # CSV reads features as text; output them as the numbers used
            i = table.schema.get_field_index(c)
            table = table.set_column(i, c, pa.array(cols.features[c.removeprefix("feature.")], pa.float64()))
        for (name, typ), values in zip(OUTPUT_FIELDS, (score, interest, ranker, rank, removed, reason, verdict,
                                                       audit_id, [self.model_version] * n)):
            table = table.append_column(pa.field(name, typ), pa.array(values, typ))
        return table.cast(self.schema)
