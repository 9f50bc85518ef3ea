"""The per-user split: each user's parts are in time order, validation and test users are disjoint, and no
held-out interaction (or tag) reaches anything fitted."""
import numpy as np
import pandas as pd
import pytest

from recsys.data import load_ml_latest_small
from recsys.split import SplitConfig, split_per_user
from tests.conftest import DATA


@pytest.fixture(scope="module")
def small():
    return load_ml_latest_small(DATA).subset_users(120, seed=3)


def test_each_users_parts_follow_each_other_in_time_with_the_configured_shares(small):
    sp = split_per_user(small.interactions, SplitConfig(holdout_share=0.2, label_share=0.25))
    warm = sp.interactions[sp.interactions["part"] != "cold"]
    for user, rows in warm.groupby("user_id"):
        parts = rows["part"].replace("fit_cold", "fit").tolist()
        # fit rows, then label rows, then holdout rows, in the order of time
        assert parts == sorted(parts, key=("fit", "label", "holdout").index)
        assert rows["timestamp"].is_monotonic_increasing
        n = len(rows)
        assert parts.count("holdout") == max(1, round(0.2 * n))
        assert parts.count("label") == max(1, round(0.25 * (n - parts.count("holdout"))))


def test_users_with_few_interactions_keep_them_all_for_fitting():
    inter = pd.DataFrame({"user_id": ["a"] * 3 + ["b"] * 10, "item_id": [str(i) for i in range(13)],
                          "rating": 4.0, "timestamp": range(13)})
    sp = split_per_user(inter, SplitConfig(min_interactions=5))
    assert set(sp.interactions.loc[sp.interactions["user_id"] == "a", "part"]) == {"fit"}
    assert "holdout" in set(sp.interactions.loc[sp.interactions["user_id"] == "b", "part"])


def test_validation_and_test_users_partition_the_users_deterministically(small):
    a = split_per_user(small.interactions)
    b = split_per_user(small.interactions.sample(frac=1.0, random_state=1))
    assert a.val_users == b.val_users and a.test_users == b.test_users
    assert not a.val_users & a.test_users
    assert a.val_users | a.test_users == set(small.interactions["user_id"])
    assert 0.15 < len(a.val_users) / len(set(small.interactions["user_id"])) < 0.45
    c = split_per_user(small.interactions, SplitConfig(seed=1))
    assert c.val_users != a.val_users


@pytest.mark.parametrize("bad", [{"holdout_share": 0.0}, {"label_share": 1.0}, {"val_user_share": -0.1},
                                 {"min_interactions": 2}])
