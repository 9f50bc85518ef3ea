"""A small batch input shared by the engine-equality tests: known and new users, a text-only item every fourth
user, under-18 users meeting an R-rated item (so the audit removes something)."""
import pandas as pd


def mixed_frame(artifacts, known_items, n_known: int = 8, n_new: int = 8) -> pd.DataFrame:
    users = list(artifacts.users)[:n_known] + [f"new-{k}" for k in range(n_new)]
    rows = []
    for k, u in enumerate(users):
        rows += [{"user_id": u, "item_id": i, "text": None, "audit.age_band": "under_18" if k % 5 == 0 else "25-34",
                  "attr.content_rating": "R" if j == 1 else "PG"}
                 for j, i in enumerate(known_items[k % 10: k % 10 + 15])]
        if k % 4 == 0:
            rows.append({"user_id": u, "item_id": f"ugc-{k}", "text": f"a short film about item {k}",
                         "audit.age_band": rows[-1]["audit.age_band"], "attr.content_rating": "PG"})
    return pd.DataFrame(rows)
