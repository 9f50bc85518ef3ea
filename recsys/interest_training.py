"""Fine-tuning the bi-encoder: user-history text <-> next item text,
contrastive (InfoNCE) with in-batch negatives, one mined hard negative per
pair, and a learned temperature; early stopping on validation Recall@K.

Hard negatives are mined once, with the model as it is before training: for
each pair, an item the model already ranks high for that user (among its
`top` nearest catalog items) that is neither the positive nor in the user's
history. In-batch negatives are mostly easy (random popular items); these
teach the fine distinctions within a genre that the ranker needs.

In-batch negatives are the other pairs' positives, so popular items are
sampled as negatives in proportion to their popularity; uncorrected, the
softmax learns to push popular items down (sampling bias). The logQ
correction (Yi et al., RecSys 2019) subtracts log q(item) from each in-batch
logit, q being the item's share of training positives, so the model learns
relevance rather than "not popular". Hard negatives are not popularity-sampled
and get no correction.

Validation: pairs of held-out users (disjoint from training users); Recall@K
of the true item among the validation positives plus a fixed pool of catalog
items, re-encoded at each check. Given `pool_popularity`, half the pool is
drawn by popularity and half uniformly, like the negatives of the evaluation's
candidate lists (recsys/split.py), so early stopping picks the model that
ranks well against the candidates a frontend actually sends; without it the
pool is uniform. The best state is restored at the
end, so the returned model is the one that scored best on validation.
"""
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
from recsys.text import USER_TEXT_ITEMS, user_text


@dataclass(frozen=True)
class Pairs:
    user_texts: list[str]
    item_rows: np.ndarray   # catalog rows of the positive items
    histories: tuple[np.ndarray, ...] = ()   # catalog rows of each pair's history (for mining exclusions)
    user_ids: tuple[str, ...] = ()

    def subset(self, idx: np.ndarray) -> "Pairs":
        return Pairs([self.user_texts[i] for i in idx], self.item_rows[idx],
                     tuple(self.histories[i] for i in idx) if self.histories else (),
                     tuple(self.user_ids[i] for i in idx) if self.user_ids else ())

    def split_users(self, val_share: float, seed: int = 0) -> tuple["Pairs", "Pairs"]:
        """(train, validation) with disjoint users; deterministic for a seed."""
        import zlib

        bucket = np.array([zlib.crc32(f"{seed}:{u}".encode()) % 1000 for u in self.user_ids])
        val = bucket < int(val_share * 1000)
        return self.subset(np.flatnonzero(~val)), self.subset(np.flatnonzero(val))


def make_pairs(inter: pd.DataFrame, catalog: Catalog, t_end: int, *, max_pairs: int, min_history: int = 3,
               max_history: int = USER_TEXT_ITEMS, min_rating: float = 3.5, seed: int = 0) -> Pairs:
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
    texts, items, hists, uids = [], [], [], []
    for s, j in picked:
        hist = [r for r in rows[s:j][ts[s:j] < ts[j]][::-1][:max_history] if r >= 0]
        texts.append(user_text([catalog.texts[r] for r in hist]))
        items.append(rows[j])
        hists.append(np.unique(rows[s:j][rows[s:j] >= 0]))
        uids.append(str(users[s]))
    return Pairs(texts, np.asarray(items, dtype=np.int64), tuple(hists), tuple(uids))


def mine_hard_negatives(encoder: TextEncoder, pairs: Pairs, catalog: Catalog, *, top: int = 50,
                        seed: int = 0, item_vectors: np.ndarray | None = None) -> np.ndarray:
    """One catalog row per pair: a random item among the model's `top` nearest to the user text that is
    neither the positive nor in the history (-1 when none qualifies)."""
    rng = np.random.default_rng(seed)
    if item_vectors is None:
        item_vectors = encoder.encode(list(catalog.texts), max_length=ITEM_MAX_LENGTH, batch_size=128)
    U = encoder.encode(pairs.user_texts, max_length=USER_MAX_LENGTH, batch_size=32)
    out = np.full(len(pairs.item_rows), -1, dtype=np.int64)
    k = min(top + 60, len(item_vectors))
    for start in range(0, len(U), 256):
        sims = U[start:start + 256] @ item_vectors.T
        near = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for r, cand in enumerate(near):
            i = start + r
            cand = cand[np.argsort(-sims[r, cand], kind="stable")]
            banned = set(pairs.histories[i].tolist()) if pairs.histories else set()
            banned.add(int(pairs.item_rows[i]))
            ok = [int(c) for c in cand if int(c) not in banned][:top]
            if ok:
                out[i] = ok[int(rng.integers(len(ok)))]
    return out


