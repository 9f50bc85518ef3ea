"""Configured request limits: message size is refused by gRPC (RESOURCE_EXHAUSTED);
counts and lengths are INVALID_ARGUMENT naming the field, with BadRequest details."""
import grpc
import pytest
from ethicrec.v1 import recommender_pb2 as pb
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from recsys.validation import Limits
from tests.service.support import config, rank_request, running, stub


def _field(err: grpc.RpcError) -> str:
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    status = rpc_status.from_call(err)
    br = error_details_pb2.BadRequest()
    assert status is not None and status.details[0].Unpack(br)
    return br.field_violations[0].field


@pytest.fixture()
def limited(artifact_root, tmp_path):
    limits = Limits(max_candidates=5, max_text_chars=50, max_history_items=3, max_id_chars=16, max_attributes=2)
    with running(config(artifact_root, tmp_path, limits=limits, max_message_bytes=64 * 1024)) as (_, target), \
            grpc.insecure_channel(target) as ch:
        yield stub(ch)


def _reject(s, req) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        s.Rank(req, timeout=30)
    return info.value


def test_within_limits_is_served(limited, known_items):
    assert len(limited.Rank(rank_request(known_items[:5], top_k=5), timeout=30).items) == 5


def test_oversized_message_is_resource_exhausted(limited, known_items):
    req = rank_request(known_items[:2])
    req.candidates.append(pb.Candidate(item_id="big", text="x" * 100_000))
    assert _reject(limited, req).code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_each_limit_names_its_field(limited, known_items):
    too_many = rank_request(known_items[:6])
    assert _field(_reject(limited, too_many)) == "candidates"
    long_text = rank_request(known_items[:2])
    long_text.candidates.append(pb.Candidate(item_id="t", text="y" * 51))
    assert _field(_reject(limited, long_text)) == "candidates[2].text"
    history = rank_request(known_items[:2])
    history.user.history_item_ids.extend(known_items[10:14])
    assert _field(_reject(limited, history)) == "user.history_item_ids"
    assert _field(_reject(limited, rank_request(known_items[:2], user_id="u" * 17))) == "user.user_id"
    assert _field(_reject(limited, rank_request(known_items[:2], request_id="r" * 17))) == "request_id"
    attrs = rank_request(known_items[:2])
    attrs.user.audit_attributes.update({"a": "1", "b": "2", "c": "3"})
    assert _field(_reject(limited, attrs)) == "user.audit_attributes"
    cand_attrs = rank_request(known_items[:2])
    cand_attrs.candidates[1].attributes["content_rating"] = "z" * 17
    assert _field(_reject(limited, cand_attrs)) == "candidates[1].attributes[content_rating]"
