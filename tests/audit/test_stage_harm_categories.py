"""The audit stage acts per harm category: the finding message and the audit record carry the category and
span; the policy ENFORCEs, FLAGs or IGNOREs each category. The classifier is the artifact's own HarmModel
with its head set so that every request text lands in one chosen class."""
import dataclasses

import numpy as np
import pytest

from audit.harm_model import FINE_CLASSES
from audit.log import read_records
from audit.policy import load_policy, parse_policy
from recsys.domain import AuditMode, Candidate, RankRequest, UserContext, Verdict
from recsys.compose import build_pipeline


def _artifacts_saying(artifacts, cls: str):
    m = artifacts.harm
    intercept = np.full(len(FINE_CLASSES), -20.0)
    intercept[FINE_CLASSES.index(cls)] = 20.0
    model = dataclasses.replace(m, head_coef=np.zeros_like(m.head_coef), head_intercept=intercept,
                                explanations={})
    return dataclasses.replace(artifacts, harm=model)


def _rank(pipe, items, mode=AuditMode.ENFORCE):
    cands = tuple(Candidate(i) for i in items) + (Candidate("ugc", text="a brand new user text"),)
    return pipe.rank(RankRequest(UserContext("7"), cands, top_k=len(cands), audit_mode=mode))


@pytest.mark.parametrize("cls, removed", [("threat", True), ("dehumanisation", True), ("harassment", True),
                                          ("profanity-only", False), ("sexual", False)])
def test_default_policy_acts_per_category(artifacts, known_items, audit_log, cls, removed):
    pipe = build_pipeline(_artifacts_saying(artifacts, cls), policy=load_policy(), audit_log=audit_log)
    resp = _rank(pipe, known_items[:10])
    assert ("ugc" in [r.item_id for r in resp.removed]) is removed
    finding = next(f for f in resp.audit.findings if f.code == "HARMFUL_TEXT" and f.group == "ugc")
    assert f"classified {cls}" in finding.message and "P(hateful)=" in finding.message
    if not removed:
        assert "ugc" in [i.item_id for i in resp.items]
    rec = list(read_records(audit_log.path))[-1]
    logged = next(f for f in rec.findings if f["code"] == "HARMFUL_TEXT" and f["group"] == "ugc")
    assert logged["category"] == cls and isinstance(logged["span"], list)


def test_ignored_category_gives_no_finding(artifacts, known_items, audit_log):
    policy = parse_policy({"version": "t", "harm": {"categories": {"profanity-only": "IGNORE"}}})
    pipe = build_pipeline(_artifacts_saying(artifacts, "profanity-only"), policy=policy, audit_log=audit_log)
    resp = _rank(pipe, known_items[:10])
    assert not [f for f in resp.audit.findings if f.group == "ugc"]


def test_benign_text_is_not_flagged(artifacts, known_items, audit_log):
    pipe = build_pipeline(_artifacts_saying(artifacts, "none"), policy=load_policy(), audit_log=audit_log)
    resp = _rank(pipe, known_items[:10])
    assert resp.audit.verdict is not Verdict.ENFORCED or "ugc" not in [r.item_id for r in resp.removed]
    assert not [f for f in resp.audit.findings if f.group == "ugc"]
