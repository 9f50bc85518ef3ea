"""By-group tables through Fairlearn's MetricFrame (by_group, bootstrap CIs).

Every metric is a (weighted) mean of a per-row column: per-user NDCG, or
per-(request, group) selection counts weighted by group size, so pooled
rates come out exactly while the bootstrap resamples whole requests/users.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame

INSUFFICIENT = "insufficient evidence"


def weighted_mean(y_true, y_pred, *, values, weights) -> float:
    """fairlearn-shaped metric: mean of `values` weighted by `weights` (y_* unused)."""
    w = np.asarray(weights, dtype=np.float64)
    return float(np.dot(np.asarray(values, dtype=np.float64), w) / w.sum()) if w.sum() > 0 else float("nan")


def weight_total(y_true, y_pred, *, weights) -> float:
    return float(np.sum(weights))


@dataclass(frozen=True)
class GroupSpec:
    """A table to build: rows of `frame` grouped by `by` (one column, or several for intersections)."""

    name: str
    by: list[str]
    metrics: list[str]          # value columns to average
    gated: list[str]            # metrics whose ratio to the reference must lie in the band
    weight: str | None = None   # column of row weights (None: 1 per row)


def _label(key) -> str:
    return " × ".join(map(str, key)) if isinstance(key, tuple) else str(key)


def group_table(frame: pd.DataFrame, spec: GroupSpec, *, band: tuple[float, float], min_group_size: int,
                n_boot: int, reference: str | None = None, seed: int = 0) -> dict:
    """One by-group table: values, 95 % bootstrap CIs, ratios to the reference, pass/fail/insufficient."""
    weights = frame[spec.weight].to_numpy(np.float64) if spec.weight else np.ones(len(frame))
    zeros = np.zeros(len(frame))
    metrics = {m: weighted_mean for m in spec.metrics} | {"n": weight_total}
    params = {m: {"values": frame[m].to_numpy(np.float64), "weights": weights} for m in spec.metrics}
    params["n"] = {"weights": weights}
    sf = frame[spec.by] if len(spec.by) > 1 else frame[spec.by[0]].rename(spec.by[0])
    kw = {"n_boot": n_boot, "ci_quantiles": [0.025, 0.975], "random_state": seed} if n_boot > 1 else {}
    mf = MetricFrame(metrics=metrics, y_true=zeros, y_pred=zeros, sensitive_features=sf, sample_params=params, **kw)
    by = mf.by_group
    lo, hi = (mf.by_group_ci[0], mf.by_group_ci[1]) if kw else (None, None)
    # Intersections come back as the full product of levels; drop the empty combinations.
    present = by["n"].fillna(0).to_numpy() > 0
    by = by[present]
    if lo is not None:
        lo, hi = lo[present], hi[present]
    labels = [_label(k) for k in by.index]
    sizes = dict(zip(labels, by["n"].to_numpy()))
    eligible = [g for g in labels if sizes[g] >= min_group_size]
    ref = reference or (max(eligible, key=lambda g: sizes[g]) if eligible else max(labels, key=lambda g: sizes[g]))
    if ref not in sizes:
        raise ValueError(f"reference group {ref!r} is not in table {spec.name}; groups: {', '.join(labels)}")
    ref_row = by.iloc[labels.index(ref)]
    rows, violations = [], []
    for i, g in enumerate(labels):
        row = {"group": g, "n": float(sizes[g])}
        status = "pass"
        for m in spec.metrics:
            v = float(by.iloc[i][m])
            r_v = float(ref_row[m])
            ratio = (v / r_v) if r_v > 0 else (1.0 if v == 0 else float("inf"))
            row[m] = v
            row[f"{m}_ci"] = [float(lo.iloc[i][m]), float(hi.iloc[i][m])] if lo is not None else None
            row[f"{m}_ratio_to_reference"] = ratio
            if m in spec.gated and sizes[g] >= min_group_size and sizes[ref] >= min_group_size \
                    and not band[0] <= ratio <= band[1]:
                status = "fail"
                violations.append({"table": spec.name, "group": g, "metric": f"{m}_ratio_to_reference",
                                   "value": ratio, "band": list(band), "reference": ref})
        if sizes[g] < min_group_size:
            status = INSUFFICIENT
        row["status"] = status
        rows.append(row)
    # Fairlearn's own summary of the spread, for the gated metrics.
    diff, ratio = mf.difference(), mf.ratio()
    summary = {m: {"difference": float(diff[m]), "ratio_min_over_max": float(ratio[m])} for m in spec.gated}
    return {"name": spec.name, "by": spec.by, "reference": ref, "weight": spec.weight or "rows",
            "metrics": spec.metrics, "gated": spec.gated, "groups": rows, "fairlearn": summary,
            "violations": violations}
