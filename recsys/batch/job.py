"""A batch job: validate the whole input, then score it chunk by chunk into an
output directory of parts plus a manifest, resumable after a crash.

    OUTPUT/part-00000.parquet …   one per chunk of whole users, input row order
    OUTPUT/_manifest.json         input fingerprint, job parameters, plan, committed parts
    OUTPUT/_rejects.parquet       with --skip-invalid: rows left out and why
    OUTPUT/_SUCCESS               written last, when every part is committed

Order of writes for each part: the chunk's audit records are committed to the
audit log; the part is written to a temporary name, fsynced and renamed into
place; then the manifest (temp + fsync + rename) lists it. A part that is not
in the manifest does not exist as far as the job is concerned: a restart
deletes it, with any temporary file, and scores that chunk again. So a killed
job rerun with the same arguments produces every row exactly once.

Audit records are exactly-once too, whatever the kill point: a record's
audit_id is derived from (job, run, chunk, user) — `batch_audit_id`, the
user's request_id being `batch-<job id>.<run>-row<first input row of the user>`
— and a chunk's records are written with `skip_existing`, in one transaction.
A chunk re-scored after a crash that came after its records were committed
(but before its part was) writes nothing new: the log keeps the first records,
the output names them, and a finished job has exactly one record per scored
user. `<run>` is drawn when OUTPUT is created and kept in the manifest, so a
resume continues the same run, while a new run of the same job (`--overwrite`)
gets records of its own. (A job started before run ids existed resumes with
its old request ids, `batch-<job id>-row<N>`.)
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys import atomic
from recsys.batch.inputs import BatchInputError, Chunk, Chunker, InputSpec, Rejected, iter_chunks
from recsys.batch.progress import DEFAULT_INTERVAL_S
from recsys.batch.progress import progress as progress_bar
from recsys.batch.scoring import UserError, build_requests, chunk_columns, plainly_valid
from recsys.digest import sha256_file
from recsys.domain import AuditMode

FORMAT = "ethicrec-batch/1"
MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"
REJECTS = "_rejects.parquet"
LOCK = ".lock"
@dataclass(frozen=True)
class BatchSummary:
    users: int
    rows: int
    removed: int
    verdicts: dict[str, int]
    parts: int = 0
    rejected_rows: int = 0
    rejected_users: int = 0
    resumed_parts: int = 0          # parts found committed by an earlier run
    already_complete: bool = False
    seconds: dict = field(default_factory=dict)   # this run: "check" (pass 1) and "score"


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


# The durable-write steps are recsys.atomic's. `_fsync_file` and `write_json_atomic` stay module names here,
# always called through them: tests/recsys/test_batch_kill_points.py wraps them by name to kill the job at
# those points.
_fsync_file = atomic.fsync_file


def write_json_atomic(path: Path, data: dict) -> None:
    # compact: the C encoder, rewritten per part
    atomic.write_text_atomic(path, json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n")


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    tmp = atomic.temp_path(path)
    pq.write_table(table, tmp)
    _fsync_file(tmp)
    atomic.rename_into_place(tmp, path)


@dataclass(frozen=True)
class WrittenPart:
    """A scored chunk already written (and fsynced) to a temporary file in OUTPUT by a batch worker, with what
    the manifest records about it; `Job.commit` moves it into place. Writing the part where it was scored
    keeps Parquet encoding off the driver, which would otherwise do it for every worker."""

    tmp: Path
    rows: int
    removed: int
    verdicts: dict


def part_tmp_path(output: Path, index: int) -> Path:
    return output / f".{part_name(index)}.tmp"


def write_part(table: pa.Table, output: Path, index: int, starts: list[int]) -> WrittenPart:
    """Write `table` (the scored chunk `index`, users starting at `starts`) to its temporary part file."""
    tmp = part_tmp_path(output, index)
    pq.write_table(table, tmp)
    _fsync_file(tmp)
    removed, verdicts = part_counts(table, starts)
    return WrittenPart(tmp, table.num_rows, removed, verdicts)


def part_counts(table: pa.Table, starts: list[int]) -> tuple[int, dict[str, int]]:
    """(removed rows, verdict -> users) of a scored chunk; one verdict per user, read at its first row."""
    if not len(table):
        return 0, {}
    removed = int(np.count_nonzero(table.column("removed").to_numpy(zero_copy_only=False)))
    verdicts: dict[str, int] = {}
    for v in pc.take(table.column("verdict"), pa.array(np.asarray(starts[:-1], dtype=np.int64))).to_pylist():
        verdicts[v] = verdicts.get(v, 0) + 1
    return removed, verdicts


def fingerprint(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(path)}


@dataclass
class Plan:
    chunks: int = 0
    users: int = 0
    rows: int = 0                 # rows to score
    input_rows: int = 0
    rejected_rows: int = 0
    rejected_users: int = 0
    drop_before: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))   # rows left out before chunking
    drop_users: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))    # rows of rejected users
    check_seconds: float = 0.0    # pass 1 in this run (0 when resuming)

    def as_json(self) -> dict:
        return {"chunks": self.chunks, "users": self.users, "rows": self.rows, "input_rows": self.input_rows,
                "rejected_rows": self.rejected_rows, "rejected_users": self.rejected_users}


class _RejectsWriter:
    """Rejected rows streamed to a temporary Parquet file outside the output until validation ends."""

    def __init__(self, spec: InputSpec) -> None:
        self.schema = pa.schema(list(spec.schema) + [pa.field("input_row", pa.int64()),
                                                      pa.field("reject_reason", pa.string()),
                                                      pa.field("reject_scope", pa.string())])
        self.spec = spec
        fd, name = tempfile.mkstemp(prefix="ethicrec-rejects-", suffix=".parquet")
        os.close(fd)
        self.path = Path(name)
        self.writer = pq.ParquetWriter(self.path, self.schema)
        self.before: list[np.ndarray] = []
        self.users: list[np.ndarray] = []
        self.n_rows = 0
        self.n_users = 0

    def add(self, table: pa.Table, rows: np.ndarray, reasons: list[str], scope: str) -> None:
        t = table.select(list(self.spec.columns)).cast(self.spec.schema)
        t = t.append_column("input_row", pa.array(rows, pa.int64()))
        t = t.append_column("reject_reason", pa.array(reasons, pa.string()))
        t = t.append_column("reject_scope", pa.array([scope] * len(rows), pa.string()))
        self.writer.write_table(t)
        (self.before if scope == "row" else self.users).append(np.asarray(rows, np.int64))
        self.n_rows += len(rows)
        self.n_users += scope == "user"

    def row_reject(self, rej: Rejected) -> None:
        self.add(rej.table, rej.rows, rej.reason, "row")

    def close(self) -> None:
        self.writer.close()

    def discard(self) -> None:
        try:
            self.writer.close()
        except Exception:
            pass
        self.path.unlink(missing_ok=True)

    def install(self, dest: Path) -> None:
        tmp = atomic.temp_path(dest)
        shutil.copyfile(self.path, tmp)
        _fsync_file(tmp)
        atomic.rename_into_place(tmp, dest)
        self.path.unlink(missing_ok=True)


def _sorted(parts: list[np.ndarray]) -> np.ndarray:
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def validate_input(spec: InputSpec, catalog_ids: pa.Array, *, chunk_users: int, chunk_rows: int, top_k: int | None,
                   audit_mode: AuditMode, request_prefix: str, rejects: _RejectsWriter | None,
                   progress: bool, progress_every: float = DEFAULT_INTERVAL_S) -> Plan:
    """Pass 1: every check the scoring pass would make, before anything is written.

    Strict (rejects None): the first problem raises BatchInputError naming its row.
    """
    plan = Plan()
    chunker = Chunker(chunk_users, chunk_rows, rejects.row_reject if rejects else None)
    bar = progress_bar(spec.num_rows, "checking input", enabled=progress, interval=progress_every, leave=False)
    try:
        for chunk in iter_chunks(spec, chunker):
            cols = chunk_columns(chunk, spec, catalog_ids)
            if plainly_valid(chunk, cols, spec, top_k=top_k, request_prefix=request_prefix):
                plan.users += len(chunk.user_ids)
                plan.rows += chunk.table.num_rows
                plan.chunks += 1
                bar.update(chunk.end_row - bar.n if chunk.end_row > bar.n else 0)
                continue
            results = build_requests(chunk, cols, top_k=top_k, audit_mode=audit_mode,
                                     request_prefix=request_prefix, validate=True)
            for u, res in enumerate(results):
                s, e = int(chunk.starts[u]), int(chunk.starts[u + 1])
                if isinstance(res, UserError):
                    if rejects is None:
                        raise BatchInputError(str(res))
                    rejects.add(chunk.table.slice(s, e - s), chunk.rows[s:e], [str(res)] * (e - s), "user")
                else:
                    plan.users += 1
                    plan.rows += e - s
            plan.chunks += 1
            bar.update(chunk.end_row - bar.n if chunk.end_row > bar.n else 0)
    finally:
        bar.close()
    if rejects is not None:
        plan.rejected_rows, plan.rejected_users = rejects.n_rows, rejects.n_users
        plan.drop_before, plan.drop_users = _sorted(rejects.before), _sorted(rejects.users)
    plan.input_rows = plan.rows + plan.rejected_rows
    return plan


@dataclass
class Job:
    spec: InputSpec
    output: Path
    rejects_path: Path | None
    manifest: dict
    plan: Plan
    progress: bool

    @property
    def committed(self) -> dict[int, dict]:
        return {p["part"]: p for p in self.manifest["parts"]}

    @property
    def request_prefix(self) -> str:
        """The users' request_ids are this plus their first input row (module docstring)."""
        return self.manifest.get("request_prefix") or f"batch-{self.manifest['job_id']}-row"

    def commit(self, chunk_meta: dict, scored: pa.Table | WrittenPart) -> dict:
        """Write one part durably (or move a worker's written part into place), then list it in the manifest."""
        name = part_name(chunk_meta["part"])
        if isinstance(scored, WrittenPart):
            if scored.tmp != part_tmp_path(self.output, chunk_meta["part"]):
                raise RuntimeError(f"part {chunk_meta['part']} was written to {scored.tmp}, not this job's output")
            atomic.rename_into_place(scored.tmp, self.output / name)   # fsynced by the worker (write_part)
            rows, removed, verdicts = scored.rows, scored.removed, scored.verdicts
        else:
            write_parquet_atomic(scored, self.output / name)
            rows = scored.num_rows
            removed, verdicts = part_counts(scored, chunk_meta["_starts"])
        entry = {**{k: v for k, v in chunk_meta.items() if not k.startswith("_")}, "file": name, "rows": rows,
                 "removed": removed, "verdicts": verdicts,
                 "bytes": (self.output / name).stat().st_size, "committed_at": time.time()}
        self.manifest["parts"].append(entry)
        self.manifest["parts"].sort(key=lambda p: p["part"])
        self.manifest["updated_at"] = time.time()
        write_json_atomic(self.output / MANIFEST, self.manifest)
        return entry

    def close(self) -> None:
        fd = getattr(self, "_lock", None)
        if fd is not None:
            os.close(fd)
            self._lock = None

    def finish(self) -> None:
        self.manifest["complete"] = True
        self.manifest["updated_at"] = time.time()
        write_json_atomic(self.output / MANIFEST, self.manifest)
        atomic.write_text_atomic(self.output / SUCCESS, json.dumps(
            {"job_id": self.manifest["job_id"], "parts": len(self.manifest["parts"])}) + "\n")

    def remaining(self) -> tuple[int, int]:
        """(first uncommitted chunk index, the input row it starts at)."""
        done = self.committed
        k = 0
        while k in done:
            k += 1
        return k, (done[k - 1]["end_row"] if k else 0)

    def chunker(self, chunk_users: int, chunk_rows: int) -> tuple[Chunker, int]:
        k, start = self.remaining()
        return Chunker(chunk_users, chunk_rows, None, check_order=False, drop_rows=self.plan.drop_before,
                       next_index=k), start

    def chunks_to_score(self) -> Iterator[Chunk]:
        """Pass 2's chunks: those not yet committed, rejected users left out."""
        p = self.manifest["params"]
        chunker, start = self.chunker(p["chunk_users"], p["chunk_rows"])
        done = self.committed
        for chunk in iter_chunks(self.spec, chunker, start):
            if chunk.index in done:
                continue
            yield chunk.without_users_at(self.plan.drop_users)


