"""Amortised exposure through a real server: a steady, mild bias against one item group that no single
response shows significantly appears as AMORTISED_EXPOSURE_DISPARITY on later responses and on /metrics."""
import time

import grpc
import numpy as np
from ethicrec.v1 import recommender_pb2 as pb
from prometheus_client.parser import text_string_to_metric_families

from tests.service.support import config, free_port, running, scrape, stub

POLICY = """
version = "window-test"
[monitor]
enabled = false
[exposure_window]
window = 400
min_requests = 60
refresh_every = 20
max_busy_share = 1.0
"""


def _groups_with_mild_bias(order: list[str], rng) -> dict[str, str]:
    """Half the candidates are 'b'; in the model's top 10 'b' holds 4 random ranks among 2..9 (a fair share
    would be 5, at random ranks), the rest of 'b' is below rank 10."""
    top_b = {order[r] for r in rng.choice(np.arange(1, 9), size=4, replace=False)}
    rest = [x for x in order[10:]]
    more_b = set(rng.choice(rest, size=len(order) // 2 - 4, replace=False).tolist())
    return {x: ("b" if x in top_b or x in more_b else "a") for x in order}


def test_mild_bias_surfaces_over_the_window_only(artifact_root, tmp_path, known_items, artifacts):
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    port = free_port()
    rng = np.random.default_rng(0)
    users = list(artifacts.users)
    items = known_items[:40]
    per_request, window_found = [], []
    with running(config(artifact_root, tmp_path, policy=policy, metrics_port=port)) as (app, target):
        app.start_metrics()
        with grpc.insecure_channel(target) as ch:
            s = stub(ch)
            for i in range(160):
                user = pb.User(user_id=users[i % len(users)])
                full = s.Rank(pb.RankRequest(user=user, candidates=[pb.Candidate(item_id=x) for x in items],
                                             top_k=40, audit_mode=pb.AUDIT_MODE_FLAG_ONLY), timeout=30)
                groups = _groups_with_mild_bias([it.item_id for it in full.items], rng)
                resp = s.Rank(pb.RankRequest(user=user, candidates=[pb.Candidate(item_id=x, group=groups[x])
                                                                    for x in items],
                                             top_k=10, audit_mode=pb.AUDIT_MODE_FLAG_ONLY), timeout=30)
                per_request.append([f for f in resp.audit.findings if f.code == "EXPOSURE_DISPARITY"])
                window_found.append([f for f in resp.audit.findings if f.code == "AMORTISED_EXPOSURE_DISPARITY"])
                if i >= 100 and window_found[-1]:
                    break
                time.sleep(0.01)   # let the window's thread refresh between bursts
        text = scrape(port)
    # No single response shows the bias significantly ...
    assert not any(per_request), [f.message for fs in per_request for f in fs][:3]
    # ... but the window does, on a later response, about group b only, with its interval and evidence.
    hits = [fs for fs in window_found if fs]
    assert hits, "no AMORTISED_EXPOSURE_DISPARITY after the window filled"
    f = hits[-1][0]
    assert [x.group for x in hits[-1]] == ["b"] and f.value < f.threshold == 0.8
    assert f.HasField("p_value") and f.p_value < f.alpha and "interval" in f.message
    first = next(i for i, fs in enumerate(window_found) if fs)
    assert first >= 60 - 1   # not before the group had min_requests (60) responses in the window
    samples = {(x.name, tuple(sorted(x.labels.items()))): x.value
               for fam in text_string_to_metric_families(text) for x in fam.samples}
    ratio_b = samples[("ethicrec_exposure_window_ratio", (("group", "b"),))]
    high_b = samples[("ethicrec_exposure_window_ratio_high", (("group", "b"),))]
    assert ratio_b < high_b < 0.8
    assert samples[("ethicrec_exposure_window_disparity", (("group", "b"),))] == ratio_b
    assert samples[("ethicrec_exposure_window_ratio", (("group", "a"),))] > 1.0
