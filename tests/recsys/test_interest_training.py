"""Bi-encoder fine-tuning: mined hard negatives, early stopping on validation Recall@K, seeds."""
import numpy as np
import pytest

from recsys.data import load_dataset
from recsys.encoder import TextEncoder
from recsys.interest_training import fine_tune, make_pairs, mine_hard_negatives, recall_at_k
from recsys.ranking_data import split_data
from tests.conftest import DATA


@pytest.fixture(scope="module")
def slice_(tmp_path_factory):
    ds = load_dataset(DATA).subset_users(120, seed=0)
    sd = split_data(ds)
    fit = sd.split.fit
    pairs = make_pairs(fit, sd.catalog_fit, int(fit["timestamp"].max()) + 1, max_pairs=160, max_history=20, seed=0)
    return sd.catalog_fit, pairs


def test_split_users_is_disjoint_and_deterministic(slice_):
    _, pairs = slice_
    tr, va = pairs.split_users(0.2, seed=0)
    assert set(tr.user_ids).isdisjoint(va.user_ids)
    assert len(tr.item_rows) + len(va.item_rows) == len(pairs.item_rows) and len(va.item_rows) > 0
    tr2, va2 = pairs.split_users(0.2, seed=0)
    assert list(va2.item_rows) == list(va.item_rows)


def test_hard_negatives_are_near_but_never_positive_or_history(slice_, tiny_bert):
    catalog, pairs = slice_
    enc = TextEncoder.load(tiny_bert, device="cpu")
    V = enc.encode(list(catalog.texts))
    hn = mine_hard_negatives(enc, pairs, catalog, top=20, seed=0, item_vectors=V)
    assert len(hn) == len(pairs.item_rows) and (hn >= 0).all()
    for i, h in enumerate(hn):
        assert h != pairs.item_rows[i] and h not in set(pairs.histories[i].tolist())
    # "near": each negative is within the model's top 20 + exclusions for its user
    U = enc.encode(pairs.user_texts[:5], max_length=128)
    for i in range(5):
        rank = int((V @ U[i] > V[hn[i]] @ U[i]).sum())
        assert rank < 20 + len(pairs.histories[i]) + 1
    assert list(mine_hard_negatives(enc, pairs, catalog, top=20, seed=0, item_vectors=V)) == list(hn)


def test_training_with_hard_negatives_lowers_loss_and_keeps_the_best_validation_state(slice_, tiny_bert):
    catalog, pairs = slice_
    tr, va = pairs.split_users(0.25, seed=0)
    enc = TextEncoder.load(tiny_bert, device="cpu")
    hn = mine_hard_negatives(enc, tr, catalog, top=20, seed=0)
    # enough steps for a random 2-layer BERT to learn (about 15 at this rate), so the loss check can fail honestly
    out = fine_tune(enc, tr, catalog, epochs=6, batch_size=16, lr=2e-3, seed=0, hard_negatives=hn, val=va,
                    eval_every=3, patience=6, pool_size=200, progress=False)
    assert out["hard_negatives"] == len(tr.item_rows)
    curve = out["val_recall@10_curve"]
    assert curve[0][0] == 0 and len(curve) >= 2 and max(c[1] for c in curve) > 0
    best_step, best = max(curve, key=lambda c: (c[1], -c[0]))
    assert out["val_recall@10_best"] == best and out["best_step"] == best_step
    # the model left behind is the best one: re-measuring gives the best validation recall
    assert recall_at_k(enc, va, catalog, np.random.default_rng(1).choice(len(catalog), 200, replace=False)) \
        == pytest.approx(best)
    first, last = np.mean(out["loss_curve"][:3]), np.mean(out["loss_curve"][-3:])
    assert last < first


def test_same_data_and_seed_give_the_same_metrics(slice_, tiny_bert):
    catalog, pairs = slice_
    tr, va = pairs.split_users(0.25, seed=0)
    runs = []
    for _ in range(2):
        enc = TextEncoder.load(tiny_bert, device="cpu")
        out = fine_tune(enc, tr, catalog, max_steps=4, batch_size=16, lr=5e-4, seed=3, val=va, eval_every=2,
                        pool_size=100, progress=False)
        runs.append((out["loss_curve"], out["val_recall@10_curve"]))
    assert runs[0] == runs[1]


def test_validation_pool_mixes_popular_and_uniform_rows_deterministically():
    from recsys.interest_training import validation_pool

    popularity = np.zeros(1000)
    popularity[:50] = 100.0           # 50 popular rows
    pool = validation_pool(1000, 100, popularity, seed=1)
    assert len(pool) == len(set(pool.tolist())) == 100
    assert (pool[:50] < 50).mean() > 0.9          # the popularity half is drawn from the popular rows
    assert list(validation_pool(1000, 100, popularity, seed=1)) == list(pool)
    uniform = validation_pool(1000, 100, None, seed=1)
    assert list(uniform) == list(np.random.default_rng(1).choice(1000, size=100, replace=False))


def test_logq_correction_changes_training_only_when_items_are_sampled_unevenly(slice_, tiny_bert):
    """The correction subtracts log q(item) from in-batch logits: when every positive is a different item
    q is uniform, the shift is the same for every logit and the softmax (so training) is unchanged."""
    catalog, pairs = slice_
    _, first = np.unique(pairs.item_rows, return_index=True)
    unique = pairs.subset(np.sort(first))

    def curve(p, logq):
        enc = TextEncoder.load(tiny_bert, device="cpu")
        out = fine_tune(enc, p, catalog, max_steps=3, batch_size=16, lr=5e-4, seed=0, logq_correction=logq,
                        progress=False)
        assert out["logq_correction"] is logq
        return out["loss_curve"]

    assert curve(unique, True) == pytest.approx(curve(unique, False), rel=1e-5)
    # Half the items three times as often as the rest: now the correction matters.
    skewed = unique.subset(np.repeat(np.arange(48), np.tile([1, 3], 24)))
    assert curve(skewed, True) != pytest.approx(curve(skewed, False), rel=1e-5)