def chunk_meta(chunk: Chunk) -> dict:
    return {"part": chunk.index, "first_row": chunk.first_row, "end_row": chunk.end_row, "users": len(chunk.user_ids),
            "first_user": chunk.user_ids[0] if chunk.user_ids else None,
            "last_user": chunk.user_ids[-1] if chunk.user_ids else None, "_starts": chunk.starts.tolist(),
            "_rows": chunk.table.num_rows}


def _ours(name: str) -> bool:
    return (name.startswith("part-") and name.endswith(".parquet")) or name in (MANIFEST, SUCCESS, REJECTS, LOCK) \
        or name.startswith(".") and name.endswith(".tmp") or name == "_spool.parquet"


def _clear(output: Path) -> None:
    for p in output.iterdir():
        if _ours(p.name) and p.name != LOCK:
            p.unlink()


def _lock(output: Path):
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    fd = os.open(output / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise BatchInputError(f"another batch job is writing {output}") from None
    return fd


def _differences(old: dict, new: dict) -> list[str]:
    out = []
    if old.get("format") != FORMAT:
        out.append(f"manifest format {old.get('format')!r}")
    oi, ni = old.get("input", {}), new["input"]
    for k in ("sha256", "size"):
        if oi.get(k) != ni[k]:
            out.append(f"input {k} {str(oi.get(k))[:16]} -> {str(ni[k])[:16]}")
    op, np_ = old.get("params", {}), new["params"]
    for k in sorted(set(op) | set(np_)):
        if op.get(k) != np_.get(k):
            out.append(f"{k} {op.get(k)!r} -> {np_.get(k)!r}")
    return out


def _load_manifest(output: Path) -> dict | None:
    path = output / MANIFEST
    if not path.exists():
        return None
    try:
        m = json.loads(path.read_text())
        if not isinstance(m, dict) or not isinstance(m.get("parts"), list):
            raise ValueError("not a manifest")
        return m
    except (OSError, ValueError) as exc:
        raise BatchInputError(f"{path} is unreadable ({exc}); rerun with --overwrite to start again") from None


def _plan_from_manifest(output: Path, manifest: dict, rejects_path: Path | None) -> Plan:
    plan = Plan(**{k: manifest["plan"][k] for k in ("chunks", "users", "rows", "input_rows", "rejected_rows",
                                                    "rejected_users")})
    if manifest["params"]["skip_invalid"]:
        if rejects_path is None or not rejects_path.exists():
            raise BatchInputError(f"{rejects_path} (the rejects of this job) is missing; rerun with --overwrite")
        t = pq.read_table(rejects_path, columns=["input_row", "reject_scope"])
        rows = t.column("input_row").to_numpy()
        row_scope = np.asarray(t.column("reject_scope").to_pylist()) == "row"
        plan.drop_before = np.sort(rows[row_scope]) if len(rows) else np.zeros(0, np.int64)
        plan.drop_users = np.sort(rows[~row_scope]) if len(rows) else np.zeros(0, np.int64)
    return plan


def _check_parts(output: Path, manifest: dict) -> None:
    listed = {p["file"] for p in manifest["parts"]}
    for p in manifest["parts"]:
        f = output / p["file"]
        if not f.is_file() or f.stat().st_size != p["bytes"]:
            raise BatchInputError(f"{f} is listed in the manifest but is missing or changed; "
                                  "rerun with --overwrite to start again")
    for f in output.iterdir():   # parts of a chunk that never made it into the manifest, and temp files
        if (f.name.startswith("part-") and f.name.endswith(".parquet") and f.name not in listed) or \
                (f.name.startswith(".") and f.name.endswith(".tmp")):
            f.unlink()


def open_job(spec: InputSpec, output: Path, *, params: dict, catalog_ids: pa.Array, rejects_path: Path | None,
             overwrite: bool, progress: bool, top_k: int | None, audit_mode: AuditMode,
             log: Callable[[str], None], progress_every: float = DEFAULT_INTERVAL_S
             ) -> tuple[Job | None, BatchSummary | None]:
    """Validate (unless resuming the same job), then create or reopen OUTPUT.

    Returns (job, None), or (None, summary) when OUTPUT already holds this job, complete.
    """
    output = Path(output)
    info = fingerprint(spec.path)
    ident = {"input_sha256": info["sha256"], "input_size": info["size"], "params": params}
    job_id = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    new = {"format": FORMAT, "job_id": job_id, "input": {**info, "format": spec.format, "columns": list(spec.columns)},
           "params": params}
    if output.exists() and not output.is_dir():
        if not overwrite:
            raise BatchInputError(f"--output {output} is a file; batch output is a directory of parts "
                                  "(choose another path, or --overwrite to replace it)")
    old = _load_manifest(output) if output.is_dir() else None
    resume = old is not None and not _differences(old, new)
    if old is not None and not resume and not overwrite:
        diff = _differences(old, new)
        raise BatchInputError(f"{output} holds another job ({'; '.join(diff[:3])}); "
                              "rerun with --overwrite to replace it, or choose another --output")
    if output.is_dir() and old is None:   # never delete or mix with files that are not batch output
        foreign = [p.name for p in output.iterdir() if not _ours(p.name)]
        if foreign:
            raise BatchInputError(f"{output} is not empty and holds no {MANIFEST} (e.g. {foreign[0]}); "
                                  "choose another --output")
    if resume:
        lock = _lock(output)
        rejects = rejects_path or output / REJECTS
        plan = _plan_from_manifest(output, old, rejects if old["params"]["skip_invalid"] else None)
        _check_parts(output, old)
        if old.get("complete") and (output / SUCCESS).exists():
            if lock is not None:
                os.close(lock)
            return None, summary_of(old, resumed=len(old["parts"]), complete=True)
        job = Job(spec, output, rejects, old, plan, progress)
        job._lock = lock  # type: ignore[attr-defined]
        if old["parts"]:
            log(f"resuming {output}: {len(old['parts'])} of {plan.chunks} parts already committed")
        return job, None

    request_prefix = f"batch-{job_id}.{secrets.token_hex(4)}-row"   # this run's (module docstring)
    writer = _RejectsWriter(spec) if params["skip_invalid"] else None
    try:
        t0 = time.perf_counter()
        plan = validate_input(spec, catalog_ids, chunk_users=params["chunk_users"], chunk_rows=params["chunk_rows"],
                              top_k=top_k, audit_mode=audit_mode, request_prefix=request_prefix, rejects=writer,
                              progress=progress, progress_every=progress_every)
        plan.check_seconds = time.perf_counter() - t0
        if writer is not None:
            writer.close()
        # Only now does anything appear on disk.
        if output.exists() and not output.is_dir():
            output.unlink()
        output.mkdir(parents=True, exist_ok=True)
        lock = _lock(output)
        if output.is_dir():
            _clear(output)
        rejects = None
        if writer is not None:
            rejects = rejects_path or output / REJECTS
            rejects.parent.mkdir(parents=True, exist_ok=True)
            writer.install(rejects)
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    now = time.time()
    manifest = {**new, "created_at": now, "updated_at": now, "complete": False, "plan": plan.as_json(),
                "rejects": str(rejects) if rejects else None, "request_prefix": request_prefix, "parts": []}
    write_json_atomic(output / MANIFEST, manifest)
    job = Job(spec, output, rejects, manifest, plan, progress)
    job._lock = lock  # type: ignore[attr-defined]
    return job, None


def summary_of(manifest: dict, *, resumed: int = 0, complete: bool = False) -> BatchSummary:
    verdicts: dict[str, int] = {}
    for p in manifest["parts"]:
        for k, v in p["verdicts"].items():
            verdicts[k] = verdicts.get(k, 0) + v
    plan = manifest["plan"]
    return BatchSummary(users=sum(p["users"] for p in manifest["parts"]),
                        rows=sum(p["rows"] for p in manifest["parts"]),
                        removed=sum(p["removed"] for p in manifest["parts"]), verdicts=verdicts,
                        parts=len(manifest["parts"]), rejected_rows=plan["rejected_rows"],
                        rejected_users=plan["rejected_users"], resumed_parts=resumed, already_complete=complete)

