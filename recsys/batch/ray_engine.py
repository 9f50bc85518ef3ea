"""`--engine ray`: the scoring pass on Ray Data, one pipeline per actor.

The driver validates the input and cuts it into chunks of whole users exactly
as the local engine does, then writes the chunks still to score into a spool
file (OUTPUT/_spool.parquet, one row group per chunk, rejected users already
left out). Ray Data maps an actor pool (`ActorPoolStrategy(size=N)`; one GPU
per actor when the cluster has GPUs, else one CPU) over the list of row
groups: each actor loads the pipeline once, reads its chunk's row group and
scores it. Chunks never split a user, so every actor sees whole candidate
lists. Results come back to the driver in order (`preserve_order`), which
commits each as a part and updates the manifest exactly like the local engine;
so a Ray job can be resumed by either engine and gives the same rows.

With `--address` the job joins an existing cluster: the spool and the audit
log are then read and written by the workers, so OUTPUT and the audit log
must be on storage every node sees.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.atomic import publish_file, temp_path
from recsys.batch.inputs import BatchInputError, Chunk
from recsys.domain import AuditMode

if TYPE_CHECKING:
    from recsys.batch.job import Job

SPOOL = "_spool.parquet"


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise BatchInputError("--engine ray needs Ray, which is not installed: pip install '.[ray]'") from None
    return ray


def chunk_from_table(index: int, table: pa.Table, rows: np.ndarray) -> Chunk:
    """A chunk rebuilt from its rows (users contiguous, as the driver cut them)."""
    n = table.num_rows
    u = pc.cast(table.column("user_id"), pa.string()).combine_chunks()
    if n == 0:
        return Chunk(index, table, rows, [], np.zeros(1, np.int64))
    change = pc.not_equal(u.slice(1), u.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.flatnonzero(change) + 1, [n]]).astype(np.int64)
    return Chunk(index, table, rows, pc.take(u, pa.array(starts[:-1])).to_pylist(), starts)


class RayChunkScorer:
    """Ray Data callable class: one pipeline per actor, one chunk (spool row group) per call."""

    def __init__(self, recipe, spec, spool: str, top_k: int | None, audit_mode: str, request_prefix: str) -> None:
        from recsys.batch.scoring import ChunkScorer, catalog_array
        from recsys.device import freeze_loaded_objects

        pipeline, artifacts, self.log = recipe.build()
        freeze_loaded_objects()
        self.scorer = ChunkScorer(pipeline, spec, catalog_array(artifacts.catalog.index), top_k=top_k,
                                  audit_mode=AuditMode(audit_mode), request_prefix=request_prefix,
                                  model_version=artifacts.version)
        self.spool = pq.ParquetFile(spool)

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = []
        for rg, part in zip(batch.column("rg").to_pylist(), batch.column("part").to_pylist()):
            t = self.spool.read_row_group(rg)
            rows = t.column("_row").to_numpy()
            scored = self.scorer.score(chunk_from_table(part, t.drop_columns(["_row"]), rows))
            out.append(scored.append_column("_part", pa.array(np.full(scored.num_rows, part), pa.int64())))
        return pa.concat_tables(out)


def write_spool(job: Job, path: Path) -> list[tuple[dict, int]]:
    """The chunks still to score, one row group each; [(meta, row group or -1 if empty)]."""
    from recsys.batch.job import chunk_meta

    schema = pa.schema(list(job.spec.schema) + [pa.field("_row", pa.int64())])
    tmp = temp_path(path)
    out: list[tuple[dict, int]] = []
    rg = 0
    with pq.ParquetWriter(tmp, schema) as w:
        for chunk in job.chunks_to_score():
            meta = chunk_meta(chunk)
            if chunk.table.num_rows == 0:
                out.append((meta, -1))
                continue
            t = chunk.table.select(list(job.spec.columns)).cast(job.spec.schema)
            t = t.append_column("_row", pa.array(chunk.rows, pa.int64()))
            w.write_table(t, row_group_size=max(1, t.num_rows))
            out.append((meta, rg))
            rg += 1
    publish_file(tmp, path)
    return out


def run_on_ray(job: Job, recipe, *, top_k: int | None, audit_mode: AuditMode, request_prefix: str,
               address: str | None, workers: int | None) -> Iterator[tuple[dict, pa.Table]]:
    ray = require_ray()
    from recsys.batch.scoring import output_schema

    spool = job.output / SPOOL
    plan = write_spool(job, spool)
    try:
        todo = [(meta, rg) for meta, rg in plan if rg >= 0]
        started = False
        if todo and not ray.is_initialized():
            os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")   # no C++ log lines on our stderr
            kw = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                      configure_logging=True)
            if address:
                ray.init(address=address, **kw)
            else:
                ray.init(num_cpus=workers or os.cpu_count() or 1, **kw)
            started = True
        results = _ray_results(ray, todo, job, recipe, spool, top_k, audit_mode, request_prefix, workers) \
            if todo else iter(())
        try:
            empty = output_schema(job.spec).empty_table()
            for meta, rg in plan:
                if rg < 0:
                    yield meta, empty
                else:
                    got_meta, table = next(results)
                    assert got_meta is meta
                    yield meta, table
            for _ in results:   # let Ray's iterator finish (and check nothing is left over)
                raise RuntimeError("Ray returned more parts than were sent")
        finally:
            if hasattr(results, "close"):
                results.close()   # before shutdown: a suspended Ray iterator would report to a dead cluster
            if started:
                ray.shutdown()
    finally:
        spool.unlink(missing_ok=True)


def _ray_results(ray, todo, job: Job, recipe, spool: Path, top_k, audit_mode: AuditMode, request_prefix: str,
                 workers: int | None) -> Iterator[tuple[dict, pa.Table]]:
    import ray.data

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    n = workers or max(1, int(resources.get("CPU", 1)))
    per_actor = {"num_gpus": 1} if gpus >= 1 else {"num_cpus": 1}
    if gpus >= 1:
        n = min(n, gpus)
    n = max(1, min(n, len(todo)))
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    logging.getLogger("ray.data").setLevel(logging.ERROR)   # our own progress bar reports progress
    ctx.enable_progress_bars = False
    ds = ray.data.from_items([{"rg": rg, "part": meta["part"]} for meta, rg in todo], override_num_blocks=len(todo))
    ds = ds.map_batches(RayChunkScorer, batch_size=1, batch_format="pyarrow",
                        compute=ray.data.ActorPoolStrategy(size=n),
                        fn_constructor_kwargs={"recipe": recipe, "spec": job.spec, "spool": str(spool.resolve()),
                                               "top_k": top_k, "audit_mode": audit_mode.value,
                                               "request_prefix": request_prefix},
                        **per_actor)
    pending: list[pa.Table] = []
    have = 0
    queue = iter(todo)
    meta, _ = next(queue)
    want = meta["_rows"]
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        parts = batch.column("_part").to_numpy()
        change = np.flatnonzero(parts[1:] != parts[:-1]) + 1
        for s, e in zip(np.concatenate([[0], change]), np.concatenate([change, [len(parts)]])):
            piece = batch.slice(int(s), int(e - s))
            if int(parts[s]) != meta["part"]:
                raise RuntimeError(f"Ray returned part {int(parts[s])} while part {meta['part']} was incomplete")
            pending.append(piece.drop_columns(["_part"]))
            have += piece.num_rows
            if have == want:
                yield meta, pa.concat_tables(pending).combine_chunks()
                pending, have = [], 0
                nxt = next(queue, None)
                if nxt is None:
                    meta, want = {"part": -1}, -1
                else:
                    meta = nxt[0]
                    want = meta["_rows"]
    if pending or meta.get("part", -1) != -1:
        raise RuntimeError("Ray returned fewer rows than the chunks hold")
