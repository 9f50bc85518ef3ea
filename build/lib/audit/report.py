"""`python -m audit.report --log FILE --out DIR`: a bias report from the audit log.

Computation (Fairlearn MetricFrame over every audited candidate, pooled over
requests) is kept apart from rendering (HTML with embedded plots, JSON, and a
console summary). Writes DIR/report.json and DIR/report.html; with --gate,
exits 3 when a group's selection-rate or exposure ratio to the reference
group falls outside the pass band.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import json
import os
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audit.fairness import exposure_by_group
from audit.log import read_records

DEFAULT_BAND = (0.8, 1.25)
DEFAULT_MIN_GROUP_SIZE = 30


class ReportError(Exception):
    """Input problems, reported as one line."""


def load_candidates(records: list) -> pd.DataFrame:
    """One row per (audited request, candidate that stayed eligible); rank 0 = not returned."""
    rows = []
    for rec in records:
        for c in rec.candidates:
            if c.get("removed"):
                continue
            rows.append((rec.audit_id, rec.ts, c["group"], int(c["rank"])))
    return pd.DataFrame(rows, columns=["audit_id", "ts", "group", "rank"])


def compute_report(records: list, *, band: tuple[float, float] = DEFAULT_BAND, reference_group: str | None = None,
                   min_group_size: int = DEFAULT_MIN_GROUP_SIZE) -> dict[str, Any]:
    if not records:
        raise ReportError("no audit records in the selected range")
    cands = load_candidates(records)
    stats = exposure_by_group(cands["group"].to_numpy(), cands["rank"].to_numpy())
    table = stats.table
    ref = reference_group or str(table["n"].idxmax())
    if ref not in table.index:
        raise ReportError(f"reference group {ref!r} not in the log; groups: {', '.join(map(str, table.index))}")
    groups = []
    violations = []
    for g, row in table.iterrows():
        enough = int(row["n"]) >= min_group_size
        sr_ratio = float(row["selection_rate"] / table.loc[ref, "selection_rate"]) \
            if table.loc[ref, "selection_rate"] > 0 else float("nan")
        ex_ratio = float(row["exposure_ratio"] / table.loc[ref, "exposure_ratio"]) \
            if table.loc[ref, "exposure_ratio"] > 0 else float("nan")
        status = "insufficient evidence" if not enough else (
            "pass" if all(band[0] <= r <= band[1] for r in (sr_ratio, ex_ratio)) else "fail")
        entry = {"group": str(g), "n": int(row["n"]), "selection_rate": float(row["selection_rate"]),
                 "exposure_share": float(row["exposure_share"]), "candidate_share": float(row["candidate_share"]),
                 "exposure_ratio": float(row["exposure_ratio"]), "selection_rate_ratio_to_reference": sr_ratio,
                 "exposure_ratio_to_reference": ex_ratio, "status": status}
        groups.append(entry)
        if status == "fail":
            for metric, value in (("selection_rate_ratio_to_reference", sr_ratio),
                                  ("exposure_ratio_to_reference", ex_ratio)):
                if not band[0] <= value <= band[1]:
                    violations.append({"group": str(g), "metric": metric, "value": value, "band": list(band)})
    findings = Counter(f["code"] for rec in records for f in rec.findings)
    removals = Counter(r["reason"] for rec in records for r in rec.removed)
    harm_flags = sum(1 for rec in records for f in rec.findings if f["code"] in ("HARMFUL_TEXT", "BLOCKLISTED_TERM"))
    ts = [rec.ts for rec in records]
    return {
        "generated_at": datetime.now(timezone.utc).isoformat(),
        "records": len(records),
        "time_range": {"from": _iso(min(ts)), "to": _iso(max(ts))},
        "model_versions": sorted({rec.model_version for rec in records}),
        "policy_versions": sorted({rec.policy_version for rec in records}),
        "verdicts": dict(Counter(rec.verdict for rec in records)),
        "item_group_exposure": {
            "computed_with": "fairlearn.metrics.MetricFrame",
            "reference_group": ref, "band": list(band), "min_group_size": min_group_size,
            "selection_rate_ratio_min_over_max": stats.selection_rate_ratio,
            "selection_rate_difference": stats.selection_rate_difference,
            "groups": groups,
        },
        "harm": {"flags": harm_flags, "removals_by_reason": dict(removals)},
        "findings_by_code": dict(findings),
        "violations": violations,
        "passed": not violations,
    }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


def _bar_png(labels: list[str], values: list[float], title: str, ylabel: str, ref_line: float | None = None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    ax.bar(labels, values, color="#4878a8")
    if ref_line is not None:
        ax.axhline(ref_line, color="#c44e52", linestyle="--", linewidth=1)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def render_html(report: dict[str, Any]) -> str:
    e = report["item_group_exposure"]
    labels = [g["group"] for g in e["groups"]]
    sel = _bar_png(labels, [g["selection_rate"] for g in e["groups"]], "Selection rate into the top-k", "rate")
    exp = _bar_png(labels, [g["exposure_ratio"] for g in e["groups"]],
                   "Exposure share / candidate share", "ratio", ref_line=1.0)
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(g['group'])}</td><td>{g['n']}</td><td>{g['selection_rate']:.4f}</td>"
        f"<td>{g['exposure_share']:.4f}</td><td>{g['candidate_share']:.4f}</td><td>{g['exposure_ratio']:.3f}</td>"
        f"<td>{g['selection_rate_ratio_to_reference']:.3f}</td><td>{g['exposure_ratio_to_reference']:.3f}</td>"
        f"<td class='{g['status'].split()[0]}'>{esc(g['status'])}</td></tr>" for g in e["groups"])
    findings = "".join(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in sorted(report["findings_by_code"].items()))
    removals = "".join(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>"
                       for k, v in sorted(report["harm"]["removals_by_reason"].items()))
    verdicts = ", ".join(f"{esc(k)}: {v}" for k, v in sorted(report["verdicts"].items()))
    status = "PASS" if report["passed"] else "FAIL"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ethicrec bias report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}
td:first-child,th:first-child{{text-align:left}}.pass{{color:#2a7a2a}}.fail{{color:#b00;font-weight:bold}}
.insufficient{{color:#886600}}</style></head><body>
<h1>ethicrec bias report — <span class="{status.lower()}">{status}</span></h1>
<p>{report['records']} audited requests from {esc(report['time_range']['from'])} to {esc(report['time_range']['to'])};
models {esc(', '.join(report['model_versions']))}; policies {esc(', '.join(report['policy_versions']))}.
Verdicts: {verdicts}.</p>
<h2>Item-group exposure</h2>
<p>Computed with Fairlearn <code>MetricFrame</code> over every eligible candidate. Reference group:
<b>{esc(e['reference_group'])}</b>; pass band {e['band'][0]}–{e['band'][1]} for ratios to the reference;
groups with fewer than {e['min_group_size']} candidates are reported as insufficient evidence.</p>
<table><tr><th>group</th><th>n</th><th>selection rate</th><th>exposure share</th><th>candidate share</th>
<th>exposure ratio</th><th>selection ratio to ref.</th><th>exposure ratio to ref.</th><th>status</th></tr>{rows}</table>
<img alt="selection rate by group" src="data:image/png;base64,{sel}">
<img alt="exposure ratio by group" src="data:image/png;base64,{exp}">
<h2>Harm</h2><p>{report['harm']['flags']} harmful-text flags.</p>
<table><tr><th>removal reason</th><th>count</th></tr>{removals}</table>
<h2>Findings by code</h2><table><tr><th>code</th><th>count</th></tr>{findings}</table>
</body></html>
"""


