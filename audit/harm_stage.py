"""Harm judgements of a request's candidates: the harm stage, which runs right before the audit stage.

Why a stage of its own: judging a text the request brings (an item the catalog does not know, or a text
override) is a forward pass of the harm model (audit/harm_model.py: MiniLM), the same kind of work as the
interest stage's encoding of that text, and on a 2-core CPU 20 such texts take ~100-200 ms. Inside the audit
stage that inference counted against the policy's `time_budget_ms`, which bounds the audit's own decisions, so
a request with new texts could fail closed on a busy machine although nothing in the audit was slow. Here it is
timed as the "harm" stage (ctx.timings, the stage-duration metric), the audit stage reads its result, and a
failure still fails the request closed (AuditFailure with the policy's status: never an unaudited answer).

Catalog candidates cost one lookup (their scores, categories and spans were computed at training time).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from audit.harm_categories import LESSER_CATEGORIES
from audit.policy import HarmPolicy, Policy, answer_identity
from recsys.artifacts import Artifacts
from recsys.errors import AuditFailure
from recsys.lru import LRUCache
from recsys.pipeline import StageBase, StageResources


class HarmFlag(NamedTuple):
    """One flagged candidate: its position, P(harmful), category and the words that drove the flag."""
    position: int
    p: float
    category: str
    span: tuple[str, ...]


class HarmScorer:
    """Catalog items use scores computed at training time; other texts are scored and cached.

    A candidate is flagged when its category is a lesser one (the classifier already applied its own
    lesser-harm threshold) or P >= the threshold, and the policy does not IGNORE its category. The words
    that drove a flag come with the model for catalog texts; a request text's come from the same model call
    that scored it (HarmModel.score_explain) or, for classifiers without one, from occlusion; both cached."""

    def __init__(self, artifacts: Artifacts, cache_size: int = 50_000, *, threshold: float | None = None,
                 policy: HarmPolicy | None = None) -> None:
        self.catalog = artifacts.catalog
        self.clf = artifacts.harm
        self.cache: LRUCache[str, tuple[float, str]] = LRUCache(cache_size)
        self.spans: LRUCache[str, tuple[str, ...]] = LRUCache(max(1, cache_size // 10))
        self.threshold = artifacts.harm.threshold if threshold is None else threshold
        self._action = policy.action_for if policy is not None else (lambda _c: "ENFORCE")
        self._score_explain = getattr(self.clf, "score_explain", None)
        cats = np.asarray(self.catalog.harm_category, dtype=object)
        names, codes = np.unique(cats.astype(str), return_inverse=True) if len(cats) else (np.array([]), np.array([], int))
        lesser = np.isin(names, LESSER_CATEGORIES)[codes] if len(cats) else np.zeros(0, bool)
        acted = np.array([self._action(str(c)) != "IGNORE" for c in names], dtype=bool)[codes] if len(cats) \
            else np.zeros(0, bool)
        hit = (lesser | (self.catalog.harm_score >= self.threshold)) & acted
        # Catalog rows flagged, with a False appended so that row -1 (an unknown item, which always has a
        # request text) reads False: a request of catalog items is one lookup.
        self._flagged_rows = np.append(hit, False)
        # One scoring call at start-up: the first inference of a torch model pays thread-pool and allocator
        # set-up (hundreds of ms on CPU) that should not land on the first request.
        (self._score_explain or self.clf.score)(["warm-up"])

    def is_flagged(self, p: float, category: str) -> bool:
        return (category in LESSER_CATEGORIES or p >= self.threshold) and self._action(category) != "IGNORE"

    def score(self, cand_idx: np.ndarray, texts: list[str | None]) -> tuple[np.ndarray, dict[int, str]]:
        """P(harmful) for each candidate, and the category of those judged on a request-supplied text.

        Catalog candidates are one vectorised lookup; only request texts go through the cache/classifier
        (whose spans of the texts it flags are cached on the way)."""
        prob = self.catalog.harm_score[np.maximum(cand_idx, 0)].astype(np.float64)
        cats: dict[int, str] = {}
        todo: list[int] = []
        for i, text in enumerate(texts):
            if text is None:
                continue
            hit = self.cache.get(text)
            if hit is None:
                todo.append(i)
            else:
                prob[i], cats[i] = hit
        if todo:
            new = list(dict.fromkeys(texts[i] for i in todo))
            if self._score_explain is not None:
                p, c, spans = self._score_explain(new)
            else:
                (p, c), spans = self.clf.score(new), None
            judged: dict[str, tuple[float, str]] = {}
            for n, (text, pi, ci) in enumerate(zip(new, p, c)):
                judged[text] = (float(pi), ci)
                self.cache.put(text, judged[text])
                if spans is not None and self.is_flagged(float(pi), ci):
                    self.spans.put(text, tuple(spans[n]))
            for i in todo:
                prob[i], cats[i] = judged[texts[i]]
        return prob, cats

    def flagged(self, cand_idx: np.ndarray, texts: list[str | None]) -> list[tuple[int, float, str]]:
        """(position, P(harmful), category) of the flagged candidates, in candidate order.

        The usual request (catalog items, no request texts) costs one boolean lookup and no per-candidate
        Python; `score` runs only when some candidate brings its own text."""
        if texts.count(None) == len(texts):
            # ndarray.nonzero is one C call; `.any()` first went through numpy's Python-level wrapper.
            hits = self._flagged_rows[cand_idx].nonzero()[0]
            if not len(hits):
                return []
            cat = self.catalog
            return [(i, float(cat.harm_score[cand_idx[i]]), cat.harm_category[cand_idx[i]])
                    for i in hits.tolist()]
        prob, cats = self.score(cand_idx, texts)
        out = []
        for i in range(len(texts)):
            if texts[i] is None:
                if self._flagged_rows[cand_idx[i]]:
                    out.append((i, float(prob[i]), self.catalog.harm_category[cand_idx[i]]))
            elif self.is_flagged(float(prob[i]), cats[i]):
                out.append((i, float(prob[i]), cats[i]))
        return out

    def judge(self, cand_idx: np.ndarray, texts: list[str | None]) -> list[HarmFlag]:
        """The flagged candidates with the words that drove each flag, in candidate order."""
        return [HarmFlag(i, p, c, self.explain(self.text(i, cand_idx, texts), c))
                for i, p, c in self.flagged(cand_idx, texts)]

    def explain(self, text: str, category: str) -> tuple[str, ...]:
        """The words that drove `text`'s flag: cached, stored with the classifier (catalog texts), or
        computed now (a catalog text of an artifact that stored none, a text scored before it was flagged)."""
        hit = self.spans.get(text)
        if hit is not None:
            return hit
        stored = getattr(self.clf, "explanations", {}).get(text)
        if stored is not None:
            span = tuple(stored)
        elif hasattr(self.clf, "explain"):
            span = tuple(self.clf.explain([text], [category])[0])
        else:   # older classifiers: occlusion on their P(harmful)
            from audit.harm_explain import explain

            fn = lambda xs: self.clf.score(list(xs))[0]  # noqa: E731
            span = tuple(explain([text], fn, fn([text]))[0])
        self.spans.put(text, span)
        return span

    def text(self, i: int, cand_idx: np.ndarray, texts: list[str | None]) -> str:
        return texts[i] if texts[i] is not None else self.catalog.texts[cand_idx[i]]


class HarmStage(StageBase):
    """Puts the request's flagged candidates (HarmFlag, candidate order) in `ctx.harm` for the audit stage.
    Nothing when the policy's harm check is off."""

    name = "harm"
    inputs = ("cand_idx", "texts")
    outputs = ("harm",)

    def __init__(self, scorer: HarmScorer, policy: Policy) -> None:
        self.scorer = scorer
        self.policy = policy

    def identity(self) -> dict:
        return answer_identity(self.policy)

    def resources(self) -> StageResources:
        return StageResources(caches={"harm_scores": self.scorer.cache})

    def __call__(self, ctx) -> None:
        if not self.policy.harm.enabled:
            ctx.harm = []
            return
        try:
            ctx.harm = self.scorer.judge(ctx.cand_idx, ctx.texts)
        except Exception as exc:
            # Fail closed, as the audit stage does: without a harm judgement there is no audited answer.
            raise AuditFailure(f"harm check failed ({type(exc).__name__}); response withheld",
                               self.policy.failure_status) from exc
