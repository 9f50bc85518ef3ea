"""How LightGBM reads a feature value at a numerical split, shared by the compiled tree kernels
(recsys/compiled_trees.py, recsys/quickscorer.py) so that the rule lives in one place.

From LightGBM's `Tree::NumericalDecision` and its dense-row reader: a NaN is read as 0 unless the split's
missing type is NaN; a value of magnitude <= kZeroThreshold (1e-35 as a float) is read as 0; the value is
"missing" (and takes the split's default side) when the missing type is Zero and the value reads 0, or the
missing type is NaN and the value is NaN. Otherwise `value <= threshold` goes left.
"""
from __future__ import annotations

import numpy as np

try:  # numba is a dependency; without it the kernels are not built (compiled_trees returns None)
    import numba
except ImportError:  # pragma: no cover - exercised only on installs without numba
    numba = None

# LightGBM's kZeroThreshold (a float constant in its C++ source).
ZERO_THRESHOLD = float(np.float32(1e-35))
# Missing types as the kernels code them (the model dump's `missing_type`).
MISSING_TYPES = {"None": 0, "Zero": 1, "NaN": 2}


def read_value(x: float, missing_type: int) -> tuple[float, bool]:
    """(the value a split compares, whether it is missing) for feature value x at a split of `missing_type`."""
    if x != x:                                  # NaN
        if missing_type != 2:
            x = 0.0
    elif -ZERO_THRESHOLD <= x <= ZERO_THRESHOLD:
        x = 0.0
    return x, (missing_type == 1 and x == 0.0) or (missing_type == 2 and x != x)


if numba is not None:
    read_value = numba.njit(cache=True, nogil=True, inline="always")(read_value)
