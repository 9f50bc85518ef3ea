"""The one threshold routine of the harm models (the char-n-gram `audit.harm`, the BERT `audit.harm_bert` and
the fine-class `audit.harm_fit`, for both its hateful and its lesser-harm threshold).

Every threshold is chosen the same way, on validation only: the grid point with the best validation quality
(F1 or mean macro-F1, whatever the caller measures), then raised until at most each benign set's allowed
fraction of its scores reach it (a classifier that removes "Kill Bill" from a catalog is a harm too). The
raise goes to just above the set's (1 - rate) quantile taken as an actual score (`method="higher"`), so the
cap holds on that set, and never above `THRESHOLD_CAP`: a threshold of 1.0 would flag nothing at all, which
would silently switch the model off.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np

__all__ = ["THRESHOLD_CAP", "ThresholdChoice", "choose_threshold"]

THRESHOLD_CAP = 0.9999   # the highest threshold a benign cap may raise to (see the module docstring)
_ABOVE = 1e-6            # "just above" the quantile: scores equal to it are not flagged


class ThresholdChoice(NamedTuple):
    threshold: float            # the chosen threshold
    best: float                 # the grid point with the best validation quality
    best_quality: float         # that quality
    raised_by: str | None       # the benign set that raised the threshold last, or None


def choose_threshold(grid: np.ndarray, quality: Callable[[float], float],
                     caps: Mapping[str, tuple[np.ndarray, float]] | None = None, *,
                     cap: float = THRESHOLD_CAP) -> ThresholdChoice:
    """`grid`: candidate thresholds; `quality(t)`: the validation quality of threshold t (higher is better;
    the first best grid point wins ties); `caps`: name -> (benign scores, the largest fraction of them that
    may reach the threshold). Empty score sets are skipped."""
    if not 0.0 < cap <= 1.0:
        raise ValueError(f"cap must be in (0, 1], got {cap!r}")
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1 or len(grid) == 0:
        raise ValueError("grid must be a non-empty 1-d array of thresholds")
    qualities = np.array([quality(float(t)) for t in grid], dtype=np.float64)
    i = int(np.argmax(qualities))
    best = float(grid[i])
    threshold, raised_by = best, None
    for name, (scores, rate) in (caps or {}).items():
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"the allowed flag rate of {name!r} must be in [0, 1], got {rate!r}")
        if len(scores) == 0:
            continue
        need = min(cap, float(np.quantile(scores, 1.0 - rate, method="higher")) + _ABOVE)
        if need > threshold:
            threshold, raised_by = need, name
    return ThresholdChoice(float(threshold), best, float(qualities[i]), raised_by)
