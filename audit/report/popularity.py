"""Popularity-bias figures: how concentrated exposure is across items."""
from __future__ import annotations

import numpy as np


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0 = equal, -> 1 = all on one item)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float((2 * np.dot(i, x)) / (n * x.sum()) - (n + 1) / n)


def popularity_bias(item_ids: np.ndarray, exposure: np.ndarray, returned: np.ndarray, groups: np.ndarray,
                    universe: int) -> dict:
    """Gini of exposure over `universe` items (unseen ones count as 0), coverage, long-tail share of slots."""
    per_item: dict[str, float] = {}
    for iid, e in zip(item_ids, exposure):
        per_item[iid] = per_item.get(iid, 0.0) + float(e)
    values = np.zeros(max(universe, len(per_item)))
    values[: len(per_item)] = list(per_item.values())
    distinct_returned = len(set(np.asarray(item_ids)[returned]))
    return {
        "gini_of_exposure": gini(values),
        "catalog_coverage": distinct_returned / universe if universe else 0.0,
        "items_in_universe": int(universe),
        "distinct_items_returned": int(distinct_returned),
        "long_tail_share_of_slots": float((np.asarray(groups)[returned] == "long_tail").mean()) if returned.any() else 0.0,
    }
