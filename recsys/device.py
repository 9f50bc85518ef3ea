"""Device and precision choice: CUDA when present, CPU otherwise; bf16 autocast where the hardware has bf16."""
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
    """bf16 autocast on CUDA; fp32 on CPU. For training and the classifiers; the text encoder's inference
    picks its precision with `inference_precision` instead."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), where oneDNN's bf16 GEMMs run
    several times faster than fp32 ones; elsewhere torch emulates bf16 and it is slower than fp32.

    torch has no public API for this: `torch.cpu._is_avx512_bf16_supported` and `_is_amx_tile_supported`
    are the checks its own CPU tests use (they read the same CPUID flags oneDNN dispatches on)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def inference_precision(device: torch.device, precision: str = "auto") -> str:
    """'bf16' or 'fp32' for inference on `device`. auto: bf16 on CUDA and on CPUs with native bf16
    (`cpu_has_native_bf16`), fp32 elsewhere.

    Why bf16 where it is native: MiniLM's forward pass is three quarters matrix products; on the AVX512-BF16
    dev VM a (2048 x 384) @ (384 x 1536) product took 4.9 ms in bf16 against 24.4 ms in fp32, and
    `TextEncoder.encode` got 3.1x (item texts) and 2.8x (user texts) faster. Under autocast the layer norms,
    softmax and the pooling stay fp32: the vectors keep a cosine >= 0.99996 to fp32's (bench/README.md)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}; got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" or cpu_has_native_bf16() else "fp32"


def precision_autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast for a resolved precision ('bf16' or 'fp32', from `inference_precision`)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
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
