"""The user-group monitor inside the audit stage: a real disparity in what users receive
(one group keeps getting harmful candidates removed) surfaces on later responses."""
from audit.policy import parse_policy
from recsys.compose import build_pipeline
from recsys.domain import AuditMode, Candidate, RankRequest, UserContext

ABUSE = "you stupid bitch ass hoe, shut up"


def test_disparity_surfaces_on_subsequent_responses(artifacts, audit_log, known_items):
    policy = parse_policy({"version": "mon", "exposure": {"enabled": False},
                           "monitor": {"min_samples": 20, "refresh_every": 10_000, "attributes": ["gender"],
                                       "intersections": []}})
    pipe = build_pipeline(artifacts, policy=policy, audit_log=audit_log)
    audit = next(s for s in pipe.stages if s.name == "audit")
    for n in range(30):
        for gender, extra in (("F", (Candidate(f"ugc-{n}", text=ABUSE),)), ("M", ())):
            cands = tuple(Candidate(i) for i in known_items[:10]) + extra
            pipe.rank(RankRequest(UserContext(f"{gender}{n}", audit_attributes={"gender": gender}), cands,
                                  top_k=5, audit_mode=AuditMode.ENFORCE))
    assert not any(f.code == "USER_GROUP_DISPARITY"
                   for f in pipe.rank(RankRequest(UserContext("x"), tuple(Candidate(i) for i in known_items[:10]),
                                                  top_k=5)).audit.findings)
    audit.monitor.refresh()
    resp = pipe.rank(RankRequest(UserContext("y"), tuple(Candidate(i) for i in known_items[:10]), top_k=5))
    found = [f for f in resp.audit.findings if f.code == "USER_GROUP_DISPARITY"]
    assert [(f.group, f.metric) for f in found] == [("gender=F", "harm_removal_rate_ratio")]
    assert found[0].value == 0.0
    audit.close()
