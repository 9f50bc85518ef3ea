"""What the audit log says: item-group exposure, user-group outcomes, harm, trend.

Item-group tables are stratified by the request's top_k and gated per
stratum: a group's selection rate means something else at top_k 10 than at
top_k 100 (where everything may be returned), so requests with different
top_k are never pooled into one rate. The trend pools them after
normalising by the group-blind expectation instead (a group's returned items
over what a ranking that ignores groups returns on average, request by
request), which is comparable across top_k.
"""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from audit.fairness import position_exposure
from audit.log import AuditRecord
from audit.report.groups import GroupSpec, group_table
from audit.report.popularity import popularity_bias

NOT_GIVEN = "(not given)"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")


def candidate_frame(records: list[AuditRecord]) -> pd.DataFrame:
    """One row per eligible (not removed) candidate of every audited request."""
    rows = [(r.audit_id, r.ts, int(r.top_k), c["item_id"], str(c["group"]), int(c["rank"]))
            for r in records for c in r.candidates if not c.get("removed")]
    df = pd.DataFrame(rows, columns=["audit_id", "ts", "top_k", "item_id", "group", "rank"])
    df["exposure"] = position_exposure(df["rank"].to_numpy())
    df["selected"] = (df["rank"] > 0).astype(float)
    # What a group-blind ranking returns of each candidate on average: the request's returned share.
    per_req = df.groupby("audit_id")["selected"].transform("mean")
    df["expected_selected"] = per_req
    return df


def per_request_groups(cands: pd.DataFrame, group_col: str) -> pd.DataFrame:
    """(request, group) rows: size and per-candidate means, so weighted means pool exactly."""
    agg = cands.groupby(["audit_id", group_col], sort=False).agg(
        n=("selected", "size"), selected=("selected", "sum"), exposure=("exposure", "sum")).reset_index()
    agg["selection_rate"] = agg["selected"] / agg["n"]
    agg["exposure_per_candidate"] = agg["exposure"] / agg["n"]
    return agg


def add_exposure_shares(table: dict, overall_exposure_per_candidate: float, total_n: float) -> None:
    for row in table["groups"]:
        ratio = row["exposure_per_candidate"] / overall_exposure_per_candidate if overall_exposure_per_candidate else 0.0
        row["exposure_ratio"] = ratio
        row["candidate_share"] = row["n"] / total_n
        row["exposure_share"] = ratio * row["candidate_share"]
        # share = exposure per candidate x group size / total exposure; n is fixed, so the CI scales with it
        ci = row.get("exposure_per_candidate_ci")
        scale = row["n"] / (overall_exposure_per_candidate * total_n) if overall_exposure_per_candidate else 0.0
        row["exposure_share_ci"] = [ci[0] * scale, ci[1] * scale] if ci else None


def item_group_table(cands: pd.DataFrame, group_col: str, name: str, *, gated: bool, band, min_group_size, n_boot,
                     reference=None, stratum: dict | None = None) -> dict:
    agg = per_request_groups(cands, group_col)
    spec = GroupSpec(name, [group_col], ["selection_rate", "exposure_per_candidate"],
                     ["selection_rate", "exposure_per_candidate"] if gated else [], weight="n")
    if reference is not None and reference not in set(agg[group_col].astype(str)) and stratum:
        reference = None   # the named group has no candidates in this stratum: its best-off group instead
    table = group_table(agg, spec, band=band, min_group_size=min_group_size, n_boot=n_boot, reference=reference,
                        cluster="audit_id", stratum=stratum)
    add_exposure_shares(table, float(cands["exposure"].mean()), float(len(cands)))
    return table


