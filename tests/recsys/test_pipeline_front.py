"""Pipeline's front methods on small stages of its own interface: run_many, identity, resources, close.

The stages here are not stand-ins for ours: they are the smallest implementations of the Stage interface,
so each test checks one promise of `Pipeline` itself (tests/recsys/test_pipeline_real.py checks the same
promises on the standard pipeline)."""
from __future__ import annotations

import pytest

from recsys.domain import RankResponse
from recsys.lru import LRUCache
from recsys.pipeline import Pipeline, RankContext, StageBase, StageResources


class Count(StageBase):
    name = "count"
    inputs = ("request",)
    outputs = ("scores",)

    def __init__(self, log: list, *, weight: float = 1.0, cache: LRUCache | None = None) -> None:
        self.log, self.weight, self.cache = log, weight, cache

    def __call__(self, ctx: RankContext) -> None:
        self.log.append(("count", ctx.request))
        ctx.scores = [self.weight * ctx.request]

    def identity(self) -> dict:
        return {"weight": self.weight}

    def resources(self) -> StageResources:
        return StageResources(caches={"counts": self.cache}) if self.cache is not None else StageResources()

    def close(self) -> None:
        self.log.append(("close", "count"))


class Batched(Count):
    """Vectorises: one call for all contexts."""

    name = "batched"
    inputs = ("scores",)
    outputs = ("order",)

    def __call__(self, ctx: RankContext) -> None:
        self.run_many([ctx])

    def run_many(self, ctxs: list[RankContext]) -> None:
        self.log.append(("batch", len(ctxs)))
        for ctx in ctxs:
            ctx.order = [2 * ctx.scores[0]]

    def identity(self) -> dict:
        return {}

    def close(self) -> None:
        self.log.append(("close", "batched"))


class Respond(StageBase):
    name = "respond"
    inputs = ("order",)
    outputs = ("response",)

    def __call__(self, ctx: RankContext) -> None:
        ctx.response = RankResponse((), (), None, "v1", str(ctx.order[0]))


def _pipe(log: list, **kw) -> Pipeline:
    return Pipeline([Count(log, **kw), Batched(log), Respond()])


def test_run_many_equals_run_and_calls_batch_methods_once_per_stage():
    log: list = []
    pipe = _pipe(log)
    many = pipe.run_many([1, 2, 3])
    assert [c.response.request_id for c in many] == [pipe.run(r).response.request_id for r in (1, 2, 3)]
    # Stage by stage: the looping default for "count", one batch call for "batched".
    assert log[:4] == [("count", 1), ("count", 2), ("count", 3), ("batch", 3)]
    assert all(set(c.timings) == {"count", "batched", "respond"} for c in many)
    assert pipe.run_many([]) == []


def test_identity_is_stable_and_follows_stage_parameters():
    assert _pipe([]).identity() == _pipe([]).identity() == {"weight": 1.0}
    assert _pipe([], weight=2.0).identity() == {"weight": 2.0}


def test_identity_refuses_stages_that_disagree():
    log: list = []

    class Other(Count):
        name = "other"
        inputs = ("scores",)

    with pytest.raises(ValueError, match="weight"):
        Pipeline([Count(log), Other(log, weight=3.0), Batched(log), Respond()]).identity()


def test_resources_merge_by_name_and_refuse_two_objects_under_one_name():
    cache = LRUCache(4)
    log: list = []

    class Second(Count):
        name = "second"
        inputs = ("scores",)

    same = Pipeline([Count(log, cache=cache), Second(log, cache=cache), Batched(log), Respond()])
    assert dict(same.resources().caches) == {"counts": cache}
    other = Pipeline([Count(log, cache=cache), Second(log, cache=LRUCache(4)), Batched(log), Respond()])
    with pytest.raises(ValueError, match="counts"):
        other.resources()


def test_close_closes_each_stage_once_last_first():
    log: list = []
    pipe = _pipe(log)
    pipe.close()
    pipe.close()
    assert [e for e in log if e[0] == "close"] == [("close", "batched"), ("close", "count")]


def test_decide_many_needs_a_pipeline_that_decides():
    with pytest.raises(ValueError, match="decides no audited ranking"):
        _pipe([]).decide_many([1])
