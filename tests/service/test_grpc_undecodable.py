"""Bytes that are not a RankRequest: INVALID_ARGUMENT saying the request could not be decoded (naming the
field when a string is not UTF-8), never gRPC's INTERNAL 'Exception deserializing request!'; no traceback
in the log, one rate-limited WARNING line, and a metric."""
import logging
import random
import threading

import grpc
import pytest
from ethicrec.v1 import recommender_pb2 as pb

from tests.service.test_grpc_invalid_argument import _violation

RANK = "/ethicrec.v1.Recommender/Rank"
STREAM = "/ethicrec.v1.Recommender/RankStream"


def _swap(req: pb.RankRequest, marker: bytes, bad: bytes) -> bytes:
    """`req` encoded, with the bytes of `marker` (a string value in it) replaced by `bad` of the same length:
    what a non-Python client that does not check UTF-8 puts on the wire."""
    data = req.SerializeToString()
    assert data.count(marker) == 1 and len(marker) == len(bad)
    return data.replace(marker, bad)


def _nested_groups(depth: int) -> bytes:
    tag = (15 << 3) | 3            # an unknown field 15 as a start-group, 5,000 deep, each closed
    return bytes([tag]) * depth + bytes([(15 << 3) | 4]) * depth


def _truncated(known_items) -> bytes:
    data = pb.RankRequest(user=pb.User(user_id="1"), candidate_ids=known_items[:5], request_id="r" * 40)
    data = data.SerializeToString()
    return data[:-20]              # cut inside the request_id's bytes: its length now runs past the end


def _garbage() -> bytes:
    rng = random.Random(7)
    return bytes(rng.randrange(256) for _ in range(512))


def _cases(known_items):
    ok_user = pb.User(user_id="1")
    return {
        "ff64": (b"\xff" * 64, ""),
        "user_id_utf8": (_swap(pb.RankRequest(user=pb.User(user_id="U7"), candidate_ids=known_items[:3]),
                               b"U7", b"\xc3\x28"), "user.user_id"),
        "candidate_ids_utf8": (_swap(pb.RankRequest(user=ok_user, candidate_ids=[*known_items[:3], "Q9"]),
                                     b"Q9", b"\xe2\x82"), "candidate_ids[3]"),
        "candidate_text_utf8": (_swap(pb.RankRequest(user=ok_user, candidates=[
            pb.Candidate(item_id=known_items[0]), pb.Candidate(item_id="n", text="T5")]), b"T5", b"\xed\xa0"),
            "candidates[1].text"),
        "audit_attribute_utf8": (_swap(pb.RankRequest(user=pb.User(user_id="1", audit_attributes={"age_band": "A8"}),
                                                      candidate_ids=known_items[:3]), b"A8", b"\xff\xfe"),
                                 "user.audit_attributes[age_band]"),
        "truncated": (_truncated(known_items), ""),
        "nested_groups_5000": (_nested_groups(5000), ""),
        "garbage": (_garbage(), ""),
    }


@pytest.fixture()
def raw(server):
    app, target = server
    with grpc.insecure_channel(target) as ch:
        yield app, ch.unary_unary(RANK), ch


def test_each_byte_pattern_is_invalid_argument(raw, known_items, caplog):
    app, rank, _ = raw
    caplog.set_level(logging.INFO)
    cases = _cases(known_items)
    for name, (data, field) in cases.items():
        with pytest.raises(grpc.RpcError) as info:
            rank(data, timeout=10)
        err = info.value
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, err.code(), err.details())
        assert "could not be decoded" in err.details(), name
        assert _violation(err) == field, name
        if field:
            assert "not valid UTF-8" in err.details() and err.details().startswith(field + ":"), name
    # No traceback, no ERROR; one WARNING line for the burst (rate-limited), naming the method.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], \
        [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "undecodable" in r.getMessage()]
    assert len(warnings) == 1 and "Rank" in warnings[0].getMessage()
    sample = app.metrics.registry.get_sample_value
    utf8 = sample("ethicrec_rpc_undecodable_requests_total", {"method": "Rank", "reason": "utf8"})
    malformed = sample("ethicrec_rpc_undecodable_requests_total", {"method": "Rank", "reason": "malformed"})
    assert (utf8, malformed) == (sum(1 for _, f in cases.values() if f), sum(1 for _, f in cases.values() if not f))


def test_a_flood_logs_one_line_and_the_server_keeps_serving(raw, known_items, caplog):
    app, rank, ch = raw
    caplog.set_level(logging.INFO)
    data = b"\xff" * 64

    def hammer(_):
        for _ in range(50):
            with pytest.raises(grpc.RpcError) as info:
                rank(data, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = [r for r in caplog.records if "undecodable" in r.getMessage()]
    assert len(lines) == 1
    good = pb.RankRequest(user=pb.User(user_id="1"), candidate_ids=known_items[:5]).SerializeToString()
    resp = pb.RankResponse.FromString(rank(good, timeout=30))
    assert len(resp.items) == 5


def test_valid_messages_are_unaffected(raw, known_items):
    """The same bytes a stub sends decode as before (the deserializer returns the parsed message)."""
    _, rank, _ = raw
    for req in (pb.RankRequest(user=pb.User(user_id="1"), candidate_ids=known_items[:7], top_k=3),
                pb.RankRequest(user=pb.User(user_id="é✓", history_texts=["naïve café"]),
                               candidates=[pb.Candidate(item_id=known_items[0]),
                                           pb.Candidate(item_id="new", text="Ünïcödé 文字 🎬")])):
        resp = pb.RankResponse.FromString(rank(req.SerializeToString(), timeout=30))
        assert resp.items


def test_stream_names_the_request_and_the_field(server, known_items):
    _, target = server
    good = pb.RankRequest(user=pb.User(user_id="1"), candidate_ids=known_items[:4]).SerializeToString()
    bad = _cases(known_items)["candidate_ids_utf8"][0]
    with grpc.insecure_channel(target) as ch:
        call = ch.stream_stream(STREAM)(iter([good, bad, good]), timeout=30)
        first = next(call)
        assert pb.RankResponse.FromString(first).items
        with pytest.raises(grpc.RpcError) as info:
            next(call)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violation(info.value) == "requests[1].candidate_ids[3]"
    with grpc.insecure_channel(target) as ch:
        with pytest.raises(grpc.RpcError) as info:
            list(ch.stream_stream(STREAM)(iter([b"\xff" * 64]), timeout=30))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violation(info.value) == "requests[0]" and "could not be decoded" in info.value.details()