def summary_text(report: dict[str, Any]) -> str:
    e = report["item_group_exposure"]
    lines = [f"ethicrec bias report: {'PASS' if report['passed'] else 'FAIL'} "
             f"({report['records']} requests, reference group {e['reference_group']!r})"]
    for g in e["groups"]:
        lines.append(f"  {g['group']:<16} n={g['n']:<7} selection={g['selection_rate']:.4f} "
                     f"exposure_ratio={g['exposure_ratio']:.3f} -> {g['status']}")
    lines.append(f"  harm flags: {report['harm']['flags']}, removals: {report['harm']['removals_by_reason']}")
    return "\n".join(lines)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _parse_time(value: str | None, flag: str) -> float | None:
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m audit.report", description="Bias report from the audit log.")
    ap.add_argument("--log", type=Path, required=True, help="SQLite audit log")
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--since", help="only records at or after this time (ISO 8601 or epoch seconds)")
    ap.add_argument("--until", help="only records before this time")
    ap.add_argument("--reference-group", help="group to compare others with (default: the largest)")
    ap.add_argument("--min-group-size", type=int, default=DEFAULT_MIN_GROUP_SIZE)
    ap.add_argument("--gate", action="store_true", help="exit 3 when a group is outside the pass band")
    args = ap.parse_args(argv)
    try:
        since, until = _parse_time(args.since, "--since"), _parse_time(args.until, "--until")
        try:
            records = list(read_records(args.log, since, until))
        except (FileNotFoundError, ValueError) as exc:
            raise ReportError(str(exc)) from None
        report = compute_report(records, reference_group=args.reference_group, min_group_size=args.min_group_size)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    _write_atomic(args.out / "report.json", json.dumps(report, indent=2, default=float))
    _write_atomic(args.out / "report.html", render_html(report))
    print(summary_text(report))
    print(f"wrote {args.out / 'report.html'} and {args.out / 'report.json'}")
    return 3 if (args.gate and not report["passed"]) else 0


if __name__ == "__main__":
    sys.exit(main())
