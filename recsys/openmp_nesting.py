"""Undoing numba's process-wide switch to nested OpenMP parallelism after a parallel kernel.

Why: numba's `omp` threading layer calls `omp_set_max_active_levels(<all supported>)` when it launches a
parallel kernel (`CompiledTrees.predict` on >= PARALLEL_ROWS rows). The setting belongs to the OpenMP
runtime, which torch shares (one libgomp serves every library in the process), and it stays. From then on,
torch's CPU flash attention in bf16, which calls MKL's bf16 GEMM inside its own parallel loop, opened a
nested team of threads per GEMM: on the 2-core dev VM `python -m recsys.evaluate --encode-precision bf16`
took 200-420 s instead of 48 s, nearly all of it in attention (py-spy: libgomp under
`mkl_gemm_bf16bf16f32` under `cpu_flash_attention`); with numba's `workqueue` layer, 48 s. Nothing here
uses nested parallelism, so the runtimes get back the limit they had before the kernel ran.
"""
from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator

_runtimes: list[ctypes.CDLL] | None = None


def _openmp_runtimes() -> list[ctypes.CDLL]:
    """Every OpenMP runtime loaded in the process (threadpoolctl finds them by their loaded paths)."""
    global _runtimes
    if _runtimes is None:
        from threadpoolctl import threadpool_info   # scikit-learn's dependency

        found = []
        for info in threadpool_info():
            if info.get("user_api") != "openmp":
                continue
            try:
                lib = ctypes.CDLL(info["filepath"])
                lib.omp_get_max_active_levels.restype = ctypes.c_int
                lib.omp_set_max_active_levels.argtypes = [ctypes.c_int]
            except (OSError, AttributeError):
                continue
            found.append(lib)
        _runtimes = found
    return _runtimes


@contextlib.contextmanager
def nesting_unchanged() -> Iterator[None]:
    """Run a numba parallel kernel inside: each OpenMP runtime's max-active-levels is restored after it."""
    libs = _openmp_runtimes()
    before = [lib.omp_get_max_active_levels() for lib in libs]
    try:
        yield
    finally:
        for lib, level in zip(libs, before):
            if lib.omp_get_max_active_levels() != level:
                lib.omp_set_max_active_levels(level)
