"""The batch input check's column-wise fast path (`plainly_valid`) never passes a chunk that the exact
per-user check rejects, and does pass clean chunks (otherwise it would save nothing)."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.batch.inputs import Chunker, inspect_input, iter_chunks
from recsys.batch.scoring import UserError, build_requests, chunk_columns, plainly_valid
from recsys.domain import AuditMode

CATALOG = [f"i{k}" for k in range(40)]


def _clean(rng, users: int = 12) -> dict[str, list]:
    cols: dict[str, list] = {"user_id": [], "item_id": [], "text": [], "group": [], "feature.price": [],
                             "attr.content_rating": [], "audit.age_band": []}
    for u in range(users):
        items = rng.choice(len(CATALOG), size=int(rng.integers(1, 8)), replace=False)
        band = None if u % 3 == 0 else ["under_18", "25-34"][u % 2]
        for k in items:
            cols["user_id"].append(f"u{u}")
            cols["item_id"].append(CATALOG[k])
            cols["text"].append(None if rng.random() < 0.7 else "a film about boats")
            cols["group"].append(None if rng.random() < 0.5 else "indie")
            cols["feature.price"].append(float(rng.normal()) if rng.random() < 0.8 else float("nan"))
            cols["attr.content_rating"].append(None if rng.random() < 0.5 else "PG")
            cols["audit.age_band"].append(band if rng.random() < 0.8 else None)
    return cols


def _defect(kind: str, cols: dict[str, list], rng) -> None:
    """Make one row (or one user) invalid in the way `kind` says."""
    n = len(cols["item_id"])
    r = int(rng.integers(0, n))
    user = cols["user_id"][r]
    same_user = [i for i in range(n) if cols["user_id"][i] == user]
    if kind == "empty_item":
        cols["item_id"][r] = ""
    elif kind == "null_item":
        cols["item_id"][r] = None
    elif kind == "long_item":
        cols["item_id"][r] = "x" * 257
        cols["text"][r] = "has text"
    elif kind == "unknown_item_no_text":
        cols["item_id"][r], cols["text"][r] = "not-in-catalog", None
    elif kind == "duplicate_item":
        if len(same_user) < 2:
            cols["user_id"].append(user)
            for c in cols:
                if c != "user_id":
                    cols[c].append(cols[c][r])
        else:
            cols["item_id"][same_user[1]] = cols["item_id"][same_user[0]]
    elif kind == "long_text":
        cols["text"][r] = "y" * 2001
    elif kind == "long_group":
        cols["group"][r] = "g" * 257
    elif kind == "long_attr_value":
        cols["attr.content_rating"][r] = "v" * 257
    elif kind == "long_audit_value":
        for i in same_user:
            cols["audit.age_band"][i] = "a" * 257
    elif kind == "infinite_feature":
        cols["feature.price"][r] = float("inf")
    elif kind == "audit_disagrees":
        cols["audit.age_band"][same_user[0]] = "under_18"
        if len(same_user) < 2:
            cols["user_id"].append(user)
            for c in cols:
                if c != "user_id":
                    cols[c].append(cols[c][r] if c != "item_id" else "i39" if cols["item_id"][r] != "i39" else "i38")
            cols["audit.age_band"][-1] = "25-34"
        else:
            cols["audit.age_band"][same_user[1]] = "25-34"
    else:
        raise ValueError(kind)


def _sorted_by_user(cols: dict[str, list]) -> pa.Table:
    order = sorted(range(len(cols["user_id"])), key=lambda i: int(cols["user_id"][i][1:]))
    return pa.table({c: pa.array([v[i] for i in order], type=pa.float64() if c.startswith("feature.") else pa.string())
                     for c, v in cols.items()})


def _both(tmp_path, table: pa.Table, name: str) -> list[tuple[bool, bool]]:
    """(fast says valid, exact path finds no error) per chunk."""
    path = tmp_path / f"{name}.parquet"
    pq.write_table(table, path)
    spec = inspect_input(path, ("price",))
    out = []
    for chunk in iter_chunks(spec, Chunker(5, 1000)):
        cols = chunk_columns(chunk, spec, pa.array(CATALOG))
        fast = plainly_valid(chunk, cols, spec, top_k=None, request_prefix="batch-job-")
        exact = build_requests(chunk, cols, top_k=None, audit_mode=AuditMode.ENFORCE, request_prefix="batch-job-",
                               validate=True)
        out.append((fast, not any(isinstance(x, UserError) for x in exact)))
    return out


def test_clean_chunks_take_the_fast_path(tmp_path):
    rng = np.random.default_rng(0)
    verdicts = _both(tmp_path, _sorted_by_user(_clean(rng)), "clean")
    assert verdicts and all(fast and exact for fast, exact in verdicts)


@pytest.mark.parametrize("kind", ["empty_item", "null_item", "long_item", "unknown_item_no_text", "duplicate_item",
                                  "long_text", "long_group", "long_attr_value", "long_audit_value",
                                  "infinite_feature", "audit_disagrees"])
def test_a_chunk_the_exact_check_rejects_never_passes_the_fast_path(tmp_path, kind):
    for seed in range(8):
        rng = np.random.default_rng(seed)
        cols = _clean(rng)
        _defect(kind, cols, rng)
        verdicts = _both(tmp_path, _sorted_by_user(cols), f"{kind}-{seed}")
        assert any(not exact for _, exact in verdicts), f"{kind}: the defect did not make the input invalid"
        for fast, exact in verdicts:
            assert exact or not fast, f"{kind} (seed {seed}): fast path passed a chunk the exact check rejects"
