"""A batch-sized predict (numba's parallel kernel) leaves the OpenMP runtimes' nesting limit as it found it:
numba's omp layer raises it for the whole process on its first launch, and torch's bf16 attention then
crawled (recsys/openmp_nesting.py). Fresh interpreters, because numba raises it only once per process."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_SETUP = """
import json, lightgbm as lgb, numba, numpy as np, torch
from recsys.compiled_trees import PARALLEL_ROWS, CompiledTrees
from recsys.openmp_nesting import _openmp_runtimes
levels = lambda: [lib.omp_get_max_active_levels() for lib in _openmp_runtimes()]
X = np.random.default_rng(0).normal(size=(PARALLEL_ROWS, 4))
booster = lgb.train({"objective": "regression", "verbose": -1}, lgb.Dataset(X, X[:, 0]), num_boost_round=5)
before = levels()
"""


def _run(body: str) -> dict:
    res = subprocess.run([sys.executable, "-c", _SETUP + body], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_a_parallel_predict_restores_the_nesting_limit():
    out = _run("""
ct = CompiledTrees.from_booster(booster)
assert (ct.predict(X) == booster.predict(X)).all()
print(json.dumps({"runtimes": len(_openmp_runtimes()), "before": before, "after": levels()}))
""")
    assert out["runtimes"] >= 1   # torch and LightGBM load one; with none this would check nothing
    assert out["after"] == out["before"]


def test_without_the_guard_numbas_omp_layer_raises_it():
    """What the guard undoes: the same kind of kernel launched bare changes the limit."""
    out = _run("""
@numba.njit(parallel=True)
def row_sums(x):
    out = np.zeros(x.shape[0])
    for i in numba.prange(x.shape[0]):
        out[i] = x[i].sum()
    return out
row_sums(X)
print(json.dumps({"layer": numba.threading_layer(), "before": before, "after": levels()}))
""")
    if out["layer"] == "omp":   # workqueue and tbb leave OpenMP alone
        assert out["after"] != out["before"]