def recall_at_k(encoder: TextEncoder, val: Pairs, catalog: Catalog, pool: np.ndarray, k: int = 10) -> float:
    """Share of validation pairs whose positive is in the top k of (pool + all validation positives)."""
    rows = np.unique(np.concatenate([pool, val.item_rows]))
    V = encoder.encode([catalog.texts[r] for r in rows], max_length=ITEM_MAX_LENGTH, batch_size=128)
    U = encoder.encode(val.user_texts, max_length=USER_MAX_LENGTH, batch_size=32)
    sims = U @ V.T
    pos = np.searchsorted(rows, val.item_rows)
    target = sims[np.arange(len(pos)), pos]
    better = (sims > target[:, None]).sum(axis=1)
    return float((better < k).mean())


def validation_pool(n_items: int, size: int, popularity: np.ndarray | None, seed: int) -> np.ndarray:
    """Catalog rows the validation positives compete with: uniform, or half popularity-weighted and half
    uniform (distinct rows), drawn once with a fixed seed."""
    rng = np.random.default_rng(seed)
    size = min(size, n_items)
    if popularity is None:
        return rng.choice(n_items, size=size, replace=False)
    p = np.asarray(popularity, dtype=np.float64) + 1e-3
    popular = rng.choice(n_items, size=size // 2, replace=False, p=p / p.sum())
    rest = np.setdiff1d(np.arange(n_items), popular)
    return np.concatenate([popular, rng.choice(rest, size=size - len(popular), replace=False)])


def freeze_bottom(model: torch.nn.Module, n_layers: int) -> list[torch.nn.Parameter]:
    """Freeze the embeddings and the bottom `n_layers` transformer layers (0: nothing); returns what was frozen.

    Why: on a CPU, a step's cost is the forward pass plus the backward pass through every layer that
    trains; with the bottom layers frozen, autograd builds no graph below the first trainable layer, so
    training the top 2 of MiniLM's 6 layers costs about 10 forward-units a step instead of 18."""
    if n_layers == 0:
        return []
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if layers is None or not hasattr(model, "embeddings"):
        raise ValueError("freeze_layers needs a BERT-style model (embeddings and encoder.layer)")
    if not 0 <= n_layers <= len(layers):
        raise ValueError(f"freeze_layers must be between 0 and {len(layers)}; got {n_layers!r}")
    frozen = [p for m in (model.embeddings, *layers[:n_layers]) for p in m.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    return frozen


def fine_tune(encoder: TextEncoder, pairs: Pairs, catalog: Catalog, *, epochs: int = 1, batch_size: int = 32,
              lr: float = 5e-5, seed: int = 0, max_steps: int | None = None,
              hard_negatives: np.ndarray | None = None, val: Pairs | None = None, eval_every: int = 50,
              patience: int = 3, k: int = 10, pool_size: int = 1000,
              pool_popularity: np.ndarray | None = None, logq_correction: bool = True,
              log_every: int = 10, progress: bool = True, freeze_layers: int = 0) -> dict:
    """Returns a training summary (loss curve, validation Recall@k curve, best step, steps, seconds, temperature).

    `hard_negatives`: one catalog row per pair (-1 none) added to each batch's negatives.
    `val`: validation pairs; Recall@k is checked before training, every `eval_every` steps and at the
    end; training stops after `patience` checks without improvement and the best weights are restored.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = encoder.model
    frozen = freeze_bottom(model, freeze_layers)
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(20.0), device=encoder.device))
    opt = torch.optim.AdamW([{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": 0.01},
                             {"params": [logit_scale], "lr": 1e-2, "weight_decay": 0.0}], lr=lr)
    n = len(pairs.item_rows)
    steps_per_epoch = max(1, n // batch_size)
    total = steps_per_epoch * epochs if max_steps is None else min(max_steps, steps_per_epoch * epochs)
    warmup = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (total - s) / total))
    pool = validation_pool(len(catalog), pool_size, pool_popularity, seed + 1)
    # log q(item): share of training positives, for the in-batch sampling-bias correction.
    logq = None
    if logq_correction:
        q = np.bincount(pairs.item_rows, minlength=len(catalog)).astype(np.float64) / max(1, len(pairs.item_rows))
        logq = torch.as_tensor(np.log(np.maximum(q, 1e-12)), dtype=torch.float32, device=encoder.device)
    val_curve: list[tuple[int, float]] = []
    best = {"step": 0, "recall": -1.0, "state": None, "scale": float(logit_scale.detach())}
    bad_checks = 0

    def check(step: int) -> bool:
        """Validate; True when training should stop."""
        nonlocal bad_checks
        if val is None or not len(val.item_rows):
            return False
        r = recall_at_k(encoder, val, catalog, pool, k)
        val_curve.append((step, r))
        if r > best["recall"]:
            best.update(step=step, recall=r, scale=float(logit_scale.detach()),
                        state={name: t.detach().clone() for name, t in model.state_dict().items()})
            bad_checks = 0
        else:
            bad_checks += 1
        model.train()
        return bad_checks >= patience

    losses: list[float] = []
    t0 = time.perf_counter()
    step = 0
    stopped_early = False
    check(0)
    model.train()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="fine-tune BERT", unit="step", disable=None)
    while step < total and not stopped_early:
        perm = rng.permutation(n)
        for b in range(steps_per_epoch):
            if step >= total:
                break
            idx = perm[b * batch_size:(b + 1) * batch_size]
            items = pairs.item_rows[idx]
            cols = items
            if hard_negatives is not None:
                hn = hard_negatives[idx]
                cols = np.concatenate([items, hn[hn >= 0]])
            u = encoder.embed([pairs.user_texts[i] for i in idx], USER_MAX_LENGTH)
            v = encoder.embed([catalog.texts[r] for r in cols], ITEM_MAX_LENGTH)
            logits = logit_scale.clamp(max=math.log(100.0)).exp() * (u @ v.T)
            if logq is not None:
                corr = torch.zeros(len(cols), device=logits.device)
                corr[: len(idx)] = logq[torch.as_tensor(items, device=logits.device)]
                logits = logits - corr[None, :]
            # An item that is some row's own positive is not a negative of that row (duplicates, or a
            # hard negative that happens to be another row's positive and this row's too).
            same = torch.as_tensor(items[:, None] == cols[None, :], device=logits.device)
            same[torch.arange(len(idx)), torch.arange(len(idx))] = False
            logits = logits.masked_fill(same, float("-inf"))
            target = torch.arange(len(idx), device=logits.device)
            loss = torch.nn.functional.cross_entropy(logits, target)
            # item -> user direction over the positives only (hard negatives have no user of their own)
            loss = 0.5 * (loss + torch.nn.functional.cross_entropy(logits[:, : len(idx)].T, target))
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
            if val is not None and step % eval_every == 0 and step < total and check(step):
                stopped_early = True
                break
    if bar is not None:
        bar.close()
    if val is not None and (not val_curve or val_curve[-1][0] != step):
        check(step)
    if best["state"] is not None:
        model.load_state_dict(best["state"])
        logit_scale.data.fill_(best["scale"])
    for p in frozen:
        p.requires_grad_(True)
    model.eval()
    seconds = time.perf_counter() - t0
    return {"steps": step, "seconds": seconds, "steps_per_second": step / seconds if seconds else 0.0,
            "loss_first": losses[0] if losses else None, "loss_last": float(np.mean(losses[-5:])) if losses else None,
            "loss_curve": losses, "temperature": float(1.0 / logit_scale.exp().item()), "n_pairs": n,
            "hard_negatives": int((hard_negatives >= 0).sum()) if hard_negatives is not None else 0,
            f"val_recall@{k}_curve": val_curve, "best_step": best["step"] if val_curve else step,
            f"val_recall@{k}_best": best["recall"] if val_curve else None,
            f"val_recall@{k}_base": val_curve[0][1] if val_curve else None, "stopped_early": stopped_early,
            "n_val_pairs": len(val.item_rows) if val is not None else 0, "logq_correction": logq is not None,
            "frozen_layers": freeze_layers,
            "validation_pool": "popularity+uniform" if pool_popularity is not None else "uniform"}