def test_bad_configuration_names_the_parameter(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SplitConfig(**bad)


def test_no_held_out_interaction_reaches_the_fitted_states(small):
    """Deleting every holdout row (and changing its ratings) changes nothing that training fits or serves."""
    from recsys.ranking_data import split_data

    base = split_data(small)
    hold = base.split.part("holdout", "cold")
    assert len(hold) > 0
    kept = small.interactions.merge(hold[["user_id", "item_id"]], how="left", indicator=True)
    without = kept[kept["_merge"] == "left_only"].drop(columns="_merge")
    # The users keep their holdout in the split itself, so compare the fitted states, not the parts.
    from recsys.catalog import Catalog
    from recsys.cooccurrence import CoOccurrence

    train = base.split.train
    end = int(train["timestamp"].max()) + 1
    cat2 = Catalog.build(small.items, base.split.visible_tags(small.tags, "train"), without, end)
    # (row order differs, so sums may differ in the last bit)
    np.testing.assert_allclose(base.catalog.stats.log_pop, cat2.stats.log_pop, rtol=1e-12)
    np.testing.assert_allclose(base.catalog.stats.mean_rating, cat2.stats.mean_rating, rtol=1e-12)
    np.testing.assert_array_equal(base.catalog.texts, cat2.texts)
    c2 = CoOccurrence.build(without, base.catalog.item_ids, end)
    assert (base.cooc.X != c2.X).nnz == 0


def test_the_fit_state_sees_neither_label_nor_holdout(small):
    from recsys.interest_training import make_pairs
    from recsys.ranking_data import split_data

    sd = split_data(small)
    fit = sd.split.fit
    assert set(fit["part"]) == {"fit"}
    later = sd.split.part("label", "holdout")
    # every fit-state statistic counts fit rows only
    assert sd.catalog_fit.stats.n_ratings.sum() == len(fit)
    assert sd.catalog.stats.n_ratings.sum() == len(sd.split.train)
    pairs = make_pairs(fit, sd.catalog_fit, int(fit["timestamp"].max()) + 1, max_pairs=10_000)
    later_pairs = set(zip(later["user_id"], later["item_id"]))
    targets = {(u, sd.catalog_fit.item_ids[r]) for u, r in zip(pairs.user_ids, pairs.item_rows)}
    assert targets and not targets & later_pairs


def test_a_tag_written_in_a_users_holdout_reaches_no_item_text(small):
    from recsys.ranking_data import split_data

    sp = split_per_user(small.interactions)
    user = sorted(sp.holdout_start)[0]
    t_hold = sp.holdout_start[user]
    item = next(i for i in small.items["item_id"] if i not in set(small.tags["item_id"]))
    tags = pd.concat([small.tags, pd.DataFrame({"item_id": [item, item], "tag": ["leakedtag", "earlytag"],
                                                "timestamp": [t_hold, t_hold - 10 ** 7], "user_id": [user, user]})])
    ds = type(small)(small.name, small.interactions, small.items, tags, small.users, small.sha256)
    sd = split_data(ds)
    row = sd.catalog.index[item]
    assert "leakedtag" not in sd.catalog.texts[row]
    assert "earlytag" in sd.catalog.texts[row]   # written before the holdout: visible to the train state
    assert "leakedtag" not in sd.catalog_fit.texts[row]


def test_cold_items_have_no_training_interaction(small):
    sp = split_per_user(small.interactions)
    cold = sp.cold_items()
    assert cold
    assert not cold & set(sp.train["item_id"])
    assert cold <= set(sp.part("holdout", "cold")["item_id"])


def test_drawn_cold_items_are_held_out_everywhere_and_have_no_tags(small):
    from recsys.ranking_data import split_data

    sp = split_per_user(small.interactions, SplitConfig(cold_item_share=0.1))
    drawn = set(sp.part("cold")["item_id"])
    assert drawn and drawn <= sp.cold_items()
    assert not drawn & set(sp.part("fit", "label", "holdout")["item_id"])
    # the cold slice's targets are the users' cold interactions from their holdout period on
    t = sp.cold_targets("test")
    assert len(t) and set(t["user_id"]) <= sp.test_users and set(t["item_id"]) <= sp.cold_items()
    assert (t["timestamp"] >= t["user_id"].map(sp.holdout_start)).all()
    sd = split_data(small, SplitConfig(cold_item_share=0.1))
    for item in list(drawn)[:50]:
        r = sd.catalog.index[item]
        assert "Tags:" not in sd.catalog.texts[r] and sd.catalog.stats.n_ratings[r] == 0
    assert split_per_user(small.interactions, SplitConfig(cold_item_share=0.0)).part("cold").empty


def test_fit_cold_items_are_new_to_the_fit_state_only(small):
    from recsys.ranking_data import split_data

    cfg = SplitConfig(cold_item_share=0.1, fit_cold_item_share=0.1)
    sd = split_data(small, cfg)
    sp = sd.split
    fc = sp.fit_cold_items()
    assert fc and not fc & set(sp.part("cold")["item_id"])   # never a drawn cold item
    assert not fc & set(sp.fit["item_id"])                  # the fit state never sees them...
    assert fc & set(sp.train["item_id"])                    # ...the train state (serving) does
    assert fc & set(sp.part("label")["item_id"])            # and their label rows are ranker targets
    rows = sd.catalog_fit.lookup(sorted(fc))
    assert (sd.catalog_fit.stats.n_ratings[rows] == 0).all()
    assert not any("Tags:" in sd.catalog_fit.texts[r] for r in rows)
