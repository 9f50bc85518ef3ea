"""Honest verdicts: ENFORCED exactly when the audit changed what the caller gets (a candidate removed, or the
top-k replaced or re-ordered); a re-ranking that was skipped is FLAGGED with its reason. Every combination
of the exposure action, the request's audit mode and the outcome."""
import pytest

from audit.policy import parse_policy
from audit.rerank import fair_rerank
from recsys.blend import Blend
from recsys.compose import build_pipeline
from recsys.domain import AuditMode, Candidate, RankRequest, UserContext, Verdict

ABUSE = "you stupid bitch ass hoe, shut up"
OUTCOMES = ("fair", "insufficient", "harm", "meets", "partial", "skipped")


def _pipeline(artifacts, audit_log, action, loss):
    policy = parse_policy({"version": "verdicts", "exposure": {"action": action, "max_ndcg_loss": loss},
                           "monitor": {"enabled": False}, "exposure_window": {"enabled": False}})
    # The linear blend mixes in the continuous BERT score: no ties, so any change of the list costs utility.
    return build_pipeline(artifacts, policy=policy, audit_log=audit_log, blend=Blend("linear", 0.5))


def _model_order(pipe, items):
    base = pipe.run(RankRequest(UserContext("42"), tuple(Candidate(i) for i in items), top_k=len(items),
                                audit_mode=AuditMode.FLAG_ONLY))
    return [base.item_ids[p] for p in base.order]


def _biased(order):
    """The model's top 20 of 40 are 'a', the rest 'b': 'b' gets none of the top 10."""
    return {iid: ("a" if r < 20 else "b") for r, iid in enumerate(order)}


def _loss_for(pipe, items, outcome):
    """The NDCG bound that makes the biased list's best re-ranking meet the thresholds ("meets"), only improve
    towards them ("partial"), or be impossible ("skipped"), found from the model's own scores."""
    if outcome == "meets":
        return 1.0
    if outcome == "skipped":
        return 0.0
    groups = _biased(_model_order(pipe, items))
    ctx = pipe.run(RankRequest(UserContext("42"), tuple(Candidate(i, group=groups[i]) for i in items), top_k=10,
                               audit_mode=AuditMode.FLAG_ONLY))
    pol = pipe_policy(pipe)
    scores, labels = ctx.scores[ctx.order], ctx.groups[ctx.order]

    def run(loss):
        return fair_rerank(scores, labels, 10, min_selection_rate_ratio=pol.min_selection_rate_ratio,
                           min_exposure_ratio=pol.min_exposure_ratio, max_ndcg_loss=loss, judged={"a", "b"})

    full = 1.0 - run(1.0).ndcg
    for f in (0.9, 0.75, 0.5, 0.3, 0.2, 0.1, 0.05):
        res = run(full * f)
        if res.changed and not res.satisfied:
            return full * f
    pytest.fail("no NDCG bound gives a partial improvement on this list")


def pipe_policy(pipe):
    return next(s for s in pipe.stages if s.name == "audit").policy.exposure


def _request(items, order, outcome, mode):
    if outcome == "fair":        # groups alternate along the model's order: 5 + 5 of the top 10
        groups = {iid: "ab"[r % 2] for r, iid in enumerate(order)}
        return RankRequest(UserContext("42"), tuple(Candidate(i, group=groups[i]) for i in items), top_k=10,
                           audit_mode=mode)
    if outcome == "insufficient":   # 6 + 6 candidates, top 3: no split is unusual for a random ranking
        return RankRequest(UserContext("42"), tuple(Candidate(i, group="ab"[k % 2]) for k, i in enumerate(items[:12])),
                           top_k=3, audit_mode=mode)
    if outcome == "harm":
        groups = {iid: "ab"[r % 2] for r, iid in enumerate(order)}
        return RankRequest(UserContext("42"), tuple(Candidate(i, group=groups[i]) for i in items)
                           + (Candidate("ugc", text=ABUSE, group="a"),), top_k=10, audit_mode=mode)
    groups = _biased(order)
    return RankRequest(UserContext("42"), tuple(Candidate(i, group=groups[i]) for i in items), top_k=10,
                       audit_mode=mode)


@pytest.mark.parametrize("outcome", OUTCOMES)
@pytest.mark.parametrize("mode", [AuditMode.ENFORCE, AuditMode.FLAG_ONLY], ids=["mode-enforce", "mode-flag-only"])
@pytest.mark.parametrize("action", ["ENFORCE", "FLAG"], ids=["action-enforce", "action-flag"])
def test_verdict_matches_what_the_caller_got(artifacts, audit_log, known_items, action, mode, outcome):
    items = known_items[:40]
    probe = _pipeline(artifacts, audit_log, "ENFORCE", 1.0)
    loss = _loss_for(probe, items, outcome) if outcome in ("meets", "partial", "skipped") else 0.05
    pipe = _pipeline(artifacts, audit_log, action, loss)
    order = _model_order(pipe, items)
    req = _request(items, order, outcome, mode)
    ctx = pipe.run(req)
    model_top = [ctx.item_ids[p] for p in ctx.order[: req.top_k]]
    returned = [ctx.item_ids[p] for p in ctx.final]
    codes = [f.code for f in ctx.audit.findings]
    changed = returned != model_top or bool(ctx.removed)
    # The invariant, whatever the case: ENFORCED exactly when the caller got something else than the model's.
    assert (ctx.audit.verdict is Verdict.ENFORCED) == changed
    reranks = action == "ENFORCE" and mode is AuditMode.ENFORCE
    if outcome == "fair":
        assert ctx.audit.verdict is Verdict.PASS and codes == [] and returned == model_top
    elif outcome == "insufficient":
        assert ctx.audit.verdict is Verdict.FLAGGED and set(codes) == {"INSUFFICIENT_EVIDENCE"}
    elif outcome == "harm":
        if mode is AuditMode.ENFORCE:
            assert ctx.audit.verdict is Verdict.ENFORCED and [r.item_id for r in ctx.removed] == ["ugc"]
        else:
            assert ctx.audit.verdict is Verdict.FLAGGED and "HARMFUL_TEXT" in codes and not ctx.removed
    elif not reranks:
        assert ctx.audit.verdict is Verdict.FLAGGED and returned == model_top
        assert "EXPOSURE_DISPARITY" in codes
        assert "EXPOSURE_RERANKED" not in codes and "EXPOSURE_RERANK_SKIPPED" not in codes
    elif outcome == "meets":
        assert ctx.audit.verdict is Verdict.ENFORCED and returned != model_top
        rr = next(f for f in ctx.audit.findings if f.code == "EXPOSURE_RERANKED")
        assert "meets the exposure thresholds" in rr.message and "EXPOSURE_DISPARITY" not in codes
    elif outcome == "partial":
        assert ctx.audit.verdict is Verdict.ENFORCED and returned != model_top
        rr = next(f for f in ctx.audit.findings if f.code == "EXPOSURE_RERANKED")
        assert "no list within the bound meets them" in rr.message and rr.value <= loss + 1e-9
    else:   # skipped: nothing within the bound improves the list -> FLAGGED, with the reason
        assert ctx.audit.verdict is Verdict.FLAGGED and returned == model_top
        skipped = next(f for f in ctx.audit.findings if f.code == "EXPOSURE_RERANK_SKIPPED")
        assert "list left as ranked" in skipped.message and "EXPOSURE_DISPARITY" in codes
