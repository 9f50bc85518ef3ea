"""Command line of `python -m recsys.batch` (see recsys/batch/__init__.py).

Exit status: 0 done (or OUTPUT already held this job, complete); 2 bad input,
arguments, artifact or policy, or OUTPUT holds another job — one line, and for
input problems nothing is created; 1 scoring stopped (e.g. the audit failed):
the parts committed so far stay, and rerunning the same command resumes;
130 interrupted (also resumable).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from recsys.batch.inputs import DEFAULT_CHUNK_ROWS, DEFAULT_CHUNK_USERS
from recsys.cli import cli_main, fail


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m recsys.batch",
                                 description="Batch rescoring with the ethicrec pipeline (resumable).")
    ap.add_argument("--input", type=Path, required=True,
                    help="Parquet or CSV/TSV of (user_id, item_id, ...) rows, grouped by user_id")
    ap.add_argument("--output", type=Path, required=True,
                    help="directory to write: part-NNNNN.parquet files, _manifest.json, _SUCCESS")
    ap.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    ap.add_argument("--policy", type=Path, default=None, help="audit policy TOML (default: shipped policy)")
    ap.add_argument("--audit-log", type=Path, default=Path("var/batch-audit.db"), help="SQLite audit log")
    ap.add_argument("--audit-store", default=None,
                    help="audit store instead of --audit-log: a SQLite path or postgresql://USER@HOST:PORT/DBNAME "
                         "(the service's shared store; password from ETHICREC_AUDIT_STORE_PASSWORD or "
                         "--audit-store-password-file); the job's records form its own chain there")
    ap.add_argument("--audit-store-password-file", type=Path, default=None)
    ap.add_argument("--audit-key-file", type=Path, default=None,
                    help="pseudonymisation key file (0600, outside the log's directory; default: ETHICREC_AUDIT_KEY, "
                         "else ~/.config/ethicrec/audit.key, created on first use)")
    ap.add_argument("--top-k", type=int, default=None, help="rank this many per user (default: all)")
    ap.add_argument("--audit-mode", choices=["ENFORCE", "FLAG_ONLY"], default="ENFORCE")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--encode-precision", dest="encode_precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="text encoding precision (auto: bf16 on CUDA and on CPUs with native bf16)")
    ap.add_argument("--blend", choices=["lightgbm", "linear"], default="lightgbm")
    ap.add_argument("--blend-weight", type=float, default=0.5, help="linear blend: share of the BERT score")
    ap.add_argument("--engine", choices=["local", "ray"], default="local",
                    help="local: this process; ray: an actor pool on Ray Data (pip install '.[ray]')")
    ap.add_argument("--address", default=None, help="Ray cluster to join (default: start a local one)")
    ap.add_argument("--workers", type=int, default=None,
                    help="local: worker processes, each with its own pipeline (default 1: score in this "
                         "process); ray: actors (default one per CPU, or per GPU when the cluster has GPUs)")
    ap.add_argument("--chunk-users", type=int, default=DEFAULT_CHUNK_USERS,
                    help=f"users per chunk = per output part (default {DEFAULT_CHUNK_USERS})")
    ap.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS,
                    help=f"close a chunk early once it holds this many rows (default {DEFAULT_CHUNK_ROWS}; "
                         "a single larger user still forms one chunk)")
    ap.add_argument("--skip-invalid", action="store_true",
                    help="leave out users whose rows cannot be scored (and rows without a user_id) and write "
                         "them with the reason to the rejects file, instead of stopping")
    ap.add_argument("--rejects", type=Path, default=None, help="rejects file (default OUTPUT/_rejects.parquet)")
    ap.add_argument("--overwrite", action="store_true",
                    help="replace OUTPUT if it holds another job (or is a file) instead of stopping")
    ap.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    ap.add_argument("--progress-every", type=float, default=5.0, metavar="SECONDS",
                    help="when stderr is not a terminal: a progress line (rows, rows/s, ETA) this often (default 5)")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="CPU threads for BERT (default: ETHICREC_TORCH_THREADS or torch's default)")
    return ap


def _audit_target(args) -> str:
    """--audit-store (a URL is kept as it is; a path made absolute for worker processes), else --audit-log."""
    if args.audit_store is None:
        return str(args.audit_log.resolve())
    return args.audit_store if "://" in args.audit_store else str(Path(args.audit_store).resolve())


def _known_errors() -> tuple[type[BaseException], ...]:
    from recsys.batch.inputs import BatchInputError
    from recsys.errors import ArtifactError, ConfigError

    return (BatchInputError, ArtifactError, ConfigError)


@cli_main(errors=_known_errors)
def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = _parser().parse_args(argv)

    if args.output.resolve() == args.input.resolve():
        fail("--output must differ from --input")
    if not 0 <= args.blend_weight <= 1:
        fail(f"--blend-weight must be between 0 and 1, got {args.blend_weight}")
    for name in ("top_k", "chunk_users", "chunk_rows", "workers", "torch_threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            fail(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if not args.progress_every > 0:
        fail(f"--progress-every must be > 0, got {args.progress_every}")
    if args.engine != "ray" and args.address:
        fail("--address applies to --engine ray")

    from recsys.batch.inputs import BatchInputError
    from recsys.errors import ArtifactError, ConfigError, EthicrecError

    # Building: a known error is bad input (exit 2, the tail of cli_main).
    if args.engine == "ray":
        from recsys.batch.ray_engine import require_ray

        require_ray()
    from recsys.batch.recipe import PipelineRecipe
    from recsys.batch.run import run_batch
    from recsys.domain import AuditMode

    recipe = PipelineRecipe(artifacts=str(args.artifacts.resolve()),
                            policy=str(args.policy.resolve()) if args.policy else None,
                            audit_log=_audit_target(args), device=args.device,
                            encode_precision=args.encode_precision, blend=args.blend,
                            blend_weight=args.blend_weight, torch_threads=args.torch_threads,
                            audit_key_file=str(args.audit_key_file.resolve()) if args.audit_key_file else None,
                            audit_store_password_file=(str(args.audit_store_password_file.resolve())
                                                       if args.audit_store_password_file else None))
    pipeline, artifacts, log = recipe.build()
    from recsys.device import freeze_loaded_objects

    freeze_loaded_objects()
    try:
        summary = run_batch(pipeline, artifacts.catalog.index, artifacts.extra_features, args.input, args.output,
                            top_k=args.top_k, audit_mode=AuditMode(args.audit_mode), chunk_users=args.chunk_users,
                            chunk_rows=args.chunk_rows, progress=not args.no_progress,
                            skip_invalid=args.skip_invalid, rejects_path=args.rejects, overwrite=args.overwrite,
                            engine=args.engine, recipe=recipe, ray_address=args.address, workers=args.workers,
                            progress_every=args.progress_every)
    except (BatchInputError, ArtifactError, ConfigError):
        raise   # bad input found mid-job: exit 2 (cli_main)
    # Mid-job, anything else is reported as one line saying the job can be resumed (exit 1; 130 on Ctrl-C).
    except KeyboardInterrupt:
        fail(f"interrupted; committed parts are kept in {args.output}: rerun the same command to resume", 130)
    except EthicrecError as exc:
        fail(f"{exc} — committed parts are kept in {args.output}: rerun the same command to resume", 1)
    except Exception as exc:  # anything else mid-job: one line, resumable
        msg = (str(exc).strip().splitlines() or [""])[0]
        fail(f"{type(exc).__name__}: {msg} — committed parts are kept in {args.output}: "
             "rerun the same command to resume", 1)
    finally:
        log.close()
    rejected = f", {summary.rejected_rows} rows of {summary.rejected_users} users rejected" \
        if summary.rejected_rows else ""
    resumed = f" ({summary.resumed_parts} parts from an earlier run)" if summary.resumed_parts else ""
    print(f"wrote {args.output}: {summary.rows} rows for {summary.users} users in {summary.parts} parts{resumed}, "
          f"{summary.removed} removed{rejected}, verdicts {summary.verdicts}")
    return 0
