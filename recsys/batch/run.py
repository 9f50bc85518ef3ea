"""Running a batch job with the local engine (this process) or on Ray."""
from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from recsys.batch.inputs import DEFAULT_CHUNK_ROWS, DEFAULT_CHUNK_USERS, inspect_input
from recsys.batch.progress import DEFAULT_INTERVAL_S
from recsys.batch.progress import progress as progress_bar
from recsys.batch.job import BatchSummary, Job, chunk_meta, open_job, summary_of
from recsys.batch.recipe import PipelineRecipe
from recsys.batch.scoring import ChunkScorer, catalog_array
from recsys.domain import AuditMode


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def run_batch(pipeline, catalog_index, declared_features: tuple[str, ...], input_path: Path, output_path: Path, *,
              top_k: int | None = None, audit_mode: AuditMode = AuditMode.ENFORCE,
              chunk_users: int = DEFAULT_CHUNK_USERS, chunk_rows: int = DEFAULT_CHUNK_ROWS, progress: bool = True,
              skip_invalid: bool = False, rejects_path: Path | None = None, overwrite: bool = False,
              engine: str = "local", recipe: PipelineRecipe | None = None, ray_address: str | None = None,
              workers: int | None = None, pool=None, log=_stderr,
              progress_every: float = DEFAULT_INTERVAL_S) -> BatchSummary:
    """Validate INPUT, then score it into the directory OUTPUT (parts + manifest), resuming if
    OUTPUT holds this same job unfinished.

    Progress on stderr (unless `progress` is False): a bar on a terminal, otherwise a line with rows, rows/s
    and ETA every `progress_every` seconds (recsys/batch/progress.py).

    Engine "local": `pipeline` scores in this process; with `workers` > 1, that many worker
    processes each build a pipeline from `recipe` (recsys.batch.process_engine), or the open
    WorkerPool `pool` is used (and left open). Engine "ray" builds one pipeline per Ray actor
    from `recipe`. Every engine commits the same rows."""
    spec = inspect_input(Path(input_path), tuple(declared_features))
    params = {"top_k": top_k, "audit_mode": audit_mode.value, "chunk_users": chunk_users, "chunk_rows": chunk_rows,
              "skip_invalid": skip_invalid, "rejects": str(Path(rejects_path).resolve()) if rejects_path else None,
              **pipeline.identity()}
    catalog_ids = catalog_array(catalog_index)
    job, done = open_job(spec, Path(output_path), params=params, catalog_ids=catalog_ids,
                         rejects_path=Path(rejects_path) if rejects_path else None, overwrite=overwrite,
                         progress=progress, top_k=top_k, audit_mode=audit_mode, log=log,
                         progress_every=progress_every)
    if done is not None:
        log(f"{output_path} already holds this job, complete: nothing to do")
        return done
    resumed = len(job.manifest["parts"])
    t0 = time.perf_counter()
    todo = job.plan.rows - sum(p["rows"] for p in job.manifest["parts"])
    bar = progress_bar(todo, "scoring", enabled=progress, interval=progress_every, smoothing=0.1)
    request_prefix = job.request_prefix
    own_pool = results = None
    try:
        if engine == "local" and (pool is not None or (workers or 1) > 1):
            from recsys.batch.process_engine import WorkerPool, run_in_processes

            if pool is None:
                if recipe is None:
                    raise ValueError("engine 'local' with workers > 1 needs a PipelineRecipe")
                own_pool = pool = WorkerPool(recipe, workers or 1)
            results = run_in_processes(job, pool, spec, top_k=top_k, audit_mode=audit_mode,
                                       request_prefix=request_prefix, identity=pipeline.identity())
        elif engine == "local":
            scorer = ChunkScorer(pipeline, spec, catalog_ids, top_k=top_k, audit_mode=audit_mode,
                                 request_prefix=request_prefix, model_version=params.get("model_version", ""))
            results = _local(job, scorer)
        elif engine == "ray":
            from recsys.batch.ray_engine import run_on_ray

            if recipe is None:
                raise ValueError("engine 'ray' needs a PipelineRecipe")
            results = run_on_ray(job, recipe, top_k=top_k, audit_mode=audit_mode, request_prefix=request_prefix,
                                 address=ray_address, workers=workers)
        else:
            raise ValueError(f"unknown engine {engine!r}")
        for meta, scored in results:
            bar.update(job.commit(meta, scored)["rows"])
        if len(job.manifest["parts"]) != job.plan.chunks:
            raise RuntimeError(f"{len(job.manifest['parts'])} parts committed; the plan has {job.plan.chunks}")
        job.finish()
    finally:
        bar.close()
        if hasattr(results, "close"):
            results.close()   # a generator stopped early runs its clean-up now, not at garbage collection
        if own_pool is not None:
            own_pool.close()
        job.close()
    summary = summary_of(job.manifest, resumed=resumed)
    return dataclasses.replace(summary, seconds={"check": round(job.plan.check_seconds, 3),
                                                 "score": round(time.perf_counter() - t0, 3)})


def _local(job: Job, scorer: ChunkScorer) -> Iterator[tuple[dict, pa.Table]]:
    for chunk in job.chunks_to_score():
        yield chunk_meta(chunk), scorer.score(chunk)
