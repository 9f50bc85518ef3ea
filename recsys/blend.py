"""How the final score is made from the two component scores.

lightgbm (default): score = LightGBM's score; the BERT interest score is one of
    its features, so the ranker learns how much to trust it.
linear: score = w * norm(interest) + (1 - w) * norm(ranker), each min-max
    normalised over the request's candidates (a constant vector becomes 0.5), for
    operators who want a fixed, explainable share for text interest.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODES = ("lightgbm", "linear")


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(x)), float(np.max(x))
    return np.full(len(x), 0.5) if hi <= lo else (x - lo) / (hi - lo)


@dataclass(frozen=True)
class Blend:
    mode: str = "lightgbm"
    weight: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"blend mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"blend weight must be between 0 and 1; got {self.weight!r}")

    def combine(self, interest: np.ndarray, ranker: np.ndarray) -> np.ndarray:
        if self.mode == "lightgbm" or len(interest) == 0:
            return np.asarray(ranker, dtype=np.float64)
        return self.weight * _minmax(np.asarray(interest, np.float64)) + \
            (1 - self.weight) * _minmax(np.asarray(ranker, np.float64))
