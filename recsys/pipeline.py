"""The one ranking pipeline: resolve -> interest -> features -> rank -> [cross_encoder] -> audit -> respond.

Each stage declares the context fields it reads and writes (like merlin-systems'
operators); `Pipeline` checks at construction that every input is produced
by an earlier stage.

`Pipeline` is the one front object (as KServe's DataPlane is): the gRPC servicer calls `run`/`rank`, the
batch engines `decide_many` (`run_many` without building response objects), and nobody reaches into its
stages. `run_many` runs each stage over all requests at once (`StageBase.run_many`, overridden where a stage
vectorises, e.g. the rank stage predicts every request's rows in one ranker call), through the same stage
objects as `run`, so online and offline answers cannot diverge. `identity()` is what
about the pipeline decides answers (a batch job's manifest records it), `resources()` the caches and
monitors the stages own (the server's metrics read them) and `close()` stops what the stages run.

The standard stage list, with the audit package's AuditStage, is built by the composition root
(`recsys.compose.build_pipeline`): this module is recsys core and does not import audit.
"""
from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from recsys.artifacts import Artifacts
from recsys.blend import Blend
from recsys.domain import IdCandidates, RankedItem, RankRequest, RankResponse
from recsys.errors import EthicrecError, InvalidRequest
from recsys.features import ITEM_FEATURES, FeatureBuilder, item_features, max_similarity, recent_history
from recsys.interest import BiEncoderScorer, InterestScorer, cross_blend
from recsys.lru import LRUCache
from recsys.order import served_order
from recsys.text import history_user_text
from recsys.validation import Limits, validate_request


@dataclass
class RankContext:
    """Everything one request accumulates on its way through the stages."""

    request: RankRequest
    request_id: str = ""
    item_ids: list[str] = field(default_factory=list)
    cand_idx: np.ndarray | None = None       # catalog row, -1 unknown
    texts: list[str | None] = field(default_factory=list)   # text override or text of an unknown item
    groups: np.ndarray | None = None          # exposure group of each candidate
    groups_from_catalog: bool = False         # every candidate is a catalog item in its catalog group
    history_idx: np.ndarray | None = None
    user_text: str = ""
    interest: np.ndarray | None = None
    interest_max: np.ndarray | None = None
    X: np.ndarray | None = None
    ranker_scores: np.ndarray | None = None
    scores: np.ndarray | None = None
    order: np.ndarray | None = None           # candidate positions, best first
    cross_scores: np.ndarray | None = None    # cross-encoder logit of the re-scored top N (NaN for the rest)
    final: list[int] = field(default_factory=list)   # candidate positions returned, after the audit
    removed: list[Any] = field(default_factory=list)
    harm: Any = None                          # flagged candidates (audit/harm_stage.py HarmFlag), for the audit
    audit: Any = None
    response: RankResponse | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StageResources:
    """What a stage owns that outlives one request, by name: LRU caches (metrics report their hits and
    sizes) and monitors (the audit's rolling windows, whose findings metrics report). Names are unique
    across a pipeline; two stages may declare the same object under the same name (the harm scorer's
    cache is shared by the harm and audit stages)."""

    caches: Mapping[str, Any] = field(default_factory=dict)   # LRUCache, or counted like one (hits, misses, len)
    monitors: Mapping[str, Any] = field(default_factory=dict)
    sinks: tuple[Any, ...] = ()   # audit sinks (audit/sink.py AuditSink) the stage writes to


class Stage(Protocol):
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def __call__(self, ctx: RankContext) -> None: ...

    def run_many(self, ctxs: list[RankContext]) -> None: ...

    def identity(self) -> dict[str, Any]: ...

    def resources(self) -> StageResources: ...

    def close(self) -> None: ...


