"""`python -m recsys.batch --input candidates.parquet --output scored.parquet`

Batch rescoring through the very same Pipeline object the server uses (audit
included, one audit record per user). Input columns:

    user_id, item_id          required
    text, group               optional (as the Candidate fields of the RPC)
    feature.<name>            optional numeric features declared by the artifact
    attr.<name>               optional candidate attributes (e.g. attr.content_rating)
    audit.<name>              optional user audit attributes (e.g. audit.age_band)

Output: the input columns plus score, interest_score, ranker_score, rank
(1-based; 0 = not returned), removed, reason, verdict, audit_id, model_version.
Every input problem is reported in one line before any output exists; the
output appears only complete (written to a temporary file, then renamed).
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsys.blend import Blend
from recsys.domain import AuditMode, Candidate, RankRequest, UserContext
from recsys.errors import EthicrecError, InvalidRequest
from recsys.pipeline import Pipeline
from recsys.validation import Limits

REQUIRED = ("user_id", "item_id")
OPTIONAL_STR = ("text", "group")


class BatchInputError(EthicrecError):
    """The input file cannot be processed as it is; names the column or row."""


@dataclass(frozen=True)
class BatchSummary:
    users: int
    rows: int
    removed: int
    verdicts: dict[str, int]


def read_table(path: Path) -> pa.Table:
    if not path.is_file():
        raise BatchInputError(f"input file not found: {path}")
    try:
        if path.suffix.lower() in (".csv", ".tsv"):
            opts = pacsv.ConvertOptions(column_types={"user_id": pa.string(), "item_id": pa.string(),
                                                      "text": pa.string(), "group": pa.string()},
                                        strings_can_be_null=True)
            parse = pacsv.ParseOptions(delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            return pacsv.read_csv(path, parse_options=parse, convert_options=opts)
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise BatchInputError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None


def validate_columns(table: pa.Table, declared_features: tuple[str, ...]) -> None:
    names = table.column_names
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise BatchInputError(f"missing required column(s): {', '.join(missing)} (have: {', '.join(names)})")
    for c in (*REQUIRED, *OPTIONAL_STR):
        if c in names and not (pa.types.is_string(table.schema.field(c).type)
                               or pa.types.is_large_string(table.schema.field(c).type)
                               or pa.types.is_integer(table.schema.field(c).type)):
            raise BatchInputError(f"column {c} must be text (or integer ids); got {table.schema.field(c).type}")
    for c in REQUIRED:
        nulls = table.column(c).null_count
        if nulls:
            raise BatchInputError(f"column {c} has {nulls} empty value(s)")
    for c in names:
        if c.startswith("feature."):
            name = c.removeprefix("feature.")
            if name not in declared_features:
                raise BatchInputError(f"column {c}: undeclared feature; accepted: "
                                      f"{', '.join(declared_features) or 'none'}")
            if not (pa.types.is_floating(table.schema.field(c).type) or pa.types.is_integer(table.schema.field(c).type)):
                raise BatchInputError(f"column {c} must be numeric; got {table.schema.field(c).type}")
        elif c not in (*REQUIRED, *OPTIONAL_STR) and not c.startswith(("attr.", "audit.")):
            raise BatchInputError(f"unknown column {c}; expected user_id, item_id, text, group, "
                                  "feature.<name>, attr.<name>, audit.<name>")


def _as_str(table: pa.Table, col: str) -> list:
    return pc.cast(table.column(col), pa.string()).to_pylist()


def run_batch(pipeline: Pipeline, catalog_index: dict, declared_features: tuple[str, ...], input_path: Path,
              output_path: Path, *, top_k: int | None = None, audit_mode: AuditMode = AuditMode.ENFORCE,
              chunk_users: int = 256, progress: bool = True) -> BatchSummary:
    table = read_table(input_path)
    validate_columns(table, declared_features)
    n = table.num_rows
    users = _as_str(table, "user_id")
    items = _as_str(table, "item_id")
    texts = _as_str(table, "text") if "text" in table.column_names else [None] * n
    groups = _as_str(table, "group") if "group" in table.column_names else [None] * n
    for row, (iid, text) in enumerate(zip(items, texts)):
        if iid not in catalog_index and not text:
            raise BatchInputError(f"row {row}: item {iid!r} is not in the catalog and has no text")
    feat_cols = {c.removeprefix("feature."): table.column(c).to_pylist()
                 for c in table.column_names if c.startswith("feature.")}
    attr_cols = {c.removeprefix("attr."): _as_str(table, c) for c in table.column_names if c.startswith("attr.")}
    audit_cols = {c.removeprefix("audit."): _as_str(table, c) for c in table.column_names if c.startswith("audit.")}

    # Rows of each user, in input order within the user.
    order = np.argsort(np.asarray(users, dtype=object), kind="stable")
    sorted_users = [users[i] for i in order]
    bounds = [0] + [i for i in range(1, n) if sorted_users[i] != sorted_users[i - 1]] + [n]

    score = np.full(n, np.nan)
    interest = np.full(n, np.nan)
    ranker = np.full(n, np.nan)
    rank = np.zeros(n, dtype=np.int32)
    removed = np.zeros(n, dtype=bool)
    reason = [""] * n
    verdict = [""] * n
    audit_id = [""] * n
    model_version = ""
    verdicts: dict[str, int] = {}

    from tqdm import tqdm

    bar = tqdm(total=n, desc="rescoring", unit="row", disable=None if progress else True)
    for s, e in zip(bounds[:-1], bounds[1:]):
        rows = order[s:e]
        user_id = users[rows[0]]
        attrs = {k: v[rows[0]] for k, v in audit_cols.items() if v[rows[0]] is not None}
        cands = tuple(
            Candidate(items[r], texts[r] or None,
                      {k: float(v[r]) for k, v in feat_cols.items() if v[r] is not None},
                      groups[r] or None, {k: v[r] for k, v in attr_cols.items() if v[r] is not None})
            for r in rows)
        req = RankRequest(UserContext(user_id, (), (), attrs), cands, top_k or len(cands), audit_mode,
                          request_id=f"batch:{user_id}")
        try:
            ctx = pipeline.run(req)
        except InvalidRequest as exc:
            raise BatchInputError(f"user {user_id!r}: {exc}") from None
        score[rows] = ctx.scores
        interest[rows] = ctx.interest
        ranker[rows] = ctx.ranker_scores
        for r_pos, p in enumerate(ctx.final, start=1):
            rank[rows[p]] = r_pos
        why = {x.item_id: x.reason for x in ctx.removed}
        for r in rows:
            if items[r] in why:
                removed[r] = True
                reason[r] = why[items[r]]
            verdict[r] = ctx.audit.verdict.value
            audit_id[r] = ctx.audit.audit_id
        verdicts[ctx.audit.verdict.value] = verdicts.get(ctx.audit.verdict.value, 0) + 1
        model_version = ctx.response.model_version
        bar.update(len(rows))
    bar.close()

    out = table
    for name, values, typ in (("score", score, pa.float64()), ("interest_score", interest, pa.float64()),
                              ("ranker_score", ranker, pa.float64()), ("rank", rank, pa.int32()),
                              ("removed", removed, pa.bool_()), ("reason", reason, pa.string()),
                              ("verdict", verdict, pa.string()), ("audit_id", audit_id, pa.string()),
                              ("model_version", [model_version] * n, pa.string())):
        if name in out.column_names:
            out = out.drop_columns([name])
        out = out.append_column(name, pa.array(values, typ))
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(f".{output_path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(out, tmp)
        os.replace(tmp, output_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return BatchSummary(users=len(bounds) - 1, rows=n, removed=int(removed.sum()), verdicts=verdicts)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(prog="python -m recsys.batch", description="Batch rescoring with the ethicrec pipeline.")
    ap.add_argument("--input", type=Path, required=True, help="Parquet or CSV of (user_id, item_id, ...) rows")
    ap.add_argument("--output", type=Path, required=True, help="Parquet file to write")
    ap.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    ap.add_argument("--policy", type=Path, default=None, help="audit policy TOML (default: shipped policy)")
    ap.add_argument("--audit-log", type=Path, default=Path("var/batch-audit.db"))
    ap.add_argument("--top-k", type=int, default=None, help="rank this many per user (default: all)")
    ap.add_argument("--audit-mode", choices=["ENFORCE", "FLAG_ONLY"], default="ENFORCE")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--blend", choices=["lightgbm", "linear"], default="lightgbm")
    ap.add_argument("--blend-weight", type=float, default=0.5, help="linear blend: share of the BERT score")
    args = ap.parse_args(argv)
    if args.output.resolve() == args.input.resolve():
        print("error: --output must differ from --input", file=sys.stderr)
        return 2
    if not 0 <= args.blend_weight <= 1:
        print(f"error: --blend-weight must be between 0 and 1, got {args.blend_weight}", file=sys.stderr)
        return 2
    if args.top_k is not None and args.top_k < 1:
        print(f"error: --top-k must be >= 1, got {args.top_k}", file=sys.stderr)
        return 2
    from audit.log import AuditLog
    from audit.policy import load_policy
    from recsys.artifacts import load_artifacts
    from recsys.pipeline import build_pipeline

    try:
        policy = load_policy(args.policy)
        artifacts = load_artifacts(args.artifacts, device=args.device)
        log = AuditLog(args.audit_log)
        limits = Limits(max_candidates=1_000_000, max_top_k=1_000_000)
        pipeline = build_pipeline(artifacts, policy=policy, audit_log=log, limits=limits,
                                  blend=Blend(args.blend, args.blend_weight))
        summary = run_batch(pipeline, artifacts.catalog.index, artifacts.extra_features, args.input, args.output,
                            top_k=args.top_k, audit_mode=AuditMode(args.audit_mode))
        log.close()
    except EthicrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {summary.rows} rows for {summary.users} users, {summary.removed} removed, "
          f"verdicts {summary.verdicts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
