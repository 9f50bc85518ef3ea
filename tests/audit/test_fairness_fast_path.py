"""The per-request numpy path must equal Fairlearn's MetricFrame (the reference)."""
import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from fairlearn.metrics import demographic_parity_difference, demographic_parity_ratio

from audit.fairness import (exposure_by_group, exposure_by_group_fast, exposure_by_group_reference, exposure_selected,
                             group_codes)


@st.composite
def ranked_lists(draw):
    n = draw(st.integers(1, 60))
    n_groups = draw(st.integers(1, 5))
    groups = draw(st.lists(st.sampled_from([f"g{i}" for i in range(n_groups)]), min_size=n, max_size=n))
    k = draw(st.integers(0, n))
    perm = draw(st.permutations(range(n)))
    ranks = np.zeros(n)
    for r, p in enumerate(perm[:k], start=1):
        ranks[p] = r
    return np.array(groups, dtype=object), ranks


# Thousands of lists (about 100 s): the fast path is what every request's audit runs on.
@settings(max_examples=2000, deadline=None)
@given(ranked_lists())
def test_fast_path_equals_metricframe(data):
    groups, ranks = data
    ref = exposure_by_group(groups, ranks)
    fast = exposure_by_group_fast(groups, ranks)
    a = ref.table.sort_index()
    b = fast.to_frame().sort_index()
    assert list(a.index) == list(b.index)
    assert list(a["n"]) == list(b["n"])
    for col in ("selection_rate", "exposure_share", "candidate_share", "exposure_ratio"):
        np.testing.assert_allclose(b[col].to_numpy(float), a[col].to_numpy(float), rtol=0, atol=1e-9)
    np.testing.assert_allclose(fast.selection_rate_difference, ref.selection_rate_difference, atol=1e-9)
    if np.isnan(ref.selection_rate_ratio):
        assert np.isnan(fast.selection_rate_ratio)
    else:
        np.testing.assert_allclose(fast.selection_rate_ratio, ref.selection_rate_ratio, atol=1e-9)


@settings(max_examples=300, deadline=None)
@given(ranked_lists())
def test_fast_path_equals_fairlearn_demographic_parity(data):
    groups, ranks = data
    selected = (ranks >= 1).astype(int)
    fast = exposure_by_group_fast(groups, ranks)
    diff = demographic_parity_difference(selected, selected, sensitive_features=pd.Series(groups.astype(str)))
    ratio = demographic_parity_ratio(selected, selected, sensitive_features=pd.Series(groups.astype(str)))
    np.testing.assert_allclose(fast.selection_rate_difference, diff, rtol=0, atol=1e-9)
    if np.isnan(ratio):
        assert np.isnan(fast.selection_rate_ratio)
    else:
        np.testing.assert_allclose(fast.selection_rate_ratio, ratio, rtol=0, atol=1e-9)
    ref = exposure_by_group_reference(groups, ranks)
    np.testing.assert_allclose(ref.exposure_ratio, fast.exposure_ratio, rtol=0, atol=1e-9)


def test_known_values():
    groups = np.array(["a"] * 6 + ["b"] * 4, dtype=object)
    ranks = np.array([1, 2, 3, 0, 0, 0, 4, 0, 0, 0])
    r = exposure_by_group(groups, ranks)
    assert r.table.loc["a", "selection_rate"] == 0.5
    assert r.table.loc["b", "selection_rate"] == 0.25
    assert r.selection_rate_ratio == 0.5
    exp_b = 1 / np.log2(5)
    total = 1 + 1 / np.log2(3) + 0.5 + exp_b
    np.testing.assert_allclose(r.table.loc["b", "exposure_share"], exp_b / total)


@settings(max_examples=300, deadline=None)
@given(ranked_lists())
def test_audit_stage_form_equals_metricframe(data):
    """The audit stage's own call: group counts, then the returned items' codes in rank order (ranks implied,
    discounts from the table)."""
    groups, ranks = data
    labels, codes = group_codes(groups)
    n = np.bincount(codes, minlength=len(labels)).tolist()
    returned = np.argsort(np.where(ranks >= 1, ranks, np.inf), kind="stable")[:int((ranks >= 1).sum())]
    present, sizes, rate, exp_share, cand_share, ratio = exposure_selected(n, codes[returned].tolist())
    a = exposure_by_group(groups, ranks).table.sort_index()
    assert [labels[c] for c in present] == list(a.index) and sizes == list(a["n"])
    for col, got in (("selection_rate", rate), ("exposure_share", exp_share), ("candidate_share", cand_share),
                     ("exposure_ratio", ratio)):
        np.testing.assert_allclose(got, a[col].to_numpy(float), rtol=0, atol=1e-9)
    # The same doubles as passing the ranks explicitly.
    assert exposure_selected(n, codes[returned].tolist(), range(1, len(returned) + 1)) == (
        present, sizes, rate, exp_share, cand_share, ratio)


@settings(max_examples=400, deadline=None)
@given(ranked_lists())
def test_significance_tests_get_the_same_inputs_from_both_paths(data):
    """The group-blind tests run on what the stage's fast path computes; fed with Fairlearn's MetricFrame
    numbers instead (the `exposure_metrics="fairlearn"` path), they give the same p-values and verdicts."""
    from audit.exposure_significance import ExposureTester

    groups, ranks = data
    k = int((ranks >= 1).sum())
    labels, codes = group_codes(groups)
    n = np.bincount(codes, minlength=len(labels)).tolist()
    returned = np.argsort(np.where(ranks >= 1, ranks, np.inf), kind="stable")[:k]
    ret_codes = codes[returned].tolist()
    present, sizes, rate, exp_share, _, _ = exposure_selected(n, ret_codes)
    tester = ExposureTester(0.05)
    fast = tester.test(len(groups), k, present, sizes, rate, exp_share, ret_codes, 1)
    ref = exposure_by_group_reference(groups, ranks)
    idx = {g: j for j, g in enumerate(ref.groups)}
    ref_codes = [idx[groups[i]] for i in returned]
    slow = ExposureTester(0.05).test(len(groups), k, list(range(len(ref.groups))), ref.n.tolist(),
                                     ref.selection_rate.tolist(), ref.exposure_share.tolist(), ref_codes, 1)
    assert fast == slow
