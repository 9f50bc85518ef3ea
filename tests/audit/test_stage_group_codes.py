"""The audit stage codes catalog groups by one lookup (no per-request string coding); its exposure
findings must be exactly those of the generic coding (the path the MetricFrame-equality test covers) and of
the Fairlearn reference, whatever mix of candidates and returned lists."""
import dataclasses

import numpy as np
import pytest

from recsys.domain import Candidate, RankRequest, UserContext
from recsys.pipeline import RankContext


def _ctx(pipeline, candidates) -> RankContext:
    ctx = RankContext(RankRequest(UserContext("1"), tuple(candidates), top_k=5))
    next(s for s in pipeline.stages if s.name == "resolve")(ctx)
    return ctx


def _stage(pipeline):
    return next(s for s in pipeline.stages if s.name == "audit")


def _generic(ctx):
    return dataclasses.replace(ctx, groups_from_catalog=False)


def test_catalog_coding_gives_the_generic_and_reference_findings(pipeline, artifacts):
    rng = np.random.default_rng(0)
    stage = _stage(pipeline)
    seen_single_group = seen_two_groups = False
    for _ in range(60):
        idx = rng.choice(len(artifacts.catalog.item_ids), size=int(rng.integers(1, 60)), replace=False)
        ctx = _ctx(pipeline, [Candidate(artifacts.catalog.item_ids[i]) for i in idx])
        assert ctx.groups_from_catalog
        eligible = rng.permutation(len(idx))[: int(rng.integers(1, len(idx) + 1))].tolist()
        final = (eligible[: 5] if rng.random() < 0.5
                 else rng.permutation(eligible)[: min(5, len(eligible))].tolist())
        dropped = len(eligible) < len(idx)
        at = np.array(final, dtype=np.intp)
        fast = stage._exposure(ctx, *stage._group_coding(ctx), eligible, final, at, dropped)[:2]
        assert fast == stage._exposure(_generic(ctx), *stage._group_coding(_generic(ctx)), eligible, final, at,
                                       dropped)[:2]
        stage._reference = True
        try:
            assert fast == stage._exposure(ctx, *stage._group_coding(ctx), eligible, final, at, dropped)[:2]
        finally:
            stage._reference = False
        n_groups = len(set(ctx.groups[eligible].tolist()))
        seen_single_group |= n_groups == 1
        seen_two_groups |= n_groups == 2
    assert seen_single_group and seen_two_groups


def test_request_groups_and_unknown_items_use_generic_coding(pipeline, known_items):
    ctx = _ctx(pipeline, [Candidate(known_items[0], group="indie"), Candidate(known_items[1]),
                          Candidate("new-1", text="A quiet drama")])
    assert not ctx.groups_from_catalog
    assert ctx.groups[0] == "indie" and ctx.groups[2] == "unknown"
    stage = _stage(pipeline)
    findings, _, _ = stage._exposure(ctx, *stage._group_coding(ctx), [0, 1, 2], [0], np.array([0]), False)
    assert {f.group for f in findings if f.code == "INSUFFICIENT_EVIDENCE"} == set(ctx.groups.tolist())


def test_exposure_findings_follow_the_metricframe_table_and_the_exact_tests(pipeline, known_items):
    """Which group each finding names and with what evidence, checked against Fairlearn's table, scipy's
    hypergeometric law, the tabulated exposure law (itself checked against enumeration) and Holm over the
    family of testable hypotheses, rather than against the stage's own loop."""
    from scipy.stats import hypergeom

    from audit.exposure_significance import group_law, holm, rank_table
    from audit.fairness import exposure_by_group

    rng = np.random.default_rng(1)
    stage = _stage(pipeline)
    pol = stage.policy.exposure
    alpha = pol.alpha
    kinds = set()
    for _ in range(150):
        n = int(rng.integers(4, 60))
        groups = rng.choice(["a", "b", "c"], size=n, p=rng.dirichlet([1, 1, 1])).tolist()
        ctx = _ctx(pipeline, [Candidate(known_items[i % len(known_items)] if i < len(known_items) else f"x{i}",
                                        text=None if i < len(known_items) else "some text", group=g)
                              for i, g in enumerate(groups)])
        eligible = rng.permutation(n)[: int(rng.integers(2, n + 1))].tolist()
        if rng.random() < 0.5:   # a biased ranking: one group first
            first = rng.choice(["a", "b", "c"])
            eligible.sort(key=lambda p: groups[p] != first)
        final = eligible[: int(rng.integers(1, min(12, len(eligible)) + 1))]
        got, _, _ = stage._exposure(ctx, *stage._group_coding(ctx), eligible, final, np.array(final, dtype=np.intp),
                                    len(eligible) < n)
        ranks = np.zeros(len(eligible))
        for r, p in enumerate(final, start=1):
            ranks[eligible.index(p)] = r
        t = exposure_by_group(ctx.groups[eligible], ranks).table.sort_index()
        labels, sizes = [str(g) for g in t.index], t["n"].tolist()
        rate, er = t["selection_rate"].tolist(), t["exposure_ratio"].tolist()
        N, k = len(eligible), len(final)
        if len(labels) < 2:     # one group: nothing to compare, no findings
            assert got == []
            continue
        table = rank_table(k)
        family, raw, insufficient = 0, [], {}
        for j, g in enumerate(labels):
            if sizes[j] < pol.min_group_size:
                insufficient[j] = "group_size"
                continue
            law = group_law(table, N, sizes[j], alpha)
            if law.min_p_count > alpha and law.min_p_exposure > alpha:
                insufficient[j] = "min_attainable_p_value"
                continue
            x = sum(groups[p] == g for p in final)
            t_g = sum(q for q, p in zip(table.q, final) if groups[p] == g)
            if law.min_p_count <= alpha:
                family += 1
                raw.append((j, "selection_rate_ratio", float(hypergeom.cdf(x, N, sizes[j], k))))
            if law.min_p_exposure <= alpha:
                family += 1
                raw.append((j, "exposure_ratio", law.cdf_exposure[t_g] if t_g <= law.t_crit else 1.0))
        adjusted = holm([p for _, _, p in raw], family) if raw else []
        best = max(rate)
        want = []
        for j, g in enumerate(labels):
            if j in insufficient:
                want.append(("INSUFFICIENT_EVIDENCE", insufficient[j], g, None))
                continue
            for (jj, metric, _), adj in zip(raw, adjusted):
                value = (rate[j] / best if best > 0 else 1.0) if metric == "selection_rate_ratio" else er[j]
                limit = pol.min_selection_rate_ratio if metric == "selection_rate_ratio" else pol.min_exposure_ratio
                if jj == j and adj <= alpha and value < limit:
                    want.append(("EXPOSURE_DISPARITY", metric, g, adj))
        assert [(f.code, f.metric, f.group) for f in got] == [w[:3] for w in want]
        for f, w in zip(got, want):
            if w[3] is not None:
                assert f.p_value == pytest.approx(w[3], rel=1e-9)
        kinds.update(w[1] for w in want)
    assert kinds == {"group_size", "min_attainable_p_value", "selection_rate_ratio", "exposure_ratio"}
