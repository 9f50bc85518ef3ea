"""Fine-tuning the bi-encoder: user-history text <-> next item text,
contrastive (InfoNCE) with in-batch negatives and a learned temperature."""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from recsys.catalog import Catalog
from recsys.embedding_store import ITEM_MAX_LENGTH, USER_MAX_LENGTH
from recsys.encoder import TextEncoder
from recsys.text import user_text


@dataclass(frozen=True)
class Pairs:
    user_texts: list[str]
    item_rows: np.ndarray   # catalog rows of the positive items


def make_pairs(inter: pd.DataFrame, catalog: Catalog, t_end: int, *, max_pairs: int, min_history: int = 3,
               max_history: int = 20, min_rating: float = 3.5, seed: int = 0) -> Pairs:
    """Pairs (history before t, item interacted with at t) from interactions before t_end only."""
    before = inter[inter["timestamp"] < t_end].sort_values(["user_id", "timestamp", "item_id"], kind="mergesort")
    rows = catalog.lookup(before["item_id"].tolist())
    users = before["user_id"].to_numpy()
    ratings = before["rating"].to_numpy()
    ts = before["timestamp"].to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    eligible: list[tuple[int, int]] = []
    for s, e in zip(starts, ends):
        for j in range(s + min_history, e):
            # strictly earlier history: skip items rated in the same second as the target
            if ratings[j] >= min_rating and rows[j] >= 0 and ts[s] < ts[j]:
                eligible.append((s, j))
    rng = random.Random(seed)
    picked = eligible if len(eligible) <= max_pairs else rng.sample(eligible, max_pairs)
    texts, items = [], []
    for s, j in picked:
        hist = [r for r in rows[s:j][ts[s:j] < ts[j]][::-1][:max_history] if r >= 0]
        texts.append(user_text([catalog.texts[r] for r in hist]))
        items.append(rows[j])
    return Pairs(texts, np.asarray(items, dtype=np.int64))


def fine_tune(encoder: TextEncoder, pairs: Pairs, catalog: Catalog, *, epochs: int = 1, batch_size: int = 32,
              lr: float = 5e-5, seed: int = 0, max_steps: int | None = None,
              log_every: int = 10, progress: bool = True) -> dict:
    """Returns a training summary (loss curve, steps, seconds, final temperature)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = encoder.model
    model.train()
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(20.0), device=encoder.device))
    opt = torch.optim.AdamW([{"params": model.parameters(), "weight_decay": 0.01},
                             {"params": [logit_scale], "lr": 1e-2, "weight_decay": 0.0}], lr=lr)
    n = len(pairs.item_rows)
    steps_per_epoch = max(1, n // batch_size)
    total = steps_per_epoch * epochs if max_steps is None else min(max_steps, steps_per_epoch * epochs)
    warmup = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (total - s) / total))
    losses: list[float] = []
    t0 = time.perf_counter()
    step = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="fine-tune BERT", unit="step", disable=None)
    while step < total:
        perm = rng.permutation(n)
        for b in range(steps_per_epoch):
            if step >= total:
                break
            idx = perm[b * batch_size:(b + 1) * batch_size]
            items = pairs.item_rows[idx]
            u = encoder.embed([pairs.user_texts[i] for i in idx], USER_MAX_LENGTH)
            v = encoder.embed([catalog.texts[r] for r in items], ITEM_MAX_LENGTH)
            logits = logit_scale.clamp(max=math.log(100.0)).exp() * (u @ v.T)
            # The same item twice in a batch is not a negative of itself.
            same = torch.as_tensor(items[:, None] == items[None, :], device=logits.device)
            same.fill_diagonal_(False)
            logits = logits.masked_fill(same, float("-inf"))
            target = torch.arange(len(idx), device=logits.device)
            loss = 0.5 * (torch.nn.functional.cross_entropy(logits, target)
                          + torch.nn.functional.cross_entropy(logits.T, target))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
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
    model.eval()
    seconds = time.perf_counter() - t0
    return {"steps": step, "seconds": seconds, "steps_per_second": step / seconds if seconds else 0.0,
            "loss_first": losses[0] if losses else None, "loss_last": float(np.mean(losses[-5:])) if losses else None,
            "loss_curve": losses, "temperature": float(1.0 / logit_scale.exp().item()), "n_pairs": n}
