"""Group exposure metrics, computed with Fairlearn's MetricFrame.

Metrics follow fairlearn's shape, fn(y_true, y_pred, **sample_params), so
MetricFrame groups them; rendering lives elsewhere (audit/report.py).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame, selection_rate


def position_exposure(ranks: np.ndarray) -> np.ndarray:
    """1 / log2(1 + rank) for returned items (rank >= 1), 0 for the rest."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.where(ranks >= 1, 1.0 / np.log2(1.0 + np.maximum(ranks, 1.0)), 0.0)


def exposure_total(y_true: np.ndarray, y_pred: np.ndarray, *, exposure: np.ndarray) -> float:
    """Sum of position-weighted exposure in the group (y_true/y_pred unused: fairlearn shape)."""
    return float(np.sum(exposure))


def group_count(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(len(y_true))


@dataclass(frozen=True)
class ExposureByGroup:
    """Per-group figures for one ranked list (or many, pooled)."""

    table: pd.DataFrame          # index group; columns n, selection_rate, exposure_share, candidate_share, exposure_ratio
    selection_rate_ratio: float  # min / max selection rate over groups (fairlearn demographic parity ratio)
    selection_rate_difference: float


def exposure_by_group(groups: np.ndarray | list[str], ranks: np.ndarray) -> ExposureByGroup:
    """`ranks` is the 1-based position of each candidate in the returned list, 0 if not returned."""
    ranks = np.asarray(ranks)
    selected = (ranks >= 1).astype(int)
    exposure = position_exposure(ranks)
    mf = MetricFrame(
        metrics={"selection_rate": selection_rate, "exposure": exposure_total, "n": group_count},
        y_true=selected, y_pred=selected, sensitive_features=pd.Series(np.asarray(groups), name="group"),
        sample_params={"exposure": {"exposure": exposure}},
    )
    table = mf.by_group.copy()
    total_exposure = float(exposure.sum())
    table["exposure_share"] = table["exposure"] / total_exposure if total_exposure > 0 else 0.0
    table["candidate_share"] = table["n"] / float(len(ranks))
    table["exposure_ratio"] = table["exposure_share"] / table["candidate_share"]
    table["n"] = table["n"].astype(int)
    return ExposureByGroup(
        table=table[["n", "selection_rate", "exposure_share", "candidate_share", "exposure_ratio"]],
        selection_rate_ratio=float(mf.ratio()["selection_rate"]),
        selection_rate_difference=float(mf.difference()["selection_rate"]),
    )


@dataclass(frozen=True)
class GroupExposure:
    """The fast path's result: plain arrays aligned with `groups` (sorted labels)."""

    groups: np.ndarray
    n: np.ndarray
    selection_rate: np.ndarray
    exposure_share: np.ndarray
    candidate_share: np.ndarray
    exposure_ratio: np.ndarray
    selection_rate_ratio: float
    selection_rate_difference: float

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"n": self.n, "selection_rate": self.selection_rate,
                             "exposure_share": self.exposure_share, "candidate_share": self.candidate_share,
                             "exposure_ratio": self.exposure_ratio}, index=pd.Index(self.groups, name="group"))


