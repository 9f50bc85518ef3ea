"""Property-based fuzzing of RankRequest against a real server: whatever a caller
sends, well-formed messages or arbitrary bytes, the answer is OK or INVALID_ARGUMENT
— never INTERNAL or UNKNOWN."""
import grpc
import pytest
from ethicrec.v1 import recommender_pb2 as pb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.service.support import config, running, stub

# Valid UTF-8 only (protobuf refuses to serialise lone surrogates, so a client cannot send them).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
SHORT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)


@pytest.fixture(scope="module")
def fuzz_target(artifact_root, tmp_path_factory):
    with running(config(artifact_root, tmp_path_factory.mktemp("fuzz"))) as (app, target), \
            grpc.insecure_channel(target) as ch:
        yield stub(ch), app, ch


@pytest.fixture(scope="module")
def catalog_ids(artifacts) -> list[str]:
    return list(artifacts.catalog.item_ids[:50])


@st.composite
def rank_requests(draw, catalog_ids):
    item_id = st.one_of(st.sampled_from(catalog_ids), SHORT)
    cands = []
    for _ in range(draw(st.integers(0, 12))):
        c = pb.Candidate(item_id=draw(item_id))
        if draw(st.booleans()):
            c.text = draw(st.one_of(TEXT, st.just(""), st.just("you stupid bitch, shut up")))
        if draw(st.booleans()):
            c.group = draw(SHORT)
        c.features.update(draw(st.dictionaries(SHORT, FLOATS, max_size=2)))
        c.attributes.update(draw(st.dictionaries(st.sampled_from(["content_rating", "lang", ""]),
                                                 st.sampled_from(["adult", "R", "G", ""]), max_size=2)))
        cands.append(c)
    user = pb.User(user_id=draw(st.one_of(st.sampled_from(["1", "414", ""]), SHORT)),
                   history_item_ids=draw(st.lists(item_id, max_size=5)),
                   history_texts=draw(st.lists(TEXT, max_size=3)),
                   audit_attributes=draw(st.dictionaries(st.sampled_from(["age_band", "gender", "x"]),
                                                         st.sampled_from(["under_18", "25-34", "F", ""]),
                                                         max_size=3)))
    req = pb.RankRequest(user=user, candidates=cands, audit_mode=draw(st.sampled_from([0, 1, 2, 7])),
                         request_id=draw(SHORT))
    if draw(st.booleans()):
        req.top_k = draw(st.integers(-3, 120))
    return req


def test_fuzzed_requests_never_fail_internally(fuzz_target, catalog_ids):
    s, app, _ = fuzz_target

    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(rank_requests(catalog_ids))
    def check(req):
        try:
            resp = s.Rank(req, timeout=30)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details(), req)
            return
        k = req.top_k if req.HasField("top_k") else 10
        assert len(resp.items) <= k and resp.audit.audit_id
        assert [i.rank for i in resp.items] == list(range(1, len(resp.items) + 1))
        assert resp.model_version == app.artifacts.version

    check()


@st.composite
def wire_bytes(draw, catalog_ids):
    """Bytes a client can put on the wire: random bytes, or a valid request's encoding with bytes flipped,
    inserted, deleted or the tail cut off (invalid UTF-8, broken lengths, stray tags and groups)."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    req = pb.RankRequest(user=pb.User(user_id=draw(SHORT)), candidate_ids=draw(st.lists(
        st.sampled_from(catalog_ids), max_size=6, unique=True)), request_id=draw(SHORT))
    data = bytearray(req.SerializeToString())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and data:
            del data[pos]
        elif op == "cut":
            del data[pos:]
    return bytes(data)


def test_fuzzed_wire_bytes_never_fail_internally(fuzz_target, catalog_ids):
    """Whatever bytes arrive as a Rank request: OK, or INVALID_ARGUMENT (undecodable bytes say so)."""
    _, _, channel = fuzz_target
    rank = channel.unary_unary("/ethicrec.v1.Recommender/Rank")

    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(wire_bytes(catalog_ids))
    def check(data):
        try:
            pb.RankResponse.FromString(rank(data, timeout=30))
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details(), data)

    check()
