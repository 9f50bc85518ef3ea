"""The standard pipeline's front methods (recsys.compose.build_pipeline): run_many gives what run gives,
identity follows what decides answers, resources are the caches and monitors the server's metrics report,
close stops the audit's monitors once."""
from __future__ import annotations

import dataclasses

import numpy as np

from audit.log import AuditLog, read_records
from audit.policy import load_policy
from recsys.blend import Blend
from recsys.compose import build_pipeline
from recsys.domain import Candidate, IdCandidates, RankRequest, UserContext
from recsys.lru import LRUCache


def _requests(artifacts, known_items) -> list[RankRequest]:
    users = [u for u, h in artifacts.users.items() if len(h) > 3][:4]
    reqs = [RankRequest(UserContext(u), IdCandidates(tuple(known_items[i:i + 15])), top_k=5, request_id=f"r{j}")
            for j, (u, i) in enumerate(zip(users, (0, 5, 10, 20)))]
    # Candidates with a text of their own and an unknown item; a stranger with a history text.
    reqs.append(RankRequest(UserContext("nobody", history_texts=("A film about bees",)),
                            (*(Candidate(i) for i in known_items[:8]), Candidate("new-1", "A quiet film about the sea")),
                            top_k=4, request_id="r-text"))
    return reqs


def _no_monitor(policy):
    # The rolling monitor's findings depend on what came before and on its thread's timing: off, so two
    # pipelines fed the same requests answer the same.
    return dataclasses.replace(policy, monitor=dataclasses.replace(policy.monitor, enabled=False))


def test_run_many_equals_run_per_request(artifacts, known_items, tmp_path):
    policy = _no_monitor(load_policy())
    one_log, many_log = AuditLog(tmp_path / "one.db", salt=b"s"), AuditLog(tmp_path / "many.db", salt=b"s")
    one = build_pipeline(artifacts, policy=policy, audit_log=one_log)
    many = build_pipeline(artifacts, policy=policy, audit_log=many_log)
    try:
        reqs = _requests(artifacts, known_items)
        singles = [one.run(r) for r in reqs]
        batch = many.run_many(reqs)
        assert len(batch) == len(reqs)
        for a, b in zip(singles, batch):
            assert b.request is a.request
            for name in ("scores", "interest", "ranker_scores", "order"):
                np.testing.assert_array_equal(getattr(b, name), getattr(a, name), err_msg=name)
            assert b.final == a.final and b.removed == a.removed
            assert b.audit.verdict == a.audit.verdict and b.audit.findings == a.audit.findings
            assert b.response.items == a.response.items and b.response.request_id == a.response.request_id
    finally:
        one.close(), many.close()
        one_log.close(), many_log.close()


def test_decide_many_is_run_many_without_the_response(artifacts, known_items, tmp_path):
    policy = _no_monitor(load_policy())
    logs = [AuditLog(tmp_path / f"{n}.db", salt=b"s") for n in ("run", "decide")]
    run, decide = (build_pipeline(artifacts, policy=policy, audit_log=log) for log in logs)
    try:
        reqs = _requests(artifacts, known_items)
        for a, d in zip(run.run_many(reqs), decide.decide_many(reqs)):
            assert d.request is a.request and d.request_id == a.request_id and d.item_ids == a.item_ids
            for name in ("scores", "interest", "ranker_scores"):
                np.testing.assert_array_equal(getattr(d, name), getattr(a, name), err_msg=name)
            assert d.final == a.final and d.removed == a.removed
            assert d.audit.verdict == a.audit.verdict and d.audit.findings == a.audit.findings
        # Both wrote one audit record per request.
        assert [len(list(read_records(tmp_path / f"{n}.db"))) for n in ("run", "decide")] == [len(reqs)] * 2
    finally:
        run.close(), decide.close()
        for log in logs:
            log.close()


def test_identity_is_stable_and_changes_with_what_decides_answers(artifacts, audit_log):
    policy = load_policy()
    base = build_pipeline(artifacts, policy=policy, audit_log=audit_log).identity()
    assert base == build_pipeline(artifacts, policy=load_policy(), audit_log=audit_log).identity()
    assert base["model_version"] == artifacts.version and base["policy_version"] == policy.version
    assert base["blend"] == Blend().mode
    weight = build_pipeline(artifacts, policy=policy, audit_log=audit_log, blend=Blend("linear", 0.25)).identity()
    assert weight["blend_weight"] == 0.25 and weight != base
    stricter = dataclasses.replace(policy, exposure=dataclasses.replace(policy.exposure,
                                                                        alpha=policy.exposure.alpha / 2))
    assert build_pipeline(artifacts, policy=stricter, audit_log=audit_log).identity()["policy_sha256"] \
        != base["policy_sha256"]
    # Logging is not an answer: the identity stays.
    quieter = dataclasses.replace(policy, time_budget_ms=policy.time_budget_ms * 2)
    assert build_pipeline(artifacts, policy=quieter, audit_log=audit_log).identity() == base


def test_resources_are_the_caches_and_monitors_metrics_report(artifacts, audit_log):
    pipe = build_pipeline(artifacts, policy=load_policy(), audit_log=audit_log)
    res = pipe.resources()
    want = {"item_text_vectors", "user_vectors", "known_user_histories", "als_user_factors", "harm_scores"}
    if artifacts.store.known_users is not None:
        want.add("known_user_vectors")
    assert set(res.caches) == want
    # What the metrics read of each (the precomputed users are counted the same way, not an LRUCache).
    assert all(isinstance(c.hits, int) and isinstance(c.misses, int) and len(c) >= 0 for c in res.caches.values())
    assert isinstance(res.caches["known_user_histories"], LRUCache)
    assert res.caches["item_text_vectors"] is artifacts.store.text_cache
    assert set(res.monitors) == {"user_groups", "exposure_window"}     # both on in the default policy
    assert list(res.sinks) == [audit_log]
    off = build_pipeline(artifacts, policy=_no_monitor(load_policy()), audit_log=audit_log).resources()
    assert set(off.monitors) == {"exposure_window"}
    pipe.close()


def test_close_stops_the_monitors_once(artifacts, audit_log, known_items):
    pipe = build_pipeline(artifacts, policy=load_policy(), audit_log=audit_log)
    pipe.run(_requests(artifacts, known_items)[0])
    monitor = pipe.resources().monitors["user_groups"]
    pipe.close()
    assert monitor._stop.is_set()
    pipe.close()   # a second close does nothing (and does not raise)