def group_codes(groups: np.ndarray | list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(labels, codes): the distinct group labels in sorted order (MetricFrame's order) and each entry's
    index into them. A dict pass, ~3x faster than np.unique on a string array for request-sized lists."""
    first: dict[str, int] = {}
    raw = np.fromiter((first.setdefault(str(g), len(first)) for g in groups), dtype=np.intp, count=len(groups))
    labels = np.array(sorted(first), dtype=object)
    remap = np.empty(len(labels), dtype=np.intp)
    remap[[first[lab] for lab in labels]] = np.arange(len(labels))
    return labels, remap[raw]


def exposure_by_group_fast(groups: np.ndarray | list[str], ranks: np.ndarray) -> GroupExposure:
    """Same numbers as `exposure_by_group`, vectorised with numpy and no pandas.

    MetricFrame costs ~35 ms per call here (pandas groupby machinery), far too
    much for every request; this path costs tens of microseconds.
    tests/audit/test_fairness_fast_path.py proves equality with MetricFrame
    (Fairlearn stays the reference and the implementation for offline reports).
    """
    labels, codes = group_codes(groups)
    return exposure_by_codes(labels, codes, ranks)


def exposure_by_codes(labels: np.ndarray, codes: np.ndarray, ranks: np.ndarray) -> GroupExposure:
    """`exposure_by_group_fast` for groups already coded (`labels` sorted, `codes` indexing them), so a
    request's groups are coded once however often its lists are judged. Labels no entry uses are left out."""
    ranks = np.asarray(ranks, dtype=np.float64)
    present, n, rate, exp_share, cand_share, ratio = exposure_lists(np.asarray(codes).tolist(), ranks.tolist(),
                                                                    len(labels))
    smax, smin = max(rate), min(rate)
    return GroupExposure(np.asarray(labels, dtype=object)[present], np.array(n), np.array(rate), np.array(exp_share),
                         np.array(cand_share), np.array(ratio), (smin / smax) if smax > 0 else float("nan"),
                         smax - smin)


def exposure_lists(codes: list[int], ranks: list[float], n_codes: int) -> tuple[list[int], list[int], list[float],
                                                                                  list[float], list[float],
                                                                                  list[float]]:
    """Per group code present in `codes` (ascending): (codes, n, selection rate, exposure share, candidate share,
    exposure ratio), from one pass in plain Python.

    Plain Python rather than numpy because a request has ~100 candidates, ~10 returned and 2-3 groups: every
    numpy call's fixed cost (1-3 us, more with cold caches mid-request) outweighs its work, and this runs in a
    fraction of the vectorised version's time. Proven equal to MetricFrame by
    tests/audit/test_fairness_fast_path.py (through `exposure_by_group_fast`).
    """
    n = [0] * n_codes
    for c in codes:
        n[c] += 1
    sel = [(c, r) for c, r in zip(codes, ranks) if r >= 1]
    return exposure_selected(n, [c for c, _ in sel], [r for _, r in sel])


def exposure_selected(n: list[int], selected: list[int], ranks: Iterable[float] | None = None) -> tuple[
        list[int], list[int], list[float], list[float], list[float], list[float]]:
    """`exposure_lists` from the candidate count of each group code (`n`) and the codes of the returned
    items with their ranks (>= 1): the audit stage knows both without a pass over every candidate.
    `ranks` None: the returned list in order, ranks 1, 2, ... (discounts from a table, the same doubles)."""
    n_codes = len(n)
    sel = [0] * n_codes
    exp = [0.0] * n_codes
    if ranks is None:
        for c, d in zip(selected, _discounts(len(selected))):
            sel[c] += 1
            exp[c] += d
    else:
        for c, r in zip(selected, ranks):
            sel[c] += 1
            exp[c] += 1.0 / math.log2(1.0 + r)
    total = math.fsum(exp)
    size = sum(n)
    # One loop rather than a comprehension per list: this runs mid-request with cold caches, where each
    # comprehension (its own code object and frame in Python 3.11) costs far more than its few items.
    present: list[int] = []
    nn: list[int] = []
    rate: list[float] = []
    exp_share: list[float] = []
    cand_share: list[float] = []
    ratio: list[float] = []
    for c in range(n_codes):
        m = n[c]
        if m:
            es = exp[c] / total if total > 0 else 0.0
            cs = m / size
            present.append(c)
            nn.append(m)
            rate.append(sel[c] / m)
            exp_share.append(es)
            cand_share.append(cs)
            ratio.append(es / cs)
    return present, nn, rate, exp_share, cand_share, ratio


_DISCOUNTS: list[float] = []


def _discounts(k: int) -> list[float]:
    """1 / log2(1 + r) for ranks r = 1, 2, ... (at least k of them), computed once: a request's top-k is
    the same few ranks every time."""
    global _DISCOUNTS
    table = _DISCOUNTS
    if len(table) < k:
        # Rebound, not extended in place: a concurrent reader never sees a half-built list.
        table = _DISCOUNTS = [1.0 / math.log2(1.0 + r) for r in range(1, max(k, 64) + 1)]
    return table


def exposure_by_group_reference(groups: np.ndarray | list[str], ranks: np.ndarray) -> GroupExposure:
    """`exposure_by_group` (Fairlearn MetricFrame) in the fast path's shape, so the audit stage can run on
    the reference implementation (``AuditStage(exposure_metrics="fairlearn")``, used by the overhead bench)."""
    res = exposure_by_group(groups, ranks)
    t = res.table
    return GroupExposure(t.index.to_numpy(dtype=object), t["n"].to_numpy(), t["selection_rate"].to_numpy(np.float64),
                         t["exposure_share"].to_numpy(np.float64), t["candidate_share"].to_numpy(np.float64),
                         t["exposure_ratio"].to_numpy(np.float64), res.selection_rate_ratio,
                         res.selection_rate_difference)
