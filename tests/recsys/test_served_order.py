"""The evaluated order is the served order: lists of the artifact's own test split, scored by the evaluation's
feature matrix, come back in that order from gRPC Rank (history sent or taken from users.json) and from the
batch job, with exact ties broken by the documented secondary keys rather than by input order."""
import numpy as np
import pandas as pd
from ethicrec.v1 import recommender_pb2 as pb

from recsys.order import served_order


def _eval_lists(artifacts, n_lists=12):
    from recsys.data import load_dataset
    from recsys.features import FeatureBuilder
    from recsys.offline import split_of
    from recsys.ranking_data import build_ranking_set, holdout_lists, user_vectors
    from tests.conftest import DATA

    params = artifacts.metadata["params"]
    ds = load_dataset(DATA).subset_users(int(params["sample_users"]), seed=int(params["seed"]))
    sd = split_of(artifacts, ds)
    lists = holdout_lists(sd, "test", "uniform", 60, 0)[:n_lists // 2] + \
        holdout_lists(sd, "test", "retrieval", 60, 0, artifacts.als)[:n_lists // 2]
    fb = FeatureBuilder(sd.catalog, sd.cooc, artifacts.als)
    vecs = np.asarray(artifacts.store.item_vectors)
    rs = build_ranking_set(lists, fb, vecs, user_vectors(artifacts.store.encoder, sd.catalog, lists), graded=False)
    names = list(rs.names)
    out = []
    for (s, e), cl in zip(rs.bounds(), rs.lists):
        scores = artifacts.ranker.predict(rs.X[s:e])
        order = served_order(scores, rs.X[s:e, names.index("interest")], cl.candidates)
        out.append((cl, [str(artifacts.catalog.item_ids[cl.candidates[p]]) for p in order]))
    return out


def test_grpc_rank_returns_the_evaluated_order(artifacts, stub):
    lists = _eval_lists(artifacts)
    assert len(lists) >= 10
    for cl, expected in lists:
        ids = [str(artifacts.catalog.item_ids[c]) for c in cl.candidates]
        history = [str(artifacts.catalog.item_ids[h]) for h in cl.history if h >= 0]
        k = min(100, len(ids))
        for user in (pb.User(user_id=cl.user_id, history_item_ids=history), pb.User(user_id=cl.user_id)):
            resp = stub.Rank(pb.RankRequest(user=user, candidate_ids=ids, top_k=k,
                                            audit_mode=pb.AUDIT_MODE_FLAG_ONLY), timeout=30)
            assert [i.item_id for i in resp.items] == expected[:k]
            # the input order does not matter
            resp = stub.Rank(pb.RankRequest(user=user, candidate_ids=ids[::-1], top_k=k,
                                            audit_mode=pb.AUDIT_MODE_FLAG_ONLY), timeout=30)
            assert [i.item_id for i in resp.items] == expected[:k]


def test_batch_job_returns_the_evaluated_order(artifacts, audit_log, tmp_path):
    from audit.policy import load_policy
    from recsys.batch import build_batch_pipeline, run_batch
    from recsys.domain import AuditMode

    lists = _eval_lists(artifacts)
    rows = [{"user_id": f"{cl.user_id}", "item_id": str(artifacts.catalog.item_ids[c]), "list": j}
            for j, (cl, _) in enumerate(lists) for c in cl.candidates]
    # one user may have two lists: a batch user is one list, so each list gets its own user id; known users'
    # histories come from users.json by id, so only the first list of each user is sent
    seen, keep = set(), []
    for j, (cl, _) in enumerate(lists):
        if cl.user_id not in seen:
            seen.add(cl.user_id)
            keep.append(j)
    df = pd.DataFrame([r for r in rows if r["list"] in keep]).drop(columns="list")
    df.to_parquet(tmp_path / "in.parquet")
    pipe = build_batch_pipeline(artifacts, load_policy(), audit_log)
    run_batch(pipe, artifacts.catalog.index, artifacts.extra_features, tmp_path / "in.parquet", tmp_path / "out",
              top_k=100, progress=False, audit_mode=AuditMode.FLAG_ONLY)
    out = pd.read_parquet(tmp_path / "out")
    for j in keep:
        cl, expected = lists[j]
        mine = out[(out["user_id"] == cl.user_id) & (out["rank"] > 0)].sort_values("rank")
        assert list(mine["item_id"]) == expected[:len(mine)] and len(mine) == min(100, len(expected))


def test_exact_ties_fall_to_interest_then_catalog_row():
    scores = np.array([1.0, 2.0, 1.0, 1.0, 1.0])
    interest = np.array([0.1, 0.0, 0.3, 0.1, np.nan])
    rows = np.array([9, 4, 7, 2, -1])
    assert served_order(scores, interest, rows).tolist() == [1, 2, 3, 0, 4]
    perm = np.array([4, 3, 2, 1, 0])
    back = perm[served_order(scores[perm], interest[perm], rows[perm])]
    assert back.tolist() == [1, 2, 3, 0, 4]
