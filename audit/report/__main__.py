"""`python -m audit.report` — bias report from the audit log and/or an offline run.

    python -m audit.report --log var/audit.db --out reports/
    python -m audit.report --store postgresql://auditor@db:5432/ethicrec --out reports/   # every replica's records
    python -m audit.report --dataset ml-100k --artifacts artifacts-100k --out reports/
    python -m audit.report --log var/audit.db --dataset ml-100k --artifacts DIR --out reports/ --since 2026-11-01
    python -m audit.report --evaluation reports/evaluation-ml-100k.json --out reports/   # model comparison by group

Writes OUT/report.html (self-contained), OUT/report.json (every number shown),
OUT/summary.md, and prints the summary. Exit status: 0 pass, 3 a gated metric
is outside the policy's band (use it to gate a CI job or a release; --no-gate
always exits 0 on a complete report), 2 bad input.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from recsys.atomic import write_text_atomic
from recsys.cli import cli_main

ROOT = Path(__file__).resolve().parents[2]
DATASETS = {"ml-100k": ROOT.parent / "shared" / "data" / "ml-100k", "ml-latest-small": ROOT / "data" / "ml-latest-small"}


def _parse_time(value: str | None, flag: str) -> float | None:
    from audit.report.build import ReportError

    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ReportError(f"{flag} must be epoch seconds or ISO 8601, got {value!r}") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def _references(values: list[str]) -> dict[str, str]:
    from audit.report.build import ReportError

    out = {}
    for v in values:
        if "=" not in v:
            raise ReportError(f"--reference must be TABLE=GROUP (e.g. gender=M, item_group=head), got {v!r}")
        k, g = v.split("=", 1)
        out[k.strip()] = g.strip()
    return out


def _display_store(target: str) -> str:
    """The store as the report may show it: a URL without its password."""
    from audit.store import is_postgres

    if is_postgres(target):
        from urllib.parse import urlsplit

        p = urlsplit(target)
        netloc = p.netloc.rsplit("@", 1)
        user = netloc[0].split(":", 1)[0] + "@" if len(netloc) == 2 else ""
        return f"{p.scheme}://{user}{netloc[-1]}{p.path}"
    return target


def _offline_run(args, policy):
    import tempfile

    from audit.log import AuditLog
    from recsys.compose import build_pipeline, load_artifacts
    from recsys.data import load_dataset
    from recsys.offline import evaluate_with_pipeline

    data = args.data or DATASETS[args.dataset]
    ds = load_dataset(data)
    if ds.name != args.dataset:
        from audit.report.build import ReportError

        raise ReportError(f"--data {data} holds {ds.name}, not {args.dataset}")
    artifacts = load_artifacts(args.artifacts, device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        log = AuditLog(Path(tmp) / "offline-audit.db", salt=b"offline")
        pipe = build_pipeline(artifacts, policy=policy, audit_log=log)
        try:
            run = evaluate_with_pipeline(pipe, artifacts, ds, max_users=args.max_users)
        finally:
            pipe.close()
        log.close()
    return run


def _known_errors() -> tuple[type[BaseException], ...]:
    from audit.report.build import ReportError
    from recsys.errors import EthicrecError

    return (ReportError, EthicrecError)


@cli_main(errors=_known_errors)
def main(argv: list[str] | None = None) -> int:
    """Exit 0: report written and the gate passed (or --no-gate); 3: written, a gated metric failed; 2: bad
    input (nothing written)."""
    ap = argparse.ArgumentParser(prog="python -m audit.report", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--log", type=Path, help="SQLite audit log")
    ap.add_argument("--store", help="the audit store: a SQLite file or postgresql://USER@HOST:PORT/DBNAME "
                                    "(password from ETHICREC_AUDIT_STORE_PASSWORD or libpq's PGPASSWORD)")
    ap.add_argument("--since", help="log records at or after this time (ISO 8601 or epoch seconds)")
    ap.add_argument("--until", help="log records before this time")
    ap.add_argument("--dataset", choices=sorted(DATASETS), help="offline evaluation on this dataset")
    ap.add_argument("--data", type=Path, help="dataset directory (default: ../shared/data/ml-100k or data/ml-latest-small)")
    ap.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="model for the offline evaluation")
    ap.add_argument("--evaluation", type=Path, action="append", default=[], metavar="FILE",
                    help="a python -m recsys.evaluate JSON: models compared overall and by user group; repeatable")
    ap.add_argument("--max-users", type=int, default=None, help="offline: rank at most this many users")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--policy", type=Path, help="policy TOML for bands and group sizes (default: shipped policy)")
    ap.add_argument("--reference", action="append", default=[], metavar="TABLE=GROUP",
                    help="reference group per table (default: the largest group); repeatable")
    ap.add_argument("--windows", type=int, default=5, help="time windows for the log trend")
    ap.add_argument("--n-boot", type=int, default=None, help="bootstrap resamples (default: from the policy)")
    ap.add_argument("--no-gate", action="store_true", help="exit 0 even when a gated metric fails")
    args = ap.parse_args(argv)

    from audit.log import read_records
    from audit.policy import load_policy
    from audit.report.build import ReportError, build_report
    from audit.report.render import render_html, render_markdown
    from recsys.errors import EthicrecError

    # ReportError / EthicrecError: bad input, one line, exit 2, nothing written (cli_main)
    if args.log is not None and args.store is not None:
        raise ReportError("give --log or --store, not both")
    if args.store is not None:
        from audit.store import check_target

        try:
            check_target(args.store, key="--store")
        except EthicrecError as exc:
            raise ReportError(str(exc).replace("config key --store", "--store")) from None
    source = args.store if args.store is not None else args.log
    if source is None and args.dataset is None and not args.evaluation:
        raise ReportError("give --log FILE (or --store), --dataset NAME, --evaluation FILE, or a combination")
    if args.windows < 1:
        raise ReportError(f"--windows must be >= 1, got {args.windows}")
    policy = load_policy(args.policy)
    references = _references(args.reference)
    records = None
    if source is not None:
        from audit.store import StoreError

        since, until = _parse_time(args.since, "--since"), _parse_time(args.until, "--until")
        try:
            records = list(read_records(source, since, until))
        except (FileNotFoundError, ValueError, StoreError) as exc:
            raise ReportError(str(exc)) from None
    from audit.report.evaluation_section import evaluation_section, load_evaluation

    try:
        evaluations = [evaluation_section(load_evaluation(p), str(p)) for p in args.evaluation]
    except ValueError as exc:
        raise ReportError(str(exc)) from None
    run = _offline_run(args, policy) if args.dataset else None
    inputs = {"log": str(args.log) if args.log else None,
              "store": _display_store(args.store) if args.store else None, "since": args.since, "until": args.until,
              "dataset": args.dataset, "artifacts": str(args.artifacts) if args.dataset else None,
              "evaluation": [str(p) for p in args.evaluation]}
    report = build_report(records=records, offline_run=run, policy=policy, references=references,
                          windows=args.windows, n_boot=args.n_boot, inputs=inputs, evaluations=evaluations)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = render_markdown(report)
    write_text_atomic(args.out / "report.json", json.dumps(report, indent=2, allow_nan=True))
    write_text_atomic(args.out / "report.html", render_html(report))
    write_text_atomic(args.out / "summary.md", summary)
    print(summary, end="")
    print(f"wrote {args.out / 'report.html'}, {args.out / 'report.json'}, {args.out / 'summary.md'}")
    return 0 if (report["passed"] or args.no_gate) else 3


if __name__ == "__main__":
    sys.exit(main())