class StageBase:
    """Defaults for the parts of the Stage interface most stages do not need: the batch method loops over
    `__call__`, no identity of its own, no resources, nothing to close. A stage that vectorises overrides
    `run_many`; one whose parameters change answers declares them in `identity`."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def __call__(self, ctx: RankContext) -> None:   # pragma: no cover - every stage defines it
        raise NotImplementedError

    def run_many(self, ctxs: list[RankContext]) -> None:
        for ctx in ctxs:
            self(ctx)

    def identity(self) -> dict[str, Any]:
        return {}

    def resources(self) -> StageResources:
        return StageResources()

    def close(self) -> None:
        return None


class ResolveStage(StageBase):
    """Validate, then look candidates and history up in the catalog."""

    name = "resolve"
    inputs = ("request",)
    outputs = ("request_id", "item_ids", "cand_idx", "texts", "groups", "groups_from_catalog", "history_idx",
               "user_text")

    def __init__(self, artifacts: Artifacts, limits: Limits, *, known_history_cache_size: int = 50_000) -> None:
        self.catalog = artifacts.catalog
        self.users = artifacts.users
        self.extra = set(artifacts.extra_features)
        self.limits = limits
        # Generated request ids: a random per-stage prefix and a counter (32 hex digits, like uuid4().hex),
        # unique without an os.urandom call per request (a system call and a GIL release point).
        self._id_prefix = os.urandom(8).hex()
        self._id_counter = itertools.count()
        # A known user's catalog history rows and user text, for requests that send no history of their own:
        # the same on every request of that user, and about 50 id lookups plus the text join to make.
        self.known_history: LRUCache[str, tuple[np.ndarray, str]] = LRUCache(known_history_cache_size)

    def _history(self, user) -> tuple[np.ndarray, str]:
        """(catalog rows of the user's history, -1 unknown; the user text)."""
        own = bool(user.history_item_ids) or bool(user.history_texts)
        if not own and user.user_id in self.users:
            hit = self.known_history.get(user.user_id)
            if hit is not None:
                return hit
        history = list(user.history_item_ids) or self.users.get(user.user_id, [])
        rows = self.catalog.lookup(history)
        text = history_user_text(self.catalog.texts, rows, user.history_texts)
        if not own and user.user_id in self.users:
            # Shared by every request of the user: no stage writes to history_idx. (Not marked read-only:
            # the compiled kernels would then need a second, read-only signature compiled mid-request.)
            self.known_history.put(user.user_id, (rows, text))
        return rows, text

    def resources(self) -> StageResources:
        return StageResources(caches={"known_user_histories": self.known_history})

    def __call__(self, ctx: RankContext) -> None:
        req = ctx.request
        validate_request(req, self.limits)
        ctx.request_id = req.request_id or f"{self._id_prefix}{next(self._id_counter):016x}"
        cat = self.catalog
        cands = req.candidates
        if type(cands) is IdCandidates:
            # Ids alone (the usual request): no text, group or features to read per candidate.
            ctx.item_ids = list(cands.item_ids)
            ctx.cand_idx = cat.lookup(ctx.item_ids)
            unknown = np.flatnonzero(ctx.cand_idx < 0)
            if len(unknown):
                i = int(unknown[0])
                raise _unknown_item(i, ctx.item_ids[i])
            ctx.texts = [None] * len(ctx.item_ids)
            ctx.groups, ctx.groups_from_catalog = cat.stats.group[ctx.cand_idx].astype(object), True
            ctx.history_idx, ctx.user_text = self._history(req.user)
            return
        ctx.item_ids = [c.item_id for c in cands]
        ctx.cand_idx = cat.lookup(ctx.item_ids)
        ctx.texts = [c.text for c in cands]
        groups = cat.stats.group[np.maximum(ctx.cand_idx, 0)].astype(object)
        from_catalog = True
        # Per-candidate checks over plain lists: numpy scalar indexing and a set per candidate cost more
        # than the checks themselves for 100 candidates.
        for i, (c, row) in enumerate(zip(req.candidates, ctx.cand_idx.tolist())):
            if row < 0 and not c.text:
                raise _unknown_item(i, c.item_id)
            if c.features:
                unknown = c.features.keys() - self.extra
                if unknown:
                    accepted = ", ".join(sorted(self.extra)) or "none"
                    raise InvalidRequest(f"candidates[{i}].features",
                                         f"undeclared feature {sorted(unknown)[0]!r}; accepted: {accepted}")
            if c.group or row < 0:
                groups[i] = c.group or "unknown"
                from_catalog = False
        ctx.groups, ctx.groups_from_catalog = groups, from_catalog
        ctx.history_idx, ctx.user_text = self._history(req.user)


def _unknown_item(i: int, item_id: str) -> InvalidRequest:
    return InvalidRequest(f"candidates[{i}].item_id", f"item {item_id!r} is not in the catalog and has no text")


class InterestStage(StageBase):
    """BERT text interest: cosine of the user and item vectors, and of the item and its closest recent
    history item (catalog vectors, memory-mapped)."""

    name = "interest"
    inputs = ("user_text", "cand_idx", "texts", "history_idx")
    outputs = ("interest", "interest_max")

    def __init__(self, artifacts: Artifacts) -> None:
        self.store = artifacts.store
        self.scorer = BiEncoderScorer(artifacts.store)

    def resources(self) -> StageResources:
        """The vector store's caches this stage's requests fill (and the precomputed user vectors read
        before them)."""
        caches: dict[str, LRUCache] = {"item_text_vectors": self.store.text_cache,
                                       "user_vectors": self.store.user_cache}
        if self.store.known_users is not None:   # the precomputed users, counted the same way
            caches["known_user_vectors"] = self.store.known_users
        return StageResources(caches=caches)

    def __call__(self, ctx: RankContext) -> None:
        ctx.interest, items = self.scorer.score_with_vectors(ctx.user_text, ctx.cand_idx, ctx.texts)
        ctx.interest_max = max_similarity(items, self.store.item_vectors[recent_history(ctx.history_idx)])


class FeatureStage(StageBase):
    name = "features"
    inputs = ("cand_idx", "history_idx", "interest", "interest_max")
    outputs = ("X",)

    def __init__(self, artifacts: Artifacts, *, user_factor_cache_size: int = 50_000) -> None:
        self.user_factors: LRUCache[bytes, np.ndarray] = LRUCache(user_factor_cache_size)
        self.builder = FeatureBuilder(artifacts.catalog, artifacts.cooccurrence, artifacts.als,
                                      artifacts.extra_features, user_factor_cache=self.user_factors)

    def resources(self) -> StageResources:
        return StageResources(caches={"als_user_factors": self.user_factors})

    def __call__(self, ctx: RankContext) -> None:
        extra = None
        if self.builder.extra_features and type(ctx.request.candidates) is not IdCandidates:   # those have none
            names = self.builder.extra_features
            extra = np.array([[c.features.get(n, np.nan) for n in names] for c in ctx.request.candidates],
                             dtype=np.float64).reshape(len(ctx.request.candidates), len(names))
        ctx.X = self.builder.build(ctx.cand_idx, ctx.history_idx, ctx.interest, extra, interest_max=ctx.interest_max)


class RankStage(StageBase):
    """LightGBM LambdaRank over the features (the BERT score is one of them), then the blend."""

    name = "rank"
    inputs = ("X", "interest", "cand_idx")
    outputs = ("ranker_scores", "scores", "order")

    def __init__(self, artifacts: Artifacts, blend: Blend) -> None:
        self.ranker = artifacts.ranker
        self.blend = blend
        # Each catalog item's own features are the same in every request: their splits are resolved once
        # here (recsys/quickscorer.py; 4 bytes per tree and item), and a request scans only the others.
        self.item_memo = self.ranker.item_memo(ITEM_FEATURES, item_features(artifacts.catalog))

    def __call__(self, ctx: RankContext) -> None:
        self._finish(ctx, self.ranker.predict(ctx.X, keys=ctx.cand_idx, memo=self.item_memo))

    def run_many(self, ctxs: list[RankContext]) -> None:
        """All contexts' feature rows in one ranker call: a tree ensemble scores each row on its own, so the
        numbers are those of one call per request, without the per-call overhead."""
        if not ctxs:
            return
        sizes = [len(c.X) for c in ctxs]
        pred = self.ranker.predict(np.vstack([c.X for c in ctxs]), keys=np.concatenate([c.cand_idx for c in ctxs]),
                                   memo=self.item_memo)
        for ctx, part in zip(ctxs, np.split(pred, np.cumsum(sizes)[:-1])):
            self._finish(ctx, part)

    def _finish(self, ctx: RankContext, ranker_scores: np.ndarray) -> None:
        ctx.ranker_scores = ranker_scores
        ctx.scores = self.blend.combine(ctx.interest, ctx.ranker_scores)
        ctx.order = served_order(ctx.scores, ctx.interest, ctx.cand_idx)

    def identity(self) -> dict[str, Any]:
        return {"blend": self.blend.mode, "blend_weight": self.blend.weight}


class CrossEncoderStage(StageBase):
    """Re-scores the top N of the ranked list with the BERT cross-encoder and reorders those N.

    The cross-encoder reads (user text, item text) jointly, which is better than two independent
    vectors but costs one BERT forward pass per candidate: hence only the top N, and by default
    only on a GPU (`recsys.compose.build_pipeline`). The top N's new score is `recsys.interest.cross_blend`:
    b = weight * z(cross logit) + (1 - weight) * z(score), z-scores over these N, mapped affinely
    onto [min, max] of their previous scores, so the returned `score` is exactly what orders the
    list and the items below the top N keep their scores (all <= the top N's). `interest_score`
    and `ranker_score` stay the bi-encoder's and LightGBM's; the logits are in `ctx.cross_scores`.
    """

    name = "cross_encoder"
    inputs = ("user_text", "cand_idx", "texts", "order", "scores")
    outputs = ("order", "scores", "cross_scores")

    def __init__(self, scorer: InterestScorer, *, top_n: int = 20, weight: float = 0.5) -> None:
        if top_n < 1:
            raise ValueError(f"cross-encoder top_n must be >= 1; got {top_n!r}")
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"cross-encoder weight must be between 0 and 1; got {weight!r}")
        self.scorer = scorer
        self.top_n = top_n
        self.weight = weight

    def identity(self) -> dict[str, Any]:
        return {"cross_encoder_top_n": self.top_n, "cross_encoder_weight": self.weight}

    def __call__(self, ctx: RankContext) -> None:
        top = np.asarray(ctx.order[:self.top_n])
        cross = np.full(len(ctx.scores), np.nan)
        if len(top):
            logits = self.scorer.score(ctx.user_text, ctx.cand_idx[top], [ctx.texts[p] for p in top])
            cross[top] = logits
            new = cross_blend(ctx.scores[top], logits, self.weight)
            scores = np.array(ctx.scores, dtype=np.float64)
            scores[top] = new
            order = np.array(ctx.order)
            order[:len(top)] = top[np.argsort(-new, kind="stable")]
            ctx.scores, ctx.order = scores, order
        ctx.cross_scores = cross


