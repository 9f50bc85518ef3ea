"""The evaluation's and training's candidate lists are what they claim: uniform negatives never rated,
retrieval lists without injected positives, cold lists of cold items only, training lists from label parts."""
import numpy as np
import pytest

from recsys.data import load_ml_latest_small
from recsys.split import POSITIVE_RATING, SplitConfig
from tests.conftest import DATA


@pytest.fixture(scope="module")
def sd():
    from recsys.ranking_data import split_data

    return split_data(load_ml_latest_small(DATA).subset_users(150, seed=2),
                      SplitConfig(cold_item_share=0.1, fit_cold_item_share=0.1))


@pytest.fixture(scope="module")
def als(sd):
    from recsys.ranking_data import fit_als

    return fit_als(sd.split.train, sd.catalog, {"factors": 8, "alpha": 1.0, "regularization": 0.1})


def test_uniform_lists_are_held_out_positives_plus_never_rated_items(sd):
    from recsys.ranking_data import holdout_lists

    lists = holdout_lists(sd, "test", "uniform", 50, seed=0)
    assert lists and {cl.user_id for cl in lists} <= sd.split.test_users
    inter = sd.split.interactions
    for cl in lists[:30]:
        rated = set(sd.catalog.lookup(inter.loc[inter["user_id"] == cl.user_id, "item_id"].tolist()).tolist())
        hold = sd.split.holdout("test")
        mine = hold[hold["user_id"] == cl.user_id]
        positives = set(sd.catalog.lookup(mine.loc[mine["rating"] >= POSITIVE_RATING, "item_id"].tolist()).tolist())
        pos = {int(c) for c, r in zip(cl.candidates, cl.ratings) if r > 0}
        assert pos == positives and (cl.ratings[cl.ratings > 0] >= POSITIVE_RATING).all()
        neg = [int(c) for c, r in zip(cl.candidates, cl.ratings) if r == 0]
        assert len(neg) == 50 and not set(neg) & rated and len(set(cl.candidates.tolist())) == len(cl.candidates)
        train = inter[(inter["user_id"] == cl.user_id) & inter["part"].isin(("fit", "fit_cold", "label"))]
        assert set(cl.history.tolist()) <= set(sd.catalog.lookup(train["item_id"].tolist()).tolist())
    again = holdout_lists(sd, "test", "uniform", 50, seed=0)
    assert [c.candidates.tolist() for c in again] == [c.candidates.tolist() for c in lists]


def test_retrieval_lists_inject_no_positive_and_skip_the_history(sd, als):
    from recsys.ranking_data import full_histories, holdout_lists

    lists = holdout_lists(sd, "val", "retrieval", 40, seed=0, als=als)
    full = full_histories(sd)
    assert lists
    for cl in lists:
        assert len(cl.candidates) == 40 and not set(cl.candidates.tolist()) & set(full[cl.user_id].tolist())
        u = als.user_vector(full[cl.user_id])
        top = np.argsort(-(als.item_factors_.astype(np.float64) @ u))
        top = [int(t) for t in top if t not in set(full[cl.user_id].tolist())][:40]
        assert sorted(top) == sorted(cl.candidates.tolist())     # the retrieval stage's top 40, nothing added
        assert (cl.ratings >= POSITIVE_RATING).any()             # lists without a positive are not evaluated


def test_cold_lists_hold_cold_items_only(sd):
    from recsys.ranking_data import holdout_lists

    lists = holdout_lists(sd, "test", "cold", 30, seed=0)
    cold = set(sd.catalog.lookup(sorted(sd.split.cold_items())).tolist())
    assert lists
    for cl in lists:
        assert set(cl.candidates.tolist()) <= cold
        assert (sd.catalog.stats.n_ratings[cl.candidates] == 0).all()


def test_training_lists_come_from_label_parts_and_teach_cold_items(sd):
    from recsys.ranking_data import fit_als, training_lists

    als_fit = fit_als(sd.split.fit, sd.catalog_fit, {"factors": 8, "alpha": 1.0, "regularization": 0.1})
    one = training_lists(sd, als_fit, 30, seed=0, cuts=1)
    two = training_lists(sd, als_fit, 30, seed=0, cuts=2)
    assert len(two) > len(one)
    label = sd.split.part("label")
    for cl in two[:200]:
        mine = label[label["user_id"] == cl.user_id]
        targets = set(sd.catalog_fit.lookup(mine["item_id"].tolist()).tolist())
        assert {int(c) for c, r in zip(cl.candidates, cl.ratings) if r > 0} <= targets
    # positives among items the fit state has never seen: the ranker learns to rank by text, genre and year
    zero = [r for cl in two for c, r in zip(cl.candidates, cl.ratings) if r > 0
            and sd.catalog_fit.stats.n_ratings[c] == 0]
    assert len(zero) > 5
    with pytest.raises(ValueError, match="cuts"):
        training_lists(sd, als_fit, 30, seed=0, cuts=0)
