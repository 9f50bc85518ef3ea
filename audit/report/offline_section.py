"""What an offline run through the real pipeline says, by user and item group."""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from audit.fairness import position_exposure
from audit.report.groups import GroupSpec, group_table
from audit.report.log_section import item_group_table
from audit.report.popularity import popularity_bias

if TYPE_CHECKING:  # the offline run pulls in torch; a log-only report should not
    from recsys.offline import OfflineRun

USER_ATTRIBUTES = ("gender", "age_band", "occupation")


def offline_section(run: OfflineRun, *, band, min_group_size: int, n_boot: int,
                    references: dict[str, str] | None = None) -> dict:
    references = references or {}
    users = run.users
    present = [a for a in USER_ATTRIBUTES if a in users.columns]
    specs = [[a] for a in present] + ([["gender", "age_band"]] if {"gender", "age_band"} <= set(present) else [])
    user_tables = []
    for by in specs:
        name = " × ".join(by)
        user_tables.append(group_table(
            users, GroupSpec(name, by, ["ndcg@10", "recall@10", "long_tail_share", "harm_removals"],
                             ["ndcg@10", "recall@10"]),
            band=band, min_group_size=min_group_size, n_boot=n_boot, reference=references.get(name),
            cluster="user_id"))
    cands = run.candidates.rename(columns={"user_id": "audit_id"}).copy()
    cands["exposure"] = position_exposure(cands["rank"].to_numpy())
    cands["selected"] = (cands["rank"] > 0).astype(float)
    # The offline run ranks every user with the same top_k: one stratum.
    stratum = {"top_k": int(run.top_k)} if hasattr(run, "top_k") else None
    item_tables = [
        item_group_table(cands, "popularity", "popularity", gated=True, band=band, min_group_size=min_group_size,
                         n_boot=n_boot, reference=references.get("popularity"), stratum=stratum),
        item_group_table(cands, "genre", "genre", gated=False, band=band, min_group_size=min_group_size,
                         n_boot=n_boot, reference=references.get("genre"), stratum=stratum),
    ]
    returned = cands["rank"].to_numpy() > 0
    pop = popularity_bias(cands["item_id"].to_numpy(), cands["exposure"].to_numpy(), returned,
                          cands["popularity"].to_numpy(), universe=run.catalog_size)
    pop["universe"] = "catalog items"
    return {
        "dataset": run.dataset, "artifact_version": run.artifact_version, "users": int(len(users)),
        "overall": {"ndcg@10": float(users["ndcg@10"].mean()), "recall@10": float(users["recall@10"].mean()),
                    "long_tail_share": float(users["long_tail_share"].mean())},
        "user_groups": user_tables, "item_groups": item_tables, "popularity_bias": pop,
        "harm": {"removals": int(users["harm_removals"].sum())},
    }
