"""Offline evaluation through the real serving pipeline.

Each user active after the artifact's t_val is ranked as a live request would
be: history = their interactions before their query time (passed explicitly,
so users.json — which holds later interactions too — is never consulted),
candidates = their later items plus sampled negatives, audit included.
The bias report groups these outcomes by user and item group.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.artifacts import Artifacts
from recsys.data import Dataset
from recsys.domain import AuditMode, Candidate, RankRequest, UserContext
from recsys.errors import EthicrecError
from recsys.metrics import ndcg_at_k, recall_at_k
from recsys.pipeline import Pipeline
from recsys.split import Query, build_queries, sample_candidates


@dataclass(frozen=True)
class OfflineRun:
    users: pd.DataFrame       # one row per evaluated user: metrics + demographics
    candidates: pd.DataFrame  # one row per (user, eligible candidate): item_id, rank (0 = not returned), groups
    catalog_size: int
    artifact_version: str
    dataset: str


def check_dataset_matches(artifacts: Artifacts, ds: Dataset) -> None:
    meta = artifacts.metadata["dataset"]
    # a subset-trained artifact records "<sha>:users<N>:seed<S>"; its full dataset is accepted too
    if meta["name"] != ds.name or ds.sha256 not in (meta["sha256"], meta["sha256"].split(":")[0]):
        raise EthicrecError(f"artifact {artifacts.version} was trained on {meta['name']} "
                            f"(sha256 {meta['sha256'][:12]}…), not on this {ds.name} copy (sha256 {ds.sha256[:12]}…)")


def primary_genre(genres: str) -> str:
    return genres.split("|")[0] if genres else "(none)"


def evaluate_with_pipeline(pipeline: Pipeline, artifacts: Artifacts, ds: Dataset, *, n_candidates: int = 100,
                           top_k: int = 10, seed: int = 0, max_users: int | None = None,
                           progress: bool = True) -> OfflineRun:
    check_dataset_matches(artifacts, ds)
    cat = artifacts.catalog
    t_val = int(artifacts.metadata["split"]["t_val"])
    queries: list[Query] = build_queries(ds.interactions, t_val, None)
    if max_users:
        queries = queries[:max_users]
    if not queries:
        raise EthicrecError(f"no users with interactions after t_val in {ds.name}")
    demo = ds.users.set_index("user_id") if len(ds.users) else pd.DataFrame()
    demo_cols = list(demo.columns)
    rng = np.random.default_rng(seed)
    pop = np.expm1(cat.stats.log_pop)
    user_rows, cand_rows = [], []
    from tqdm import tqdm

    for q in tqdm(queries, desc="offline ranking", unit="user", disable=None if progress else True):
        known = {k: v for k, v in q.targets.items() if k in cat.index}
        if not known:
            continue
        q = Query(q.user_id, q.query_time, q.history, q.history_times, known)
        ids, labels = sample_candidates(q, cat.item_ids, pop, n_candidates, rng)
        attrs = {c: str(demo.at[q.user_id, c]) for c in demo_cols} if q.user_id in demo.index else {}
        req = RankRequest(UserContext(q.user_id, tuple(q.history[:200]), (), attrs),
                          tuple(Candidate(i) for i in ids), top_k=top_k, audit_mode=AuditMode.ENFORCE,
                          request_id=f"offline:{q.user_id}")
        ctx = pipeline.run(req)
        rank = np.zeros(len(ids), dtype=int)
        for r, p in enumerate(ctx.final, start=1):
            rank[p] = r
        pseudo = np.where(rank > 0, -rank.astype(float), -np.inf)
        lab = np.asarray(labels)
        idx = cat.lookup(ids)
        removed = {x.item_id for x in ctx.removed}
        returned = rank > 0
        groups = cat.stats.group[idx]
        user_rows.append({
            "user_id": q.user_id, "ndcg@10": ndcg_at_k(lab, pseudo, top_k), "recall@10": recall_at_k(lab, pseudo, top_k),
            "long_tail_share": float((groups[returned] == "long_tail").mean()) if returned.any() else 0.0,
            "harm_removals": len(removed), "verdict": ctx.audit.verdict.value, **attrs})
        for j, iid in enumerate(ids):
            if iid in removed:
                continue
            cand_rows.append((q.user_id, iid, int(rank[j]), str(groups[j]), primary_genre(cat.genres[idx[j]])))
    users = pd.DataFrame(user_rows)
    cands = pd.DataFrame(cand_rows, columns=["user_id", "item_id", "rank", "popularity", "genre"])
    return OfflineRun(users, cands, len(cat), artifacts.version, ds.name)
