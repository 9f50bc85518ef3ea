"""Batched inference for BERT sequence classifiers (the cross-encoder and the harm classifier).

Inputs are sorted by token length and each batch is padded only to its own
longest input (dynamic padding + length bucketing): most texts are short,
and padding them to the longest one would waste most of the FLOPs.
"""
from __future__ import annotations

import numpy as np
import torch

from recsys.device import autocast


def classifier_logits(model: torch.nn.Module, tokenizer, encoding, *, batch_size: int,
                      device: torch.device) -> np.ndarray:
    """(n, num_labels) float64 logits of an already-tokenized `encoding` (no padding), inference mode."""
    ids, types = encoding["input_ids"], encoding.get("token_type_ids")
    n = len(ids)
    out = np.zeros((n, int(model.config.num_labels)), dtype=np.float64)
    if n == 0:
        return out
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
    order = np.argsort(lengths, kind="stable")
    pad_id = tokenizer.pad_token_id or 0
    model.eval()
    with torch.inference_mode():
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size]
            width = int(lengths[idx].max())
            input_ids = np.full((len(idx), width), pad_id, dtype=np.int64)
            token_types = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                k = lengths[i]
                input_ids[row, :k] = ids[i]
                mask[row, :k] = 1
                if types is not None:
                    token_types[row, :k] = types[i]
            batch = {"input_ids": torch.from_numpy(input_ids).to(device),
                     "attention_mask": torch.from_numpy(mask).to(device)}
            if types is not None:
                batch["token_type_ids"] = torch.from_numpy(token_types).to(device)
            with autocast(device):
                logits = model(**batch).logits
            out[idx] = logits.float().cpu().numpy()
    return out
