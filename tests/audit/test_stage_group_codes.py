"""The audit stage codes catalog groups by array lookups; the codes must be exactly what the generic
coding (the one the fast path's MetricFrame-equality test covers) gives, whatever mix of candidates."""
import numpy as np

from audit.fairness import group_codes
from recsys.domain import Candidate, RankRequest, UserContext
from recsys.pipeline import RankContext


def _ctx(pipeline, candidates) -> RankContext:
    ctx = RankContext(RankRequest(UserContext("1"), tuple(candidates), top_k=5))
    next(s for s in pipeline.stages if s.name == "resolve")(ctx)
    return ctx


def _stage(pipeline):
    return next(s for s in pipeline.stages if s.name == "audit")


def test_catalog_codes_equal_generic_coding(pipeline, artifacts):
    rng = np.random.default_rng(0)
    stage = _stage(pipeline)
    for _ in range(50):
        idx = rng.choice(len(artifacts.catalog.item_ids), size=int(rng.integers(1, 60)), replace=False)
        ctx = _ctx(pipeline, [Candidate(artifacts.catalog.item_ids[i]) for i in idx])
        assert ctx.groups_from_catalog
        positions = sorted(rng.choice(len(idx), size=int(rng.integers(1, len(idx) + 1)), replace=False).tolist())
        labels, codes = stage._coded_groups(ctx, positions)
        ref_labels, ref_codes = group_codes(ctx.groups[positions])
        assert labels.tolist() == ref_labels.tolist() and codes.tolist() == ref_codes.tolist()


def test_request_groups_and_unknown_items_fall_back_to_generic_coding(pipeline, known_items):
    ctx = _ctx(pipeline, [Candidate(known_items[0], group="indie"), Candidate(known_items[1]),
                          Candidate("new-1", text="A quiet drama")])
    assert not ctx.groups_from_catalog
    assert ctx.groups[0] == "indie" and ctx.groups[2] == "unknown"
    labels, codes = _stage(pipeline)._coded_groups(ctx, [0, 1, 2])
    assert labels.tolist() == sorted(set(ctx.groups.tolist()))
    assert [labels[c] for c in codes] == ctx.groups.tolist()
