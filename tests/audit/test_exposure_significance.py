"""The group-blind laws are exact (against scipy and brute-force enumeration), Holm is Holm, and the
tester never rejects what could not be rejected."""
import itertools
import math

import numpy as np
import pytest
from scipy.stats import hypergeom

from audit.exposure_significance import ExposureTester, group_law, holm, hypergeom_pmf, rank_table


@pytest.mark.parametrize("N,n,k", [(100, 50, 10), (100, 17, 10), (12, 3, 10), (40, 20, 20), (7, 7, 3), (5, 0, 2),
                                   (1000, 13, 100)])
def test_hypergeometric_pmf_equals_scipy(N, n, k):
    np.testing.assert_allclose(hypergeom_pmf(N, n, k), hypergeom.pmf(np.arange(k + 1), N, n, k), rtol=1e-12,
                               atol=1e-300)


@pytest.mark.parametrize("N,n,k", [(6, 2, 3), (7, 3, 4), (8, 4, 5), (5, 2, 5), (8, 1, 3), (9, 5, 2)])
def test_exposure_law_equals_enumeration_of_every_ordered_top_k(N, n, k):
    """Every ordered draw of k of N candidates is equally likely under a group-blind ranking: count them."""
    alpha = 0.3   # a wide tail, so the stored prefix of the CDF has many entries to compare
    table = rank_table(k)
    law = group_law(table, N, n, alpha)
    members = set(range(n))
    sums, counts = [], []
    for draw in itertools.permutations(range(N), k):
        sums.append(sum(q for q, c in zip(table.q, draw) if c in members))
        counts.append(sum(c in members for c in draw))
    sums, counts = np.array(sums), np.array(counts)
    for x in range(k + 1):
        assert law.cdf_count[x] == pytest.approx((counts <= x).mean(), abs=1e-12)
    for t, p in enumerate(law.cdf_exposure):
        assert p == pytest.approx((sums <= t).mean(), abs=1e-12)
    assert law.t_crit == len(law.cdf_exposure) - 1
    assert (sums <= law.t_crit).mean() <= alpha + 1e-12 and (sums <= law.t_crit + 1).mean() > alpha
    assert law.min_p_exposure == pytest.approx((sums <= sums.min()).mean(), abs=1e-12)
    assert law.min_p_count == pytest.approx((counts <= counts.min()).mean(), abs=1e-12)


def test_rounded_discounts_follow_the_log_discount():
    for k in (1, 5, 10, 20, 100):
        t = rank_table(k)
        d = [1 / math.log2(1 + r) for r in range(1, k + 1)]
        assert all(abs(q - x * t.scale) <= 0.5 for q, x in zip(t.q, d))
        assert list(t.q) == sorted(t.q, reverse=True)
        assert sum(t.q) <= 4096 + k


def test_holm_equals_its_definition_on_the_whole_family():
    rng = np.random.default_rng(3)
    for _ in range(400):
        m = int(rng.integers(1, 8))
        p = rng.uniform(0, 0.2, size=m) ** 2
        order = np.argsort(p, kind="stable")
        want = np.empty(m)
        running = 0.0
        for step, i in enumerate(order):
            running = max(running, min(1.0, (m - step) * p[i]))
            want[i] = running
        # Only the ones at most alpha are passed, with the family size: the same adjusted values.
        keep = [i for i in range(m) if p[i] <= 0.05]
        got = holm([p[i] for i in keep], m)
        np.testing.assert_allclose(got, want[keep], rtol=1e-12)


def test_a_group_that_cannot_reach_alpha_is_not_testable_and_never_rejected():
    tester = ExposureTester(0.05)
    # 17 of 100 candidates, top 10: even none of them returned has p = C(83,10)/C(100,10) = 0.14.
    res = tester.test(100, 10, [0, 1], [83, 17], [10 / 83, 0.0], [1.0, 0.0], [0] * 10)
    assert not res.testable[1] and res.adj_count[1] is None and res.adj_exposure[1] is None
    assert res.min_p[1] == pytest.approx(hypergeom.pmf(0, 100, 17, 10))
    assert res.testable[0]


def test_holm_family_counts_only_testable_hypotheses():
    tester = ExposureTester(0.05)
    # 50/50, group 1 gets none of the top 10: p = C(50,10)/C(100,10); 4 hypotheses in the family.
    p0 = hypergeom.pmf(0, 100, 50, 10)
    res = tester.test(100, 10, [0, 1], [50, 50], [0.2, 0.0], [1.0, 0.0], [0] * 10)
    # Its count and exposure p-values are both P(X = 0) (no items, no exposure): Holm gives 4 p0 to both.
    assert res.adj_count[1] == pytest.approx(4 * p0) and res.adj_exposure[1] == pytest.approx(4 * p0)
    assert res.adj_count[0] is None   # group 0 got everything: p = 1
