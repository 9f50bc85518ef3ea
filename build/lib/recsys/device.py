"""Device choice: CUDA with bf16 autocast when present, CPU otherwise."""
from __future__ import annotations

import contextlib
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
