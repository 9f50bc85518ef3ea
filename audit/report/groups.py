"""By-group tables: values through Fairlearn's MetricFrame, intervals by a cluster bootstrap, gates on them.

Every metric is a (weighted) mean of a per-row column: per-user NDCG, or
per-(request, group) selection counts weighted by group size, so pooled
rates come out exactly (MetricFrame's by_group).

Intervals: a bootstrap that resamples whole clusters (requests for item
groups, users for user groups) and recomputes every group's value and its
ratio to the reference in the same replicate. Fairlearn's own bootstrap
resamples rows independently, which splits a request's groups apart, and
gives no interval for a ratio to a chosen group; the gate needs that one.

Gate: a group fails only when the whole interval of a gated ratio lies
outside the band (it is then outside with 95 % confidence, not merely in
its point estimate); an interval that straddles a band edge is
"inconclusive" (shown, not failed). The reference of each metric is the
best-off group (highest value among the groups with enough data) unless a
group is named, so every disadvantaged group is judged against it.
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


PASS, FAIL, INCONCLUSIVE, REFERENCE = "pass", "fail", "inconclusive", "reference"


def cluster_bootstrap(frame: pd.DataFrame, labels: list[str], row_label: np.ndarray, cluster: np.ndarray,
                      weights: np.ndarray, metrics: list[str], n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Per metric, an (n_boot, groups) array of weighted means over clusters resampled with replacement."""
    clusters, c_idx = np.unique(cluster, return_inverse=True)
    g_of = {g: j for j, g in enumerate(labels)}
    g_idx = np.array([g_of.get(x, -1) for x in row_label])
    keep = g_idx >= 0
    shape = (len(clusters), len(labels))
    w = np.zeros(shape)
    np.add.at(w, (c_idx[keep], g_idx[keep]), weights[keep])
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(clusters), np.full(len(clusters), 1.0 / len(clusters)), size=n_boot).astype(float)
    wb = counts @ w
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for m in metrics:
            s = np.zeros(shape)
            np.add.at(s, (c_idx[keep], g_idx[keep]), (weights * frame[m].to_numpy(np.float64))[keep])
            out[m] = (counts @ s) / wb
    return out


def _ratio(v: float, r_v: float) -> float:
    return (v / r_v) if r_v > 0 else (1.0 if v == 0 else float("inf"))


