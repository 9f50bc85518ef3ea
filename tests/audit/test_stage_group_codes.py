"""The audit stage codes catalog groups by one lookup (no per-request string coding); its exposure
findings must be exactly those of the generic coding (the path the MetricFrame-equality test covers) and of
the Fairlearn reference, whatever mix of candidates and returned lists."""
import dataclasses

import numpy as np

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
        fast = stage._exposure(ctx, *stage._group_coding(ctx), eligible, final, at, dropped)
        assert fast == stage._exposure(_generic(ctx), *stage._group_coding(_generic(ctx)), eligible, final, at, dropped)
        stage._reference = True
        try:
            assert fast == stage._exposure(ctx, *stage._group_coding(ctx), eligible, final, at, dropped)
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
    findings = stage._exposure(ctx, *stage._group_coding(ctx), [0, 1, 2], [0], np.array([0]), False)
    assert {f.group for f in findings if f.code == "INSUFFICIENT_EVIDENCE"} == set(ctx.groups.tolist())


def test_exposure_findings_follow_the_metricframe_table(pipeline, known_items):
    """Which group each finding names, ties included (the first group in label order, as min/max over the
    table would pick), checked against Fairlearn's table rather than against the stage's own loop."""
    from audit.fairness import exposure_by_group

    rng = np.random.default_rng(1)
    stage = _stage(pipeline)
    pol = stage.policy.exposure
    kinds = set()
    for _ in range(80):
        n = int(rng.integers(4, 30))
        groups = rng.choice(["a", "b", "c"], size=n, p=rng.dirichlet([1, 1, 1])).tolist()
        ctx = _ctx(pipeline, [Candidate(known_items[i % len(known_items)] if i < len(known_items) else f"x{i}",
                                        text=None if i < len(known_items) else "some text", group=g)
                              for i, g in enumerate(groups)])
        eligible = rng.permutation(n)[: int(rng.integers(2, n + 1))].tolist()
        final = eligible[: int(rng.integers(1, min(6, len(eligible)) + 1))]
        got = stage._exposure(ctx, *stage._group_coding(ctx), eligible, final, np.array(final, dtype=np.intp),
                              len(eligible) < n)
        ranks = np.zeros(len(eligible))
        for r, p in enumerate(final, start=1):
            ranks[eligible.index(p)] = r
        t = exposure_by_group(ctx.groups[eligible], ranks).table.sort_index()
        labels, sizes = [str(g) for g in t.index], t["n"].tolist()
        rate, er = t["selection_rate"].tolist(), t["exposure_ratio"].tolist()
        want = [("INSUFFICIENT_EVIDENCE", "group_size", labels[j]) for j in range(len(labels))
                if sizes[j] < pol.min_group_size]
        big = [j for j in range(len(labels)) if sizes[j] >= pol.min_group_size]
        if len(big) >= 2:
            lo, hi = min(big, key=rate.__getitem__), max(big, key=rate.__getitem__)
            if (rate[lo] / rate[hi] if rate[hi] > 0 else 1.0) < pol.min_selection_rate_ratio:
                want.append(("EXPOSURE_DISPARITY", "selection_rate_ratio", labels[lo]))
            worst = min(big, key=er.__getitem__)
            if er[worst] < pol.min_exposure_ratio:
                want.append(("EXPOSURE_DISPARITY", "exposure_ratio", labels[worst]))
        assert [(f.code, f.metric, f.group) for f in got] == want
        kinds.update(w[1] for w in want)
    assert kinds == {"group_size", "selection_rate_ratio", "exposure_ratio"}
