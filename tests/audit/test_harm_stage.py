"""The harm stage (audit/harm_stage.py): the harm model judges request texts before the audit stage, so its
inference is not on the audit's time budget; its failure still withholds the answer; the words that drove a
request text's flag come from the same model pass and reach the finding message and the audit record."""
import dataclasses

import numpy as np
import pytest

from audit.harm_model import FINE_CLASSES
from audit.log import read_records
from audit.policy import load_policy
from recsys.domain import AuditMode, Candidate, RankRequest, UserContext
from recsys.errors import AuditFailure
from recsys.compose import build_pipeline
from recsys.pipeline import RankContext

TEXT = "they should all be driven out of the country"


def _req(items, text=TEXT):
    cands = tuple(Candidate(i) for i in items) + (Candidate("ugc", text=text),)
    return RankRequest(UserContext("7"), cands, top_k=len(cands), audit_mode=AuditMode.ENFORCE)


def _threat_model(artifacts):
    """The artifact's harm model with its head set so that TEXT is a threat, driven by its own words: the
    threat row is TEXT's own vector (logit = 40 x cos), the others 0 with a low intercept."""
    m = artifacts.harm
    x = m.model.encode([TEXT.lower()], max_length=m.max_length)[0]
    coef = np.zeros_like(m.head_coef)
    coef[FINE_CLASSES.index("threat")] = 40 * x
    intercept = np.zeros(len(FINE_CLASSES))
    intercept[FINE_CLASSES.index("threat")] = -10.0
    return dataclasses.replace(artifacts, harm=dataclasses.replace(m, head_coef=coef, head_intercept=intercept,
                                                                   explanations={}))


def test_audit_stage_runs_no_harm_model(artifacts, known_items, audit_log):
    """The harm stage judged the request; the model then breaks, and the audit stage still decides."""
    art = _threat_model(artifacts)
    pipe = build_pipeline(art, policy=load_policy(), audit_log=audit_log)
    names = [s.name for s in pipe.stages]
    assert names.index("harm") == names.index("audit") - 1
    ctx = RankContext(request=_req(known_items[:10]))
    for stage in pipe.stages[:names.index("audit")]:
        stage(ctx)
    assert [f.position for f in ctx.harm] == [10]

    def broken(*a, **k):
        raise RuntimeError("the harm model ran inside the audit stage")

    art.harm.score = art.harm.score_explain = art.harm.explain = art.harm.logits = broken
    scorer = next(s for s in pipe.stages if s.name == "audit").harm
    scorer.judge = scorer.flagged = scorer.score = scorer.explain = scorer._score_explain = broken
    for stage in pipe.stages[names.index("audit"):]:
        stage(ctx)
    assert [r.item_id for r in ctx.response.removed] == ["ugc"]


def test_a_failing_harm_model_withholds_the_answer(artifacts, known_items, audit_log):
    art = _threat_model(artifacts)
    pipe = build_pipeline(art, policy=load_policy(), audit_log=audit_log)

    def broken(*a, **k):
        raise MemoryError("injected")

    art.harm.score_explain = broken
    stage = next(s for s in pipe.stages if s.name == "harm")
    stage.scorer._score_explain = broken
    with pytest.raises(AuditFailure, match="harm check failed \\(MemoryError\\)") as err:
        pipe.rank(_req(known_items[:10], text="a text nobody scored before"))
    assert err.value.status == "INTERNAL"
    assert list(read_records(audit_log.path)) == []


def test_span_comes_from_the_scoring_pass_into_message_and_record(artifacts, known_items, audit_log):
    pipe = build_pipeline(_threat_model(artifacts), policy=load_policy(), audit_log=audit_log)
    resp = pipe.rank(_req(known_items[:10]))
    finding = next(f for f in resp.audit.findings if f.group == "ugc")
    logged = next(f for f in list(read_records(audit_log.path))[-1].findings if f["group"] == "ugc")
    assert logged["category"] == "threat" and "classified threat" in finding.message
    span = logged["span"]
    assert span and set(span) <= set(TEXT.split())
    assert "driven by: " + ", ".join(repr(w) for w in span) in finding.message
