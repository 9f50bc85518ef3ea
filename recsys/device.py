"""Device choice: CUDA with bf16 autocast when present, CPU otherwise."""
from __future__ import annotations

import contextlib
import gc
import os

import torch


def pick_device(preference: str = "auto") -> torch.device:
    if preference not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be one of 'auto', 'cpu', 'cuda'; got {preference!r}")
    if preference == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch sees no CUDA device")
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; fp32 on CPU (bf16 on most CPUs is slower, not faster)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_cpu_threads(n: int | None) -> None:
    """Use n intra-op threads (None: leave torch's default, or ETHICREC_TORCH_THREADS)."""
    n = n or int(os.environ.get("ETHICREC_TORCH_THREADS", "0") or 0)
    if n > 0:
        torch.set_num_threads(n)


def single_threaded_blas() -> None:
    """numpy's BLAS on one thread, for the whole process (serving, and the benches that time what it runs).

    The pipeline's matrix products are small (100 candidates x 384 dims x <= 20 history vectors): a
    multi-threaded OpenBLAS spends more time waking its threads than multiplying, and its threads keep
    spinning after each call, taking the cores from the request threads. On the 2-core dev VM, Pipeline.run
    for 100 candidates took 2.2-8 ms with OpenBLAS's default 2 threads (the spread depending on what else
    ran) vs 1.3 ms with one; every stage got faster, not only the BLAS calls. Parallelism comes from
    concurrent requests (server) or the engine's workers (batch, which limits BLAS per chunk the same way).
    """
    from threadpoolctl import threadpool_limits   # scikit-learn's dependency

    threadpool_limits(limits=1, user_api="blas")


def freeze_loaded_objects() -> None:
    """Move everything allocated so far out of the cyclic collector's reach; process entry points (the
    server's `serve`, the batch CLI, batch workers and Ray actors) call it once the pipeline is loaded.

    The loaded models, tokenizers and libraries are ~0.5 M GC-tracked objects that live as long as the
    process: a full (generation-2) collection walked them all, 0.29 s with the GIL held on the dev VM (0.35 ms
    once frozen), a pause any request could land in — in batch it pushed a user's audit past its time budget
    and failed the job. The server's App.reload unfreezes, so that an old snapshot's reference cycles can
    still be collected once its last request ends. Not for library code: frozen garbage is never freed."""
    gc.collect()
    gc.freeze()