class RespondStage(StageBase):
    name = "respond"
    inputs = ("final", "removed", "audit", "scores", "interest", "ranker_scores")
    outputs = ("response",)

    def __init__(self, artifacts: Artifacts) -> None:
        self.version = artifacts.version

    def identity(self) -> dict[str, Any]:
        return {"model_version": self.version}

    def __call__(self, ctx: RankContext) -> None:
        # Whole-array gathers and tolist (Python floats, the values float() gives) instead of three numpy
        # scalar reads per item: the batch path responds for every candidate of every user.
        final = np.asarray(ctx.final, dtype=np.intp)
        ids = ctx.item_ids
        items = tuple(
            RankedItem(ids[p], s, i, r, rank)
            for rank, (p, s, i, r) in enumerate(zip(ctx.final, np.asarray(ctx.scores)[final].tolist(),
                                                    np.asarray(ctx.interest)[final].tolist(),
                                                    np.asarray(ctx.ranker_scores)[final].tolist()), start=1))
        ctx.response = RankResponse(items, tuple(ctx.removed), ctx.audit, self.version, ctx.request_id)


@dataclass(frozen=True)
class Decided:
    """One request's audited ranking as `Pipeline.decide_many` returns it: everything decided, no response
    object. Positions index the request's candidates."""

    request: RankRequest
    request_id: str
    item_ids: list[str]
    scores: np.ndarray          # every candidate's final score
    interest: np.ndarray
    ranker_scores: np.ndarray
    final: list[int]            # candidate positions returned, best first, after the audit
    removed: list[Any]          # RemovedItem of each candidate the audit removed
    audit: Any                  # the AuditResult (verdict, findings, audit_id)


