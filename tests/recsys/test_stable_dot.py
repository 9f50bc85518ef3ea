"""A candidate's dot product does not depend on where it sits in the list (the plain BLAS product did)."""
import numpy as np

from recsys.stable_dot import stable_dot


def test_value_independent_of_row_position():
    rng = np.random.default_rng(0)
    plain = 0
    for n in range(1, 130):
        a = rng.normal(size=(n, 384)).astype(np.float32)
        u = rng.normal(size=384).astype(np.float32)
        h = rng.normal(size=(384, 7)).astype(np.float32)
        rev = np.arange(n)[::-1]
        np.testing.assert_array_equal(stable_dot(a, u)[rev], stable_dot(a[rev], u))
        np.testing.assert_array_equal(stable_dot(a, h)[rev], stable_dot(a[rev], h))
        plain += int(((a @ u)[rev] != (a[rev] @ u)).sum())
    # the reason the function exists: the float32 BLAS product moves with the row (if a future BLAS stops doing
    # that, this count reads 0 and the function is merely harmless)
    print("rows whose plain float32 product moved:", plain)


def test_correctly_rounded_float32_values():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 64)).astype(np.float32)
    u = rng.normal(size=64).astype(np.float32)
    ref = np.array([np.float32(sum(float(x) * float(y) for x, y in zip(row, u))) for row in a], dtype=np.float64)
    out = stable_dot(a, u)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, ref)
