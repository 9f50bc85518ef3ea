"""`--engine local --workers N` (N > 1): the scoring pass on N worker processes of this machine.

Why processes: most of a chunk's cost is the pipeline's per-user Python work, which holds
the GIL, so threads would not use a second core. Each worker builds the pipeline once from
the PipelineRecipe (as a Ray actor does) and scores whole chunks; the driver reads and cuts
the input exactly as the in-process engine does, keeps at most `2 * N` chunks in flight
(bounded memory), and commits the results strictly in chunk order, so the manifest, the
resume point and the rows are the same as with one process.

Each worker writes its chunks' audit records to the shared audit log itself, one
transaction per chunk (SQLite's BEGIN IMMEDIATE serialises the writers and keeps one hash
chain), then the chunk's part to a temporary file in OUTPUT (fsynced); the driver only moves
parts into place and lists them in the manifest, in order — so audit records are durable
before their part is committed, as with the in-process engine, and Parquet encoding runs on
the workers.

`WorkerPool` can outlive one job (a caller scoring many inputs pays the workers' start-up
once); `run_batch(..., pool=...)` uses it and leaves it open. Workers are spawned, so a script
that starts a pool must guard its entry point with `if __name__ == "__main__":` (the spawned
interpreter imports the script's module again).
"""
from __future__ import annotations

import atexit
import dataclasses
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.batch.inputs import Chunk, InputSpec
from recsys.batch.job import WrittenPart
from recsys.device import freeze_loaded_objects
from recsys.domain import AuditMode

if TYPE_CHECKING:
    from recsys.batch.job import Job
    from recsys.batch.recipe import PipelineRecipe

# Per worker process: what _init_worker built. A worker-process module global is how
# ProcessPoolExecutor's initializer hands state to the tasks (it is never set in the driver).
_WORKER: dict = {}


def _exit_with_driver(driver: int, interval: float = 0.5) -> None:
    """A worker outlives a driver killed with SIGKILL: the pool's queues never report EOF (each worker
    holds both ends of its task pipe), so it would wait for tasks forever, holding its memory and the
    driver's stdout. Poll the parent pid and leave when it changes. Leaving mid-chunk is safe: the audit
    log's transaction rolls back, and the driver never committed that chunk's part."""
    def watch() -> None:
        while os.getppid() == driver:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-driver", daemon=True).start()


def _init_worker(recipe: PipelineRecipe, cpu_share: int, driver: int) -> None:
    _exit_with_driver(driver)
    if recipe.torch_threads is None:   # N workers share the machine: by default each takes its share of cores
        recipe = dataclasses.replace(recipe, torch_threads=cpu_share)
    try:
        import numba

        numba.set_num_threads(max(1, min(cpu_share, numba.config.NUMBA_NUM_THREADS)))
    except ImportError:  # pragma: no cover - numba is a dependency
        pass
    pipeline, artifacts, log = recipe.build()
    atexit.register(log.close)
    freeze_loaded_objects()
    _WORKER.update(pipeline=pipeline, artifacts=artifacts, log=log, scorer=(None, None))


def _score(settings: tuple, identity: dict, chunk: Chunk, output: Path) -> WrittenPart:
    from recsys.batch.job import write_part
    from recsys.batch.scoring import ChunkScorer, catalog_array

    known, scorer = _WORKER["scorer"]
    if known != settings:   # a new job: one job at a time, so only its scorer is kept
        mine = _WORKER["pipeline"].identity()
        if mine != identity:   # a pool built from another artifact or policy than the job's pipeline
            raise ValueError(f"worker pipeline {mine} differs from the job's {identity}")
        spec, top_k, audit_mode, prefix = settings
        artifacts = _WORKER["artifacts"]
        scorer = ChunkScorer(_WORKER["pipeline"], spec, catalog_array(artifacts.catalog.index), top_k=top_k,
                             audit_mode=AuditMode(audit_mode), request_prefix=prefix,
                             model_version=artifacts.version)
        _WORKER["scorer"] = (settings, scorer)
    return write_part(scorer.score(chunk), output, chunk.index, chunk.starts.tolist())


class WorkerPool:
    """N worker processes, each holding one batch pipeline built from `recipe`.

    Workers are started with the `spawn` method: forking a process that already runs torch's
    and numba's thread pools can deadlock the child.
    """

    def __init__(self, recipe: PipelineRecipe, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1; got {workers!r}")
        self.workers = workers
        share = max(1, (os.cpu_count() or 1) // workers)
        self._executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(recipe, share, os.getpid()))

    def warm_up(self) -> None:
        """Start every worker and build its pipeline now (otherwise the first chunks pay for it)."""
        futures = [self._executor.submit(os.getpid) for _ in range(self.workers * 2)]
        for f in futures:
            f.result()

    def submit(self, settings: tuple, identity: dict, chunk: Chunk, output: Path) -> Future:
        # A chunk's columns are slices of the record batches they were read from, and pickling a slice
        # writes its whole parent buffers: 1 GB for a 51k-row chunk of the bench input vs 1.6 MB compacted.
        compact = dataclasses.replace(chunk, table=chunk.table.combine_chunks())
        return self._executor.submit(_score, settings, identity, compact, output)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_in_processes(job: Job, pool: WorkerPool, spec: InputSpec, *, top_k: int | None, audit_mode: AuditMode,
                     request_prefix: str, identity: dict) -> Iterator[tuple[dict, WrittenPart]]:
    """(chunk meta, the part a worker wrote) in chunk order, `2 * workers` chunks in flight at most.
    `identity` is the job's Pipeline.identity(): a worker whose pipeline differs refuses to score."""
    from recsys.batch.job import chunk_meta

    settings = (spec, top_k, audit_mode.value, request_prefix)
    pending: deque[tuple[dict, Future]] = deque()
    try:
        for chunk in job.chunks_to_score():
            pending.append((chunk_meta(chunk), pool.submit(settings, identity, chunk, job.output)))
            if len(pending) >= 2 * pool.workers:
                meta, fut = pending.popleft()
                yield meta, fut.result()
        while pending:
            meta, fut = pending.popleft()
            yield meta, fut.result()
    finally:
        for _, fut in pending:   # stopped early (an error, or the consumer went away): drop what is queued
            fut.cancel()
        for _, fut in pending:   # and let the chunks already running finish, so no worker writes after we return
            if not fut.cancelled():
                fut.exception()
