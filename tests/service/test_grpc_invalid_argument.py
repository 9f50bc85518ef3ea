"""Bad input: INVALID_ARGUMENT naming the field, with google.rpc.BadRequest details."""
import grpc
import pytest
from ethicrec.v1 import recommender_pb2 as pb
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def _violation(err: grpc.RpcError) -> str:
    status = rpc_status.from_call(err)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            detail.Unpack(br)
            return br.field_violations[0].field
    raise AssertionError("no BadRequest detail")


def _call(stub, req):
    with pytest.raises(grpc.RpcError) as info:
        stub.Rank(req, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return info.value


def _req(items, **kw):
    return pb.RankRequest(user=pb.User(user_id="1"), candidates=[pb.Candidate(item_id=i) for i in items], **kw)


def test_empty_candidates(stub):
    assert _violation(_call(stub, _req([]))) == "candidates"


@pytest.mark.parametrize("top_k", [0, -3, 101])
def test_top_k_out_of_range(stub, known_items, top_k):
    err = _call(stub, _req(known_items[:3], top_k=top_k))
    assert _violation(err) == "top_k"
    assert "between 1 and 100" in err.details()


def test_duplicate_item_ids(stub, known_items):
    err = _call(stub, _req([known_items[0], known_items[1], known_items[0]]))
    assert _violation(err) == "candidates[2].item_id"
    assert "duplicate" in err.details()


def test_unknown_item_without_text(stub, known_items):
    err = _call(stub, _req([known_items[0], "no-such-item"]))
    assert _violation(err) == "candidates[1].item_id"
    assert "no-such-item" in err.details()


def test_oversized_text(stub, known_items):
    req = _req(known_items[:2])
    req.candidates.append(pb.Candidate(item_id="big", text="x" * 2001))
    err = _call(stub, req)
    assert _violation(err) == "candidates[2].text"


def test_undeclared_feature_lists_accepted(stub, known_items):
    req = _req(known_items[:2])
    req.candidates[1].features["price"] = 3.0
    err = _call(stub, req)
    assert _violation(err) == "candidates[1].features"
    assert "accepted" in err.details()


def test_too_many_history_items(stub, known_items):
    req = _req(known_items[:2])
    req.user.history_item_ids.extend(str(i) for i in range(201))
    assert _violation(_call(stub, req)) == "user.history_item_ids"


def test_rank_stream_names_the_request(stub, known_items):
    reqs = [_req(known_items[:3]), _req(known_items[:3], top_k=0)]
    with pytest.raises(grpc.RpcError) as info:
        list(stub.RankStream(iter(reqs), timeout=30))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violation(info.value) == "requests[1].top_k"
