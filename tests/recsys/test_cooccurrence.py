import math

import numpy as np
import pandas as pd

from recsys.cooccurrence import CoOccurrence

IDS = np.array(["a", "b", "c", "d"], dtype=object)


def _inter(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def test_known_values():
    # users: u1 {a, b}, u2 {a, b, c}, u3 {c}, u4 {a} (u4's b comes after the reference time)
    inter = _inter([("u1", "a", 4, 1), ("u1", "b", 4, 2), ("u2", "a", 3, 1), ("u2", "b", 5, 2), ("u2", "c", 2, 3),
                    ("u3", "c", 4, 1), ("u4", "a", 5, 1), ("u4", "b", 5, 99), ("u1", "a", 5, 5)])
    co = CoOccurrence.build(inter, IDS, ref_time=10)
    s = co.score(np.array([1, 2, 3, -1]), history_idx=np.array([0]))
    # b: |U_a ∩ U_b| = 2, |U_a| = 3, |U_b| = 2;  c: 1 shared, |U_c| = 2;  d: never seen;  unknown: 0
    np.testing.assert_allclose(s, [2 / math.sqrt(6), 1 / math.sqrt(6), 0.0, 0.0])
    two = co.score(np.array([2]), history_idx=np.array([0, 1]))  # mean over history a, b
    np.testing.assert_allclose(two, [(1 / math.sqrt(6) + 1 / math.sqrt(4)) / 2])
    assert np.isnan(co.score(np.array([0]), np.array([-1]))).all()


def test_interactions_after_reference_time_are_ignored(tmp_path):
    base = _inter([("u1", "a", 4, 1), ("u1", "b", 4, 2), ("u2", "a", 3, 1)])
    future = pd.concat([base, _inter([("u3", "a", 5, 50), ("u3", "c", 5, 51), ("u1", "c", 1, 60)])])
    a = CoOccurrence.build(base, IDS, 10).score(np.array([1, 2]), np.array([0]))
    b = CoOccurrence.build(future, IDS, 10).score(np.array([1, 2]), np.array([0]))
    np.testing.assert_array_equal(a, b)
    co = CoOccurrence.build(future, IDS, 10)
    co.save(tmp_path / "c.npz")
    np.testing.assert_array_equal(CoOccurrence.load(tmp_path / "c.npz").score(np.array([1, 2]), np.array([0])), a)