def group_table(frame: pd.DataFrame, spec: GroupSpec, *, band: tuple[float, float], min_group_size: int,
                n_boot: int, reference: str | None = None, seed: int = 0, cluster: str | None = None,
                stratum: dict | None = None) -> dict:
    """One by-group table: values (MetricFrame), 95 % cluster-bootstrap intervals of values and of ratios to
    the reference, and per group pass / inconclusive / fail / insufficient evidence. `cluster`: the column
    whose rows are resampled together (None: each row is its own cluster)."""
    weights = frame[spec.weight].to_numpy(np.float64) if spec.weight else np.ones(len(frame))
    zeros = np.zeros(len(frame))
    metrics = {m: weighted_mean for m in spec.metrics} | {"n": weight_total}
    params = {m: {"values": frame[m].to_numpy(np.float64), "weights": weights} for m in spec.metrics}
    params["n"] = {"weights": weights}
    sf = frame[spec.by] if len(spec.by) > 1 else frame[spec.by[0]].rename(spec.by[0])
    mf = MetricFrame(metrics=metrics, y_true=zeros, y_pred=zeros, sensitive_features=sf, sample_params=params)
    by = mf.by_group
    # Intersections come back as the full product of levels; drop the empty combinations.
    present = by["n"].fillna(0).to_numpy() > 0
    by = by[present]
    labels = [_label(k) for k in by.index]
    sizes = dict(zip(labels, by["n"].to_numpy()))
    eligible = [g for g in labels if sizes[g] >= min_group_size]
    if reference is not None and reference not in sizes:
        raise ValueError(f"reference group {reference!r} is not in table {spec.name}; groups: {', '.join(labels)}")
    values = {m: dict(zip(labels, by[m].to_numpy(np.float64))) for m in spec.metrics}
    refs: dict[str, str] = {}
    for m in spec.metrics:
        if reference is not None:
            refs[m] = reference
        else:
            pool = eligible or labels
            refs[m] = max(pool, key=lambda g: (values[m][g] if not np.isnan(values[m][g]) else -np.inf, sizes[g]))
    boots = None
    if n_boot > 1:
        row_label = np.array([_label(tuple(r)) if len(spec.by) > 1 else str(r)
                              for r in (frame[spec.by].itertuples(index=False, name=None) if len(spec.by) > 1
                                        else frame[spec.by[0]].tolist())], dtype=object)
        clusters = frame[cluster].to_numpy() if cluster else np.arange(len(frame))
        boots = cluster_bootstrap(frame, labels, row_label, clusters, weights, spec.metrics, n_boot, seed)
    rows, violations = [], []
    for i, g in enumerate(labels):
        row: dict = {"group": g, "n": float(sizes[g])}
        cells: dict[str, str] = {}
        for m in spec.metrics:
            v, ref = values[m][g], refs[m]
            ratio = _ratio(v, values[m][ref])
            row[m] = float(v)
            row[f"{m}_ratio_to_reference"] = ratio
            row[f"{m}_reference"] = ref
            if boots is not None:
                col, rcol = boots[m][:, i], boots[m][:, labels.index(ref)]
                with np.errstate(invalid="ignore", divide="ignore"):
                    rb = col / rcol
                ok = np.isfinite(col)
                row[f"{m}_ci"] = ([float(x) for x in np.quantile(col[ok], [0.025, 0.975])] if ok.sum() >= 2 else None)
                okr = np.isfinite(rb)
                row[f"{m}_ratio_ci"] = ([float(x) for x in np.quantile(rb[okr], [0.025, 0.975])]
                                        if okr.sum() >= 2 and g != ref else None)
            else:
                row[f"{m}_ci"] = row[f"{m}_ratio_ci"] = None
            if m not in spec.gated:
                continue
            if g == ref:
                cells[m] = REFERENCE
                continue
            if sizes[g] < min_group_size or sizes[ref] < min_group_size:
                continue
            lo, hi = row[f"{m}_ratio_ci"] or (ratio, ratio)   # no bootstrap: the point estimate decides
            if hi < band[0] or lo > band[1]:
                cells[m] = FAIL
                violations.append({"table": spec.name, "group": g, "metric": f"{m}_ratio_to_reference",
                                   "value": ratio, "interval": [lo, hi], "band": list(band), "reference": ref,
                                   **({"stratum": stratum} if stratum else {})})
            elif band[0] <= lo and hi <= band[1]:
                cells[m] = PASS
            else:
                cells[m] = INCONCLUSIVE
        if sizes[g] < min_group_size:
            status = INSUFFICIENT
        elif FAIL in cells.values():
            status = FAIL
        elif INCONCLUSIVE in cells.values():
            status = INCONCLUSIVE
        elif cells and all(c == REFERENCE for c in cells.values()):
            status = REFERENCE
        else:
            status = PASS
        row["cells"] = cells
        row["status"] = status
        rows.append(row)
    # Fairlearn's own summary of the spread, for the gated metrics.
    diff, ratio = mf.difference(), mf.ratio()
    summary = {m: {"difference": float(diff[m]), "ratio_min_over_max": float(ratio[m])} for m in spec.gated}
    single = {refs[m] for m in spec.metrics}
    return {"name": spec.name, "by": spec.by, "stratum": stratum or {},
            "reference": reference if reference is not None else (next(iter(single)) if len(single) == 1 else
                                                                  "best-off group per metric"),
            "reference_rule": "named" if reference is not None else "best-off",
            "references": refs, "weight": spec.weight or "rows", "metrics": spec.metrics, "gated": spec.gated,
            "groups": rows, "fairlearn": summary, "violations": violations,
            "interval": ("cluster bootstrap over " + {"audit_id": "requests", "user_id": "users"}.get(cluster, cluster)
                         if cluster else "bootstrap over rows") if n_boot > 1 else "none"}
