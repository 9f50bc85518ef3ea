"""Fair re-ranking of one list: thresholds met, utility loss bounded, lists stay valid."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.fairness import exposure_by_group_fast
from audit.rerank import constrained_greedy, fair_rerank, relative_ndcg

KW = dict(min_selection_rate_ratio=0.8, min_exposure_ratio=0.8, min_group_size=5)


def _ranks(top, n):
    r = np.zeros(n)
    r[top] = np.arange(1, len(top) + 1)
    return r


def _skewed(n_head=30, n_tail=70):
    """Scores fall smoothly; every head item outranks every long-tail item."""
    scores = np.linspace(1.0, 0.0, n_head + n_tail)
    groups = np.array(["head"] * n_head + ["long_tail"] * n_tail)
    return scores, groups


def test_fair_list_is_left_alone():
    scores = np.linspace(1.0, 0.0, 40)
    groups = np.array(["a", "b"] * 20)
    res = fair_rerank(scores, groups, 10, max_ndcg_loss=0.05, **KW)
    assert res.top == list(range(10)) and not res.changed and res.satisfied and res.ndcg == 1.0
    assert res.method == "original"


def test_skewed_list_is_brought_within_thresholds_at_bounded_cost():
    scores, groups = _skewed()
    before = exposure_by_group_fast(groups, _ranks(list(range(10)), 100))
    assert before.selection_rate_ratio == 0.0
    res = fair_rerank(scores, groups, 10, max_ndcg_loss=0.5, **KW)
    assert res.satisfied and res.changed and res.method == "exact" and res.exhaustive
    after = exposure_by_group_fast(groups, _ranks(res.top, 100))
    assert after.selection_rate_ratio >= 0.8 and after.exposure_ratio.min() >= 0.8
    assert 1 - res.ndcg <= 0.5
    assert res.ndcg == pytest.approx(relative_ndcg(scores, res.top, 10))


def test_tight_bound_keeps_loss_within_it_and_says_not_satisfied():
    scores, groups = _skewed()
    res = fair_rerank(scores, groups, 10, max_ndcg_loss=0.01, **KW)
    assert 1 - res.ndcg <= 0.01 + 1e-12
    assert not res.satisfied


def test_small_groups_are_not_forced_in():
    scores = np.linspace(1.0, 0.0, 43)
    groups = np.array(["a"] * 20 + ["b"] * 20 + ["tiny"] * 3)
    res = fair_rerank(scores, groups, 10, max_ndcg_loss=1.0, **KW)
    assert not any(groups[i] == "tiny" for i in res.top)


def test_long_lists_use_the_constrained_greedy_within_the_bound():
    scores, groups = _skewed(60, 140)
    res = fair_rerank(scores, groups, 30, max_ndcg_loss=0.5, **KW)
    assert res.method == "greedy" and res.satisfied and 1 - res.ndcg <= 0.5


def test_greedy_respects_prefix_minimums():
    codes = np.array([0] * 10 + [1] * 10)
    top = constrained_greedy(codes, 10, np.array([0.0, 0.5]))
    for p in range(1, 11):
        assert sum(codes[i] == 1 for i in top[:p]) >= int(np.floor(0.5 * p))


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 60), k=st.integers(1, 15), n_groups=st.integers(1, 4),
       bound=st.sampled_from([0.0, 0.01, 0.05, 0.2, 1.0]), seed=st.integers(0, 10_000))
def test_any_list_stays_a_valid_top_k_within_the_bound(n, k, n_groups, bound, seed):
    rng = np.random.default_rng(seed)
    scores = np.sort(rng.normal(size=n))[::-1]
    groups = rng.choice([f"g{i}" for i in range(n_groups)], size=n)
    res = fair_rerank(scores, groups, k, max_ndcg_loss=bound, **KW)
    assert len(res.top) == min(k, n) and len(set(res.top)) == len(res.top)
    assert all(0 <= i < n for i in res.top)
    assert 1 - res.ndcg <= bound + 1e-9
