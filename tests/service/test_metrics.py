"""/metrics after real calls: RPCs by method and code, stage latencies, verdicts,
findings, versions, cache hit rates."""
import grpc
import pytest
from ethicrec.v1 import recommender_pb2 as pb
from prometheus_client.parser import text_string_to_metric_families

from tests.service.support import config, free_port, rank_request, running, scrape, stub

ABUSE = "you stupid bitch ass hoe, shut up"


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _get(samples, name, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_endpoint(artifact_root, tmp_path, known_items):
    port = free_port()
    with running(config(artifact_root, tmp_path, metrics_port=port)) as (app, target):
        assert app.start_metrics() == port
        with grpc.insecure_channel(target) as ch:
            s = stub(ch)
            req = rank_request(known_items[:20], top_k=11, audit_mode=pb.AUDIT_MODE_FLAG_ONLY)
            req.candidates.append(pb.Candidate(item_id="ugc", text=ABUSE))
            s.Rank(req, timeout=30)
            s.Rank(req, timeout=30)        # same user and texts again: cache hits
            with pytest.raises(grpc.RpcError):
                s.Rank(rank_request([]), timeout=30)
        m = _samples(scrape(port))
    rank = "ethicrec.v1.Recommender/Rank"
    assert _get(m, "ethicrec_rpc_requests_total", method=rank, code="OK") == 2
    assert _get(m, "ethicrec_rpc_requests_total", method=rank, code="INVALID_ARGUMENT") == 1
    assert _get(m, "ethicrec_rpc_duration_seconds_count", method=rank, code="OK") == 2
    assert _get(m, "ethicrec_rpc_duration_seconds_sum", method=rank, code="OK") > 0
    for stage in ("resolve", "interest", "features", "rank", "harm", "audit", "respond"):
        assert _get(m, "ethicrec_stage_duration_seconds_count", stage=stage) == 2, stage
    assert _get(m, "ethicrec_audit_verdicts_total", verdict="FLAGGED") == 2
    assert _get(m, "ethicrec_audit_findings_total", code="HARMFUL_TEXT") == 2
    assert _get(m, "ethicrec_model_info", model_version=app.artifacts.version,
                policy_version=app.policy.version) == 1
    assert _get(m, "ethicrec_cache_misses_total", cache="item_text_vectors") >= 1
    assert _get(m, "ethicrec_cache_hits_total", cache="item_text_vectors") >= 1
    # user "1" is a known user: both requests find its precomputed vector, the LRU is never consulted
    assert _get(m, "ethicrec_cache_hits_total", cache="known_user_vectors") == 2
    assert _get(m, "ethicrec_cache_misses_total", cache="known_user_vectors") == 0
    assert _get(m, "ethicrec_cache_entries", cache="known_user_vectors") == app.artifacts.metadata["user_vectors"]
    assert _get(m, "ethicrec_cache_hits_total", cache="user_vectors") == 0
    assert _get(m, "ethicrec_cache_hits_total", cache="harm_scores") >= 1
    # the one new text went through the item-text micro-batcher once; the repeat was a cache hit
    for name in ("calls", "requests", "texts", "texts_encoded"):
        assert _get(m, f"ethicrec_encode_batch_{name}_total", batcher="item_texts") == 1, name
        assert _get(m, f"ethicrec_encode_batch_{name}_total", batcher="user_texts") == 0, name


def test_metrics_off_by_default(artifact_root, tmp_path):
    with running(config(artifact_root, tmp_path)) as (app, _):
        assert app.start_metrics() is None