def log_section(records: list[AuditRecord], *, band, min_group_size: int, n_boot: int, windows: int = 5,
                references: dict[str, str] | None = None) -> dict:
    references = references or {}
    cands = candidate_frame(records)
    ref = references.get("item_group")
    if ref is not None and ref not in set(cands["group"]):
        raise ValueError(f"reference group {ref!r} is not in table item_group; groups: "
                         f"{', '.join(sorted(set(cands['group'])))}")
    item = [item_group_table(cands[cands["top_k"] == k], "group", "item_group", gated=True, band=band,
                             min_group_size=min_group_size, n_boot=n_boot, reference=ref,
                             stratum={"top_k": int(k)})
            for k in sorted(cands["top_k"].unique())]
    # User groups, from the audit attributes the policy let the log keep.
    keys = sorted({k for r in records for k in r.user_attributes})
    returned_groups = cands[cands["rank"] > 0].groupby("audit_id")["group"]
    lt = (returned_groups.apply(lambda g: float((g == "long_tail").mean()))).to_dict()
    req = pd.DataFrame([{
        "audit_id": r.audit_id, "long_tail_share": lt.get(r.audit_id, 0.0), "harm_removals": float(len(r.removed)),
        "flagged": float(r.verdict != "PASS"), **{k: r.user_attributes.get(k, NOT_GIVEN) for k in keys}}
        for r in records])
    user_tables = []
    specs = [[k] for k in keys] + ([keys[:2]] if len(keys) >= 2 else [])
    for by in specs:
        name = " × ".join(by)
        user_tables.append(group_table(req, GroupSpec(name, by, ["long_tail_share", "harm_removals", "flagged"], []),
                                       band=band, min_group_size=min_group_size, n_boot=n_boot,
                                       reference=references.get(name), cluster="audit_id"))
    returned = cands["rank"].to_numpy() > 0
    pop = popularity_bias(cands["item_id"].to_numpy(), cands["exposure"].to_numpy(), returned,
                          cands["group"].to_numpy(), universe=int(cands["item_id"].nunique()))
    pop["universe"] = "distinct candidate items in the log"
    removals = Counter(x["reason"] for r in records for x in r.removed)
    harm_flags = sum(1 for r in records for f in r.findings if f["code"] in ("HARMFUL_TEXT", "BLOCKLISTED_TERM"))
    ts = np.array([r.ts for r in records])
    return {
        "records": len(records),
        "time_range": {"from": iso(ts.min()), "to": iso(ts.max())},
        "model_versions": sorted({r.model_version for r in records}),
        "policy_versions": sorted({r.policy_version for r in records}),
        "verdicts": dict(Counter(r.verdict for r in records)),
        "item_groups": item,
        "strata": "top_k",
        "user_groups": user_tables,
        "popularity_bias": pop,
        "harm": {"flags": harm_flags, "removals_by_reason": dict(removals),
                 "removals_per_request": sum(removals.values()) / len(records)},
        "findings_by_code": dict(Counter(f["code"] for r in records for f in r.findings)),
        "trend": trend(records, cands, windows),
    }


def window_labels(edges: np.ndarray) -> list[str]:
    """Distinct labels for consecutive time windows: the coarsest of day / minute / second / millisecond
    precision at which every window's start differs, as "start – end"."""
    fmts = [("%Y-%m-%d", 86400.0), ("%Y-%m-%d %H:%M", 60.0), ("%m-%d %H:%M:%S", 1.0), ("%H:%M:%S.%f", 0.001)]
    starts = [datetime.fromtimestamp(t, tz=timezone.utc) for t in edges[:-1]]
    ends = [datetime.fromtimestamp(t, tz=timezone.utc) for t in edges[1:]]
    for fmt, _ in fmts:
        first = [d.strftime(fmt) for d in starts]
        if len(set(first)) == len(first):
            last = [d.strftime(fmt) for d in ends]
            if fmt.endswith("%f"):
                first, last = [x[:-3] for x in first], [x[:-3] for x in last]
            return [f"{a} – {b}" for a, b in zip(first, last)]
    return [f"window {i + 1}" for i in range(len(starts))]


def trend(records: list[AuditRecord], cands: pd.DataFrame, windows: int) -> list[dict]:
    """Equal-length time windows between the first and last record. Per group, the selection relative to a
    group-blind ranking (returned items / expected returned items), pooled across top_k."""
    ts = np.array([r.ts for r in records])
    lo, hi = float(ts.min()), float(ts.max())
    windows = max(1, min(windows, len(records)))
    edges = np.linspace(lo, hi, windows + 1)
    edges[-1] = np.nextafter(hi, np.inf)
    labels = window_labels(edges)
    out = []
    for label, a, b in zip(labels, edges[:-1], edges[1:]):
        recs = [r for r in records if a <= r.ts < b]
        if not recs:
            continue
        c = cands[(cands["ts"] >= a) & (cands["ts"] < b)]
        g = c.groupby("group")
        rel = g["selected"].sum() / g["expected_selected"].sum()
        rel = rel[np.isfinite(rel)]
        out.append({
            "label": label, "from": iso(a), "to": iso(b), "records": len(recs),
            "selection_vs_group_blind": {str(k): float(v) for k, v in rel.items()},
            "selection_ratio_min_over_max": float(rel.min() / rel.max()) if len(rel) and rel.max() > 0 else None,
            "harm_removals": sum(len(r.removed) for r in recs),
            "verdicts": dict(Counter(r.verdict for r in recs)),
        })
    return out
