"""Text-interest scorers behind one small interface.

    InterestScorer.score(user_text, cand_idx, texts) -> float64 array, one score per candidate

`cand_idx` holds catalog rows (-1 = not in the catalog) and `texts` the request's
text for each candidate (None = use the catalog's text). A candidate with a
text is scored on that text whether or not the catalog knows it; a candidate
with neither is an error (the resolve stage rejects such requests first).

BiEncoderScorer  cosine of the mean-pooled, normalised user and item vectors of the
                 fine-tuned bi-encoder (`EmbeddingStore`: catalog vectors precomputed,
                 other texts and user histories encoded on the fly behind LRU caches).
                 Cheap: one user encoding per request, then a dot product.
CrossEncoderScorer  a BERT cross-encoder (`AutoModelForSequenceClassification`,
                 num_labels=1) reading the pair (user_text, item_text) jointly. Its
                 score is the **raw logit** (sigmoid(logit) = P(the user interacts with
                 the item) as trained with binary cross-entropy); logits are kept
                 because they do not saturate, which matters for the per-request
                 z-score blend in `cross_blend`. One forward pass per candidate, so it
                 only re-scores the top N of the ranked list (`CrossEncoderStage`).

`fine_tune_cross_encoder` trains the cross-encoder on the bi-encoder's training
pairs (history before t -> item at t, from `make_pairs`) as positives and
`negatives_per_positive` items sampled uniformly from the catalog as negatives.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from recsys.classifier_inference import classifier_logits
from recsys.device import autocast, pick_device
from recsys.stable_dot import stable_dot

CROSS_MAX_LENGTH = 192   # user text + item text (64 + 64 in the bi-encoder), room to spare for the cross-encoder


@runtime_checkable
class InterestScorer(Protocol):
    name: str

    def score(self, user_text: str, cand_idx: np.ndarray, texts: Sequence[str | None]) -> np.ndarray:
        """float64 array of len(cand_idx): higher = more interesting to this user."""
        ...


class BiEncoderScorer:
    """Cosine of user and item vectors: what the interest stage feeds the ranker."""

    name = "bi_encoder"

    def __init__(self, store) -> None:
        self.store = store

    def score_with_vectors(self, user_text: str, cand_idx: np.ndarray,
                           texts: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item vectors): the interest stage also needs the vectors (interest_max)."""
        u = self.store.user_vector(user_text)
        items = self.store.item_vectors_for(cand_idx, list(texts))
        return stable_dot(items, u), items

    def score(self, user_text: str, cand_idx: np.ndarray, texts: Sequence[str | None]) -> np.ndarray:
        return self.score_with_vectors(user_text, cand_idx, texts)[0]


class CrossEncoder:
    """A sequence-pair classifier with one logit, its tokenizer and device."""

    def __init__(self, model: torch.nn.Module, tokenizer, device: torch.device) -> None:
        self.model = model.to(device)
        self.tokenizer = tokenizer
        self.device = device

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> "CrossEncoder":
        """A trained cross-encoder (save_pretrained directory, safetensors)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        hf_logging.disable_progress_bar()
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True,
                                                                   use_safetensors=True)
        if model.config.num_labels != 1:
            raise ValueError(f"{path}: a cross-encoder has num_labels=1; got {model.config.num_labels}")
        model.eval()
        return cls(model, tok, pick_device(device))

    @classmethod
    def from_base(cls, path: str | Path, device: str = "auto", seed: int = 0) -> "CrossEncoder":
        """Start from a BERT encoder checkpoint (e.g. the shipped all-MiniLM-L6-v2): the encoder
        weights are loaded and a fresh one-logit head is initialised (from `seed`)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        hf_logging.disable_progress_bar()
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        torch.manual_seed(seed)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()   # "newly initialized: classifier.*" is expected here
        try:
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, local_files_only=True,
                                                                       use_safetensors=True)
        finally:
            hf_logging.set_verbosity(verbosity)
        model.eval()
        return cls(model, tok, pick_device(device))

    def save(self, path: str | Path) -> None:
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)

    def logits(self, user_texts: list[str], item_texts: list[str], max_length: int = CROSS_MAX_LENGTH) -> torch.Tensor:
        """Differentiable forward pass (training): one float32 logit per pair."""
        batch = self.tokenizer(user_texts, item_texts, padding=True, truncation=True, max_length=max_length,
                               return_tensors="pt").to(self.device)
        with autocast(self.device):
            out = self.model(**batch).logits
        return out.float().squeeze(-1)

    def predict(self, user_texts: Sequence[str], item_texts: Sequence[str], *, batch_size: int = 64,
                max_length: int = CROSS_MAX_LENGTH) -> np.ndarray:
        """Logits (float64) of the pairs; inference mode, pairs sorted by token length and each batch
        padded only to its own longest pair (dynamic padding + length bucketing), bf16 on CUDA."""
        n = len(item_texts)
        if len(user_texts) != n:
            raise ValueError(f"{len(user_texts)} user texts for {n} item texts")
        if n == 0:
            return np.empty(0, dtype=np.float64)
        enc = self.tokenizer(list(user_texts), list(item_texts), truncation=True, max_length=max_length)
        return classifier_logits(self.model, self.tokenizer, enc, batch_size=batch_size, device=self.device)[:, 0]


def candidate_texts(catalog_texts: np.ndarray, cand_idx: np.ndarray, texts: Sequence[str | None]) -> list[str]:
    """Each candidate's text: the request's text when given, else the catalog's (like the bi-encoder)."""
    out = []
    for i, (row, text) in enumerate(zip(cand_idx, texts)):
        if text is not None:
            out.append(text)
        elif row >= 0:
            out.append(catalog_texts[row])
        else:
            raise ValueError(f"candidate {i} is not in the catalog and has no text")
    return out


