"""Assemble the report from either input or both; list every violation."""
from __future__ import annotations

from datetime import datetime, timezone

from audit.policy import Policy
from audit.report.log_section import log_section
from audit.report.offline_section import offline_section


class ReportError(Exception):
    """Input problems, reported in one line by the CLI."""


def _tables(section: dict) -> list[dict]:
    out = []
    for key in ("item_groups", "user_groups"):
        value = section.get(key)
        if isinstance(value, dict):
            out.append(value)
        elif isinstance(value, list):
            out.extend(value)
    return out


def _sources(records: list) -> dict:
    """Which writers the records came from: a replica is the name part of a writer id (`<name>/<pid>-<random>`,
    audit/log.py), so the report shows that it covers every replica of a fleet."""
    from collections import Counter

    writers = Counter(r.writer or "" for r in records)
    replicas = Counter()
    for w, n in writers.items():
        replicas[w.split("/", 1)[0]] += n
    return {"writers": dict(sorted(writers.items())), "replicas": dict(sorted(replicas.items()))}


def build_report(*, records: list | None, offline_run=None, policy: Policy, references: dict[str, str] | None = None,
                 windows: int = 5, n_boot: int | None = None, inputs: dict | None = None,
                 evaluations: list[dict] | None = None) -> dict:
    if records is None and offline_run is None and not evaluations:
        raise ReportError("give --log, --dataset, --evaluation, or a combination")
    rp = policy.report
    kw = dict(band=rp.band, min_group_size=rp.min_group_size, n_boot=rp.n_boot if n_boot is None else n_boot,
              references=references)
    report: dict = {"generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "inputs": inputs or {}, "policy_version": policy.version, "band": list(rp.band),
                    "min_group_size": rp.min_group_size, "n_boot": kw["n_boot"], "confidence": 0.95}
    try:
        if records is not None:
            if not records:
                raise ReportError("no audit records in the selected range")
            report["log"] = log_section(records, windows=windows, **kw)
            report["log"]["sources"] = _sources(records)
        if offline_run is not None:
            report["offline"] = offline_section(offline_run, **kw)
        if evaluations:
            report["model_comparison"] = evaluations
    except ValueError as exc:  # e.g. an unknown reference group
        raise ReportError(str(exc)) from None
    violations = []
    for section in ("log", "offline"):
        if section in report:
            for t in _tables(report[section]):
                violations += [dict(v, section=section) for v in t["violations"]]
    report["violations"] = violations
    report["passed"] = not violations
    return report