DECIDED_FIELDS = ("request_id", "item_ids", "scores", "interest", "ranker_scores", "final", "removed", "audit")


class RequestStopped(EthicrecError):
    """`should_stop` said stop (the caller went away or its deadline passed), so the
    remaining stages were skipped: no point computing an answer nobody will read."""

    def __init__(self, stage: str) -> None:
        super().__init__(f"request stopped before stage {stage!r}")
        self.stage = stage


class Pipeline:
    """The one front object: `run`/`rank` one request, `run_many` a batch, `identity`, `resources`,
    `close`. Callers use only these."""

    def __init__(self, stages: list[Stage]) -> None:
        available = {"request"}
        for stage in stages:
            missing = [i for i in stage.inputs if i not in available]
            if missing:
                raise ValueError(f"stage {stage.name!r} needs {missing}, which no earlier stage produces")
            available.update(stage.outputs)
        if "response" not in available:
            raise ValueError("no stage produces 'response'")
        self.stages = list(stages)   # read-only for callers: tests and bench read it; swap a stage only in bench
        self._close_lock = threading.Lock()
        self._closed = False

    def run(self, request: RankRequest, *, should_stop: Callable[[], bool] | None = None) -> RankContext:
        """Run every stage in order. `should_stop` is polled before each stage (stages
        themselves are not interruptible); when it returns True, RequestStopped is raised."""
        ctx = RankContext(request=request)
        for stage in self.stages:
            if should_stop is not None and should_stop():
                raise RequestStopped(stage.name)
            t0 = time.perf_counter()
            stage(ctx)
            ctx.timings[stage.name] = time.perf_counter() - t0
        return ctx

    def rank(self, request: RankRequest, *, should_stop: Callable[[], bool] | None = None) -> RankResponse:
        ctx = self.run(request, should_stop=should_stop)
        assert ctx.response is not None
        return ctx.response

    def run_many(self, requests: Sequence[RankRequest]) -> list[RankContext]:
        """Every request through every stage, stage by stage over all of them (`Stage.run_many`), in
        request order. The contexts are those `run` gives one by one, response included; a stage's time
        in `timings` is its time over the batch divided by the number of requests. The first error any
        request raises stops the batch and propagates (the batch job validates its requests first)."""
        return self._run_many(self.stages, requests)

    def decide_many(self, requests: Sequence[RankRequest]) -> list[Decided]:
        """What `run_many` decides for each request — scores, the returned positions, removals, the audit
        result, its audit record written — without building the response objects: the stages up to the last
        one that writes a field of `Decided` (the respond stage only presents what is decided). The batch job
        writes every candidate's row from these; building a `RankResponse` per user there cost ~20 % of a
        warm batch run (bench/README.md, Batch rescoring)."""
        stages = self._deciding_stages()
        return [Decided(c.request, c.request_id, c.item_ids, c.scores, c.interest, c.ranker_scores, c.final,
                        c.removed, c.audit) for c in self._run_many(stages, requests)]

    def _deciding_stages(self) -> tuple[Stage, ...]:
        last = max((i for i, st in enumerate(self.stages) if set(st.outputs) & set(DECIDED_FIELDS)), default=-1)
        stages = tuple(self.stages[:last + 1])
        produced = {"request"}.union(*(st.outputs for st in stages))
        missing = [f for f in DECIDED_FIELDS if f not in produced]
        if missing:
            raise ValueError(f"no stage produces {missing}: this pipeline decides no audited ranking")
        return stages

    @staticmethod
    def _run_many(stages: Sequence[Stage], requests: Sequence[RankRequest]) -> list[RankContext]:
        ctxs = [RankContext(request=r) for r in requests]
        if not ctxs:
            return ctxs
        for stage in stages:
            t0 = time.perf_counter()
            stage.run_many(ctxs)
            share = (time.perf_counter() - t0) / len(ctxs)
            for ctx in ctxs:
                ctx.timings[stage.name] = share
        return ctxs

    def identity(self) -> dict[str, Any]:
        """What about this pipeline decides answers (model version, blend, the policy's answer-deciding
        sections, ...), merged from the stages' declarations: equal for two pipelines that answer alike.
        A batch job records it and refuses to resume or to score in a worker whose pipeline differs."""
        out: dict[str, Any] = {}
        for stage in self.stages:
            for key, value in stage.identity().items():
                if key in out and out[key] != value:
                    raise ValueError(f"stages disagree on identity key {key!r}: {out[key]!r} vs {value!r}")
                out[key] = value
        return out

    def resources(self) -> StageResources:
        """The caches, monitors and audit sinks of every stage, merged by name."""
        caches: dict[str, LRUCache] = {}
        monitors: dict[str, Any] = {}
        sinks: list[Any] = []
        for stage in self.stages:
            res = stage.resources()
            for into, part in ((caches, res.caches), (monitors, res.monitors)):
                for name, obj in part.items():
                    if name in into and into[name] is not obj:
                        raise ValueError(f"two stages declare different resources named {name!r}")
                    into[name] = obj
            sinks += [s for s in res.sinks if not any(s is t for t in sinks)]
        return StageResources(caches=caches, monitors=monitors, sinks=tuple(sinks))

    def close(self) -> None:
        """Close every stage once, last stage first (a stage may use what an earlier one owns); later calls
        do nothing."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        for stage in reversed(self.stages):
            stage.close()