class CrossEncoderScorer:
    name = "cross_encoder"

    def __init__(self, cross_encoder: CrossEncoder, catalog_texts: np.ndarray, *, batch_size: int = 64) -> None:
        self.cross_encoder = cross_encoder
        self.catalog_texts = catalog_texts
        self.batch_size = batch_size

    def score(self, user_text: str, cand_idx: np.ndarray, texts: Sequence[str | None]) -> np.ndarray:
        items = candidate_texts(self.catalog_texts, cand_idx, texts)
        return self.cross_encoder.predict([user_text] * len(items), items, batch_size=self.batch_size)


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = float(np.std(x))
    return np.zeros(len(x)) if not np.isfinite(sd) or sd <= 1e-12 else (x - float(np.mean(x))) / sd


def cross_blend(scores: np.ndarray, cross: np.ndarray, weight: float) -> np.ndarray:
    """New scores for the top N (same order as the arguments).

    b = weight * z(cross) + (1 - weight) * z(scores), z = per-request z-score over these N
    (a constant vector has z = 0). The top N are reordered by b (descending, ties keep the
    ranker's order), and b is mapped affinely onto the span of the N original scores:
    score' = lo + (b - min b) / (max b - min b) * (hi - lo), lo/hi = min/max of the original
    N scores. So score' follows b exactly, stays within [lo, hi] (every item below the top N
    still scores <= lo: the returned scores remain sorted and comparable to the rest of the
    list), and when b is constant the scores are unchanged.
    """
    scores = np.asarray(scores, dtype=np.float64)
    cross = np.asarray(cross, dtype=np.float64)
    if len(scores) < 2:
        return scores.copy()
    b = weight * _zscore(cross) + (1.0 - weight) * _zscore(scores)
    bmin, bmax = float(b.min()), float(b.max())
    if bmax - bmin <= 1e-12:
        return scores.copy()
    lo, hi = float(scores.min()), float(scores.max())
    return lo + (b - bmin) / (bmax - bmin) * (hi - lo)


def fine_tune_cross_encoder(model: CrossEncoder, pairs, catalog, *, negatives_per_positive: int = 3,
                            epochs: int = 1, batch_size: int = 32, lr: float = 5e-5, seed: int = 0,
                            max_steps: int | None = None, max_length: int = CROSS_MAX_LENGTH,
                            negative_rows: np.ndarray | None = None, log_every: int = 10,
                            progress: bool = True) -> dict:
    """Binary cross-entropy on (user_text, item_text) pairs: each positive of `pairs`
    (`recsys.interest_training.make_pairs`) with label 1 and `negatives_per_positive` catalog
    rows drawn uniformly from `negative_rows` (default: every catalog row; never the positive
    itself nor, when `pairs.histories` is filled, an item of that user's history) with label 0.
    Examples are shuffled together; AdamW with linear warm-up/decay and gradient clipping at 1.0.
    Deterministic for a seed on CPU. Returns a training summary."""
    if negatives_per_positive < 0:
        raise ValueError("negatives_per_positive must be >= 0")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pool = np.arange(len(catalog)) if negative_rows is None else np.asarray(negative_rows, dtype=np.int64)
    if negatives_per_positive and len(pool) < 2:
        raise ValueError("need at least 2 catalog rows to sample negatives from")
    histories = getattr(pairs, "histories", ())
    if len(histories) != len(pairs.item_rows):
        histories = [()] * len(pairs.item_rows)
    users: list[str] = []
    rows: list[int] = []
    labels: list[float] = []
    for text, pos, hist in zip(pairs.user_texts, pairs.item_rows, histories):
        users.append(text)
        rows.append(int(pos))
        labels.append(1.0)
        seen = {int(pos), *(int(h) for h in hist)}
        for _ in range(negatives_per_positive):
            neg = int(pool[rng.integers(len(pool))])
            for _ in range(100):   # the positive itself, or an item of the user's history, is no negative
                if neg not in seen:
                    break
                neg = int(pool[rng.integers(len(pool))])
            users.append(text)
            rows.append(neg)
            labels.append(0.0)
    n = len(labels)
    if n == 0:
        raise ValueError("no training pairs")
    y_all = torch.tensor(labels, dtype=torch.float32)
    net = model.model
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    total = steps_per_epoch * epochs if max_steps is None else min(max_steps, steps_per_epoch * epochs)
    warmup = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (total - s) / total))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    losses: list[float] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="fine-tune cross-encoder", unit="step", disable=None)
    t0 = time.perf_counter()
    step = 0
    while step < total:
        perm = rng.permutation(n)
        for b in range(steps_per_epoch):
            if step >= total:
                break
            idx = perm[b * batch_size:(b + 1) * batch_size]
            logits = model.logits([users[i] for i in idx], [catalog.texts[rows[i]] for i in idx], max_length)
            loss = loss_fn(logits, y_all[idx].to(logits.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            step += 1
            if bar is not None:
                bar.update(1)
                if step % log_every == 0:
                    bar.set_postfix(loss=f"{np.mean(losses[-log_every:]):.3f}")
    if bar is not None:
        bar.close()
    net.eval()
    seconds = time.perf_counter() - t0
    return {"steps": step, "seconds": seconds, "steps_per_second": step / seconds if seconds else 0.0,
            "loss_first": losses[0] if losses else None,
            "loss_last": float(np.mean(losses[-5:])) if losses else None, "loss_curve": losses,
            "n_positives": len(pairs.item_rows), "n_examples": n, "negatives_per_positive": negatives_per_positive}
