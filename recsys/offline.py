"""Offline evaluation through the real serving pipeline.

Each test user of the artifact's per-user split (recsys/split.py) is ranked as
a live request would be: history = their train part (passed explicitly),
candidates = their held-out positives plus items they never rated (the
`uniform` lists of recsys/ranking_data.py), audit included. The bias report
groups these outcomes by user and item group.
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
from recsys.split import POSITIVE_RATING, SplitConfig


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


def split_from_metadata(meta: dict, ds: Dataset):
    """An artifact's own split (recsys.ranking_data.SplitData), rebuilt from its metadata.json."""
    from recsys.ranking_data import split_data

    split = meta.get("split", {})
    if split.get("protocol") != "per-user temporal":
        raise EthicrecError(f"artifact {meta.get('version', '?')} was trained with the old global-time split; "
                            "retrain it (python -m recsys.train)")
    return split_data(ds, SplitConfig(holdout_share=split["holdout_share"], label_share=split["label_share"],
                                      val_user_share=split["val_user_share"],
                                      cold_item_share=split.get("cold_item_share", 0.0),
                                      fit_cold_item_share=split.get("fit_cold_item_share", 0.0),
                                      min_interactions=split["min_interactions"], seed=split["seed"]))


def split_of(artifacts: Artifacts, ds: Dataset):
    return split_from_metadata(artifacts.metadata, ds)


def primary_genre(genres: str) -> str:
    return genres.split("|")[0] if genres else "(none)"


def evaluate_with_pipeline(pipeline: Pipeline, artifacts: Artifacts, ds: Dataset, *, n_candidates: int = 100,
                           top_k: int = 10, seed: int = 0, max_users: int | None = None,
                           progress: bool = True) -> OfflineRun:
    check_dataset_matches(artifacts, ds)
    from recsys.ranking_data import holdout_lists

    cat = artifacts.catalog
    lists = holdout_lists(split_of(artifacts, ds), "test", "uniform", n_candidates, seed)
    if max_users:
        lists = lists[:max_users]
    if not lists:
        raise EthicrecError(f"no test users with a held-out positive in {ds.name}")
    demo = ds.users.set_index("user_id") if len(ds.users) else pd.DataFrame()
    demo_cols = list(demo.columns)
    user_rows, cand_rows = [], []
    from tqdm import tqdm

    for cl in tqdm(lists, desc="offline ranking", unit="user", disable=None if progress else True):
        ids = [str(cat.item_ids[i]) for i in cl.candidates]
        labels = (cl.ratings >= POSITIVE_RATING).astype(float)
        history = tuple(str(cat.item_ids[i]) for i in cl.history if i >= 0)
        user_id = cl.user_id
        attrs = {c: str(demo.at[user_id, c]) for c in demo_cols} if user_id in demo.index else {}
        req = RankRequest(UserContext(user_id, history, (), attrs),
                          tuple(Candidate(i) for i in ids), top_k=top_k, audit_mode=AuditMode.ENFORCE,
                          request_id=f"offline:{user_id}")
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
            "user_id": user_id, "ndcg@10": ndcg_at_k(lab, pseudo, top_k), "recall@10": recall_at_k(lab, pseudo, top_k),
            "long_tail_share": float((groups[returned] == "long_tail").mean()) if returned.any() else 0.0,
            "harm_removals": len(removed), "verdict": ctx.audit.verdict.value, **attrs})
        for j, iid in enumerate(ids):
            if iid in removed:
                continue
            cand_rows.append((user_id, iid, int(rank[j]), str(groups[j]), primary_genre(cat.genres[idx[j]])))
    users = pd.DataFrame(user_rows)
    cands = pd.DataFrame(cand_rows, columns=["user_id", "item_id", "rank", "popularity", "genre"])
    return OfflineRun(users, cands, len(cat), artifacts.version, ds.name)


def served_scores(pipeline: Pipeline, catalog, lists) -> list[np.ndarray]:
    """Each candidate list ranked by the serving pipeline itself (history passed explicitly, audit in
    FLAG_ONLY so it never reorders): the blend's scores exactly as `Rank` computes them, so what the
    evaluation reports is what a frontend is served."""
    from recsys.domain import IdCandidates

    out = []
    for cl in lists:
        req = RankRequest(UserContext(cl.user_id, tuple(str(catalog.item_ids[i]) for i in cl.history if i >= 0), (),
                                      {}),
                          IdCandidates([str(catalog.item_ids[i]) for i in cl.candidates]),
                          top_k=min(10, len(cl.candidates)), audit_mode=AuditMode.FLAG_ONLY,
                          request_id=f"evaluate:{cl.kind}:{cl.user_id}")
        out.append(np.asarray(pipeline.run(req).scores, dtype=np.float64))
    return out
