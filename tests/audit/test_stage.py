"""The audit stage in the request path: ENFORCE vs FLAG_ONLY, audience rules,
small groups, fail-closed, and one log record per decision."""
import sqlite3

import pytest
from scipy.stats import hypergeom

from audit.log import read_records
from audit.policy import load_policy, parse_policy
from recsys.compose import build_pipeline
from recsys.domain import AuditMode, Candidate, RankRequest, UserContext, Verdict
from recsys.errors import AuditFailure

ABUSE = "you stupid bitch ass hoe, shut up"


def _req(items, extra=(), mode=AuditMode.ENFORCE, attrs=None, top_k=10):
    cands = tuple(Candidate(i) for i in items) + tuple(extra)
    return RankRequest(UserContext("42", audit_attributes=attrs or {}), cands, top_k=top_k, audit_mode=mode)


def test_enforce_removes_harmful_candidate_and_logs(pipeline, known_items, audit_log):
    resp = pipeline.rank(_req(known_items[:20], [Candidate("ugc", text=ABUSE)]))
    assert [r.item_id for r in resp.removed] == ["ugc"]
    assert resp.removed[0].reason == "HARMFUL_TEXT"
    assert "ugc" not in [i.item_id for i in resp.items]
    assert resp.audit.verdict is Verdict.ENFORCED
    assert any(f.code == "HARMFUL_TEXT" and f.group == "ugc" for f in resp.audit.findings)
    recs = list(read_records(audit_log.path))
    assert len(recs) == 1 and recs[0].audit_id == resp.audit.audit_id
    assert recs[0].removed == [{"item_id": "ugc", "reason": "HARMFUL_TEXT"}]
    # The keyed pseudonym of user "42" (audit/pseudonym.py), never the id itself.
    assert recs[0].user_hash == audit_log.key.pseudonym("42") and recs[0].user_hash.startswith("hmac:")


def test_flag_only_keeps_harmful_candidate_flagged(pipeline, known_items):
    req = _req(known_items[:20], [Candidate("ugc", text=ABUSE)], mode=AuditMode.FLAG_ONLY, top_k=21)
    resp = pipeline.rank(req)
    assert resp.removed == ()
    assert "ugc" in [i.item_id for i in resp.items]
    assert resp.audit.verdict is Verdict.FLAGGED
    assert any(f.code == "HARMFUL_TEXT" and f.group == "ugc" for f in resp.audit.findings)


def test_flag_only_never_changes_the_list(pipeline, known_items):
    extra = [Candidate("ugc", text=ABUSE), Candidate("adult", text="a film", attributes={"content_rating": "R"})]
    flag = pipeline.rank(_req(known_items[:20], extra, mode=AuditMode.FLAG_ONLY, attrs={"age_band": "under_18"},
                              top_k=22))
    ctx = pipeline.run(_req(known_items[:20], extra, mode=AuditMode.FLAG_ONLY, attrs={"age_band": "under_18"},
                            top_k=22))
    assert [i.item_id for i in flag.items] == [ctx.item_ids[p] for p in ctx.order]


def test_audience_rule_removes_restricted_item_for_minors_only(pipeline, known_items):
    adult = Candidate("adult", text="an explicit drama", attributes={"content_rating": "adult"})
    minor = pipeline.rank(_req(known_items[:10], [adult], attrs={"age_band": "under_18"}, top_k=11))
    assert [(r.item_id, r.reason) for r in minor.removed] == [("adult", "AUDIENCE_RESTRICTED")]
    grown = pipeline.rank(_req(known_items[:10], [adult], attrs={"age_band": "25-34"}, top_k=11))
    assert grown.removed == () and "adult" in [i.item_id for i in grown.items]


def test_small_groups_get_insufficient_evidence_not_a_pass(pipeline, known_items):
    cands = [Candidate(i, group="big") for i in known_items[:12]] + [Candidate(known_items[12], group="tiny")]
    resp = pipeline.rank(RankRequest(UserContext("42"), tuple(cands), top_k=5))
    ins = {f.group: f for f in resp.audit.findings if f.code == "INSUFFICIENT_EVIDENCE"}
    # 'tiny' is under the policy's min_group_size; 'big' (12 of 13, top 5) could not show a disparity either:
    # its most extreme outcome, 'tiny' at rank 1 (the least exposure 'big' can get), has P = 1/13 under a
    # group-blind ranking (and its fewest count, 4 of 5, P = 5/13).
    assert (ins["tiny"].metric, ins["tiny"].value) == ("group_size", 1.0)
    assert ins["big"].metric == "min_attainable_p_value" and ins["big"].value == pytest.approx(1 / 13)
    assert ins["big"].p_value == pytest.approx(1 / 13) and ins["big"].alpha == 0.05
    assert resp.audit.verdict is not Verdict.PASS


def test_exposure_disparity_is_flagged_with_group_and_evidence(pipeline, known_items):
    """Group labels follow the model's own order: its top 20 of 40 are 'g1', so 'g2' gets none of the top 10."""
    base = pipeline.run(RankRequest(UserContext("42"), tuple(Candidate(i) for i in known_items[:40]), top_k=40,
                                    audit_mode=AuditMode.FLAG_ONLY))
    top = {base.item_ids[p] for p in base.order[:20]}
    cands = [Candidate(i, group="g1" if i in top else "g2") for i in known_items[:40]]
    resp = pipeline.rank(RankRequest(UserContext("42"), tuple(cands), top_k=10))
    found = {f.metric: f for f in resp.audit.findings if f.code == "EXPOSURE_DISPARITY"}
    assert set(found) == {"selection_rate_ratio", "exposure_ratio"}
    p0 = hypergeom.pmf(0, 40, 20, 10)    # P(no g2 item in a random top 10)
    for f in found.values():
        assert f.group == "g2" and f.value == 0.0 and f.alpha == 0.05
        assert f.p_value == pytest.approx(4 * p0)   # Holm over 2 groups x 2 metrics, both at P(X = 0)


