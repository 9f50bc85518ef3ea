"""`python -m recsys.batch --input candidates.parquet --output scored/`

Batch rescoring through the very same pipeline stages the server uses (audit
included, one audit record per user), in bounded memory, resumable.

Input (Parquet or CSV/TSV), one row per (user, candidate):

    user_id, item_id          required (text or integer ids)
    text, group               optional (as the Candidate fields of the RPC)
    feature.<name>            optional numeric features declared by the artifact
    attr.<name>               optional candidate attributes (e.g. attr.content_rating)
    audit.<name>              optional user audit attributes (e.g. audit.age_band)

All rows of a user must be contiguous (grouped by user_id; not necessarily
sorted): each user is one RankRequest.

Output: a directory of Parquet parts (input columns plus score,
interest_score, ranker_score, rank (1-based; 0 = not returned), removed,
reason, verdict, audit_id, model_version), in input row order, with a
manifest that makes the job resumable and exactly-once (recsys/batch/job.py).
The whole input is checked before anything is written: a problem is one line,
exit 2, nothing created; with --skip-invalid, bad rows go to a rejects file
instead.

Engines: in this process (default); `--workers N`, N worker processes of this
machine (recsys/batch/process_engine.py); `--engine ray`, a Ray Data actor pool
(recsys/batch/ray_engine.py). All commit the same rows.
"""
from recsys.batch.inputs import BatchInputError

__all__ = ["BatchInputError", "BatchSummary", "PipelineRecipe", "build_batch_pipeline", "run_batch", "main"]


def __getattr__(name: str):
    # Lazy: the scoring side imports torch; `python -m recsys.batch` with bad arguments should not wait for it.
    if name == "BatchSummary":
        from recsys.batch.job import BatchSummary

        return BatchSummary
    if name in ("PipelineRecipe", "build_batch_pipeline"):
        from recsys.batch import recipe

        return getattr(recipe, name)
    if name == "run_batch":
        from recsys.batch.run import run_batch

        return run_batch
    raise AttributeError(name)


def main(argv: list[str] | None = None) -> int:
    from recsys.batch.cli import main as _main

    return _main(argv)
