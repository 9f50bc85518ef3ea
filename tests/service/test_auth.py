"""Bearer tokens: missing or wrong -> UNAUTHENTICATED, right -> OK; health stays open."""
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys.errors import ConfigError
from tests.service.support import config, rank_request, running, stub

TOKEN = "s3cret-token-for-tests"


@pytest.fixture()
def secured(artifact_root, tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"# frontends\n{TOKEN}\n")
    cfg = config(artifact_root, tmp_path, auth_tokens_file=tokens, auth_tokens=("env-token",))
    with running(cfg) as (app, target), grpc.insecure_channel(target) as ch:
        yield app, ch, tokens


def _code(call) -> grpc.StatusCode:
    try:
        call()
        return grpc.StatusCode.OK
    except grpc.RpcError as err:
        return err.code()


def test_tokens(secured, known_items):
    app, ch, _ = secured
    s, req = stub(ch), rank_request(known_items[:5])
    assert _code(lambda: s.Rank(req, timeout=30)) == grpc.StatusCode.UNAUTHENTICATED
    assert _code(lambda: s.Rank(req, timeout=30, metadata=[("authorization", "Bearer wrong")])) == \
        grpc.StatusCode.UNAUTHENTICATED
    assert _code(lambda: s.Rank(req, timeout=30, metadata=[("authorization", TOKEN)])) == \
        grpc.StatusCode.UNAUTHENTICATED          # no "Bearer" scheme
    for token in (TOKEN, "env-token"):
        resp = s.Rank(req, timeout=30, metadata=[("authorization", f"Bearer {token}")])
        assert len(resp.items) == 5
    streamed = s.RankStream(iter([req]), timeout=30)
    assert _code(lambda: list(streamed)) == grpc.StatusCode.UNAUTHENTICATED
    assert app.metrics.registry.get_sample_value(
        "ethicrec_rpc_requests_total", {"method": "ethicrec.v1.Recommender/Rank", "code": "UNAUTHENTICATED"}) == 3


def test_health_needs_no_token(secured):
    _, ch, _ = secured
    assert health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
        health_pb2.HealthCheckResponse.SERVING


def test_tokens_file_is_reread_on_reload(secured, known_items):
    app, ch, tokens = secured
    s, req = stub(ch), rank_request(known_items[:5])
    tokens.write_text("rotated-token\n")
    assert app.reload().ok
    assert _code(lambda: s.Rank(req, timeout=30, metadata=[("authorization", f"Bearer {TOKEN}")])) == \
        grpc.StatusCode.UNAUTHENTICATED
    assert s.Rank(req, timeout=30, metadata=[("authorization", "Bearer rotated-token")]).items


def test_empty_tokens_file_fails_fast(artifact_root, tmp_path):
    empty = tmp_path / "none.txt"
    empty.write_text("# nobody\n")
    with pytest.raises(ConfigError, match="holds no tokens"):
        config(artifact_root, tmp_path, auth_tokens_file=empty)