def test_a_split_a_random_ranking_could_give_is_not_flagged(pipeline, known_items):
    """Six candidates per group, top 3: every split a ranking could return happens by chance often."""
    cands = [Candidate(i, group="g1" if k % 2 else "g2") for k, i in enumerate(known_items[:12])]
    resp = pipeline.rank(RankRequest(UserContext("42"), tuple(cands), top_k=3))
    assert not any(f.code == "EXPOSURE_DISPARITY" for f in resp.audit.findings)
    assert {f.group for f in resp.audit.findings if f.code == "INSUFFICIENT_EVIDENCE"} == {"g1", "g2"}


def test_audit_failure_fails_closed_and_writes_nothing(artifacts, audit_log, known_items, monkeypatch):
    pipe = build_pipeline(artifacts, policy=load_policy(), audit_log=audit_log)
    audit = next(s for s in pipe.stages if s.name == "audit")

    def broken(*a, **k):
        raise RuntimeError("classifier crashed")

    monkeypatch.setattr(audit.harm, "score", broken)
    with pytest.raises(AuditFailure, match="response withheld"):
        pipe.rank(_req(known_items[:5], [Candidate("new", text="hello")]))
    assert list(read_records(audit_log.path)) == []


def test_blocklist_term_is_enforced(artifacts, audit_log, known_items):
    policy = parse_policy({"version": "t", "harm": {"blocklist": [{"term": "spoilerword", "category": "spam"}]}})
    pipe = build_pipeline(artifacts, policy=policy, audit_log=audit_log)
    resp = pipe.rank(_req(known_items[:5], [Candidate("x", text="A film about SpoilerWord.")]))
    assert [(r.item_id, r.reason) for r in resp.removed] == [("x", "BLOCKLISTED_TERM")]
    resp = pipe.rank(_req(known_items[:5], [Candidate("y", text="A film about spoilerwords")]))
    assert resp.removed == ()


def test_only_policy_allowed_audit_attributes_are_logged(pipeline, known_items, audit_log):
    pipeline.rank(_req(known_items[:5], attrs={"age_band": "25-34", "religion": "x", "gender": "F"}))
    rec = list(read_records(audit_log.path))[-1]
    assert rec.user_attributes == {"age_band": "25-34", "gender": "F"}


@pytest.mark.parametrize("journal", [False, True], ids=["direct", "journal"])
def test_the_record_lists_every_candidate_with_its_group_rank_and_removal(artifacts, known_items, tmp_path,
                                                                          journal):
    """The stage hands the log its group codes and returned positions; what is stored must still be one
    entry per candidate, in request order, with its group label, returned rank (0 = not returned) and reason."""
    from audit.log import AuditLog, candidate_entries

    log = AuditLog(tmp_path / "a.db", salt=b"s", journal=journal)
    try:
        pipe = build_pipeline(artifacts, policy=load_policy(), audit_log=log)
        extra = [Candidate("ugc", text=ABUSE), Candidate("new-1", text="A quiet drama", group="indie")]
        resp = pipe.rank(_req(known_items[:8], extra, top_k=4))
        log.flush()
        rec = list(read_records(log.path))[-1]
    finally:
        log.close()
    groups = dict(zip(artifacts.catalog.item_ids, artifacts.catalog.stats.group.tolist()))
    want = [{"item_id": i, "group": groups[i], "rank": 0, "removed": ""} for i in known_items[:8]]
    want += [{"item_id": "ugc", "group": "unknown", "rank": 0, "removed": "HARMFUL_TEXT"},
             {"item_id": "new-1", "group": "indie", "rank": 0, "removed": ""}]
    for item in resp.items:
        want[[w["item_id"] for w in want].index(item.item_id)]["rank"] = item.rank
    assert candidate_entries(rec.candidates) == want
    assert rec.returned_ids == [i.item_id for i in resp.items] and len(resp.items) == 4


def test_statistical_findings_keep_their_evidence_in_the_log(pipeline, known_items, audit_log):
    base = pipeline.run(RankRequest(UserContext("42"), tuple(Candidate(i) for i in known_items[:40]), top_k=40,
                                    audit_mode=AuditMode.FLAG_ONLY))
    top = {base.item_ids[p] for p in base.order[:20]}
    cands = [Candidate(i, group="g1" if i in top else "g2") for i in known_items[:40]]
    resp = pipeline.rank(RankRequest(UserContext("42"), tuple(cands), top_k=10))
    audit_log.flush()
    rec = next(r for r in read_records(audit_log.path) if r.audit_id == resp.audit.audit_id)
    logged = [f for f in rec.findings if f["code"] == "EXPOSURE_DISPARITY"]
    assert logged and all(f["p_value"] == next(x.p_value for x in resp.audit.findings if x.metric == f["metric"]
                                                 and x.code == f["code"]) and f["alpha"] == 0.05 for f in logged)


def test_a_single_group_has_nothing_to_compare_and_passes(pipeline, known_items):
    resp = pipeline.rank(RankRequest(UserContext("42"), tuple(Candidate(i, group="one") for i in known_items[:30]),
                                     top_k=10))
    assert resp.audit.findings == () and resp.audit.verdict is Verdict.PASS
