"""`candidate_ids`: catalog candidates by id alone, ranked with `candidates` as if each were a Candidate
with only item_id set; errors name the wire field."""
import grpc
import pytest
from ethicrec.v1 import recommender_pb2 as pb

from tests.service.test_grpc_invalid_argument import _call, _violation


def _items(resp):
    return [(i.item_id, i.rank, i.score, i.interest_score, i.ranker_score) for i in resp.items]


def test_ids_rank_exactly_as_candidate_messages(stub, known_items):
    ids = known_items[:30]
    as_messages = pb.RankRequest(user=pb.User(user_id="1"), candidates=[pb.Candidate(item_id=i) for i in ids],
                                 top_k=12, request_id="m")
    as_ids = pb.RankRequest(user=pb.User(user_id="1"), candidate_ids=ids, top_k=12, request_id="i")
    mixed = pb.RankRequest(user=pb.User(user_id="1"), candidates=[pb.Candidate(item_id=i) for i in ids[:7]],
                           candidate_ids=ids[7:], top_k=12, request_id="x")
    a, b, c = (stub.Rank(r, timeout=30) for r in (as_messages, as_ids, mixed))
    assert _items(a) == _items(b) == _items(c) and len(a.items) == 12
    assert a.audit.verdict == b.audit.verdict == c.audit.verdict
    assert [(f.code, f.group, f.value) for f in a.audit.findings] == [
        (f.code, f.group, f.value) for f in b.audit.findings]


def test_id_with_text_candidate_alongside(stub, known_items):
    req = pb.RankRequest(user=pb.User(user_id="1"), candidate_ids=known_items[:10], top_k=11,
                         candidates=[pb.Candidate(item_id="brand-new", text="A heartwarming film about toys")])
    resp = stub.Rank(req, timeout=30)
    assert {i.item_id for i in resp.items} == set(known_items[:10]) | {"brand-new"}


@pytest.mark.parametrize("case,field,detail", [
    ("unknown", "candidate_ids[1]", "not in the catalog"),
    ("empty", "candidate_ids[2]", "must not be empty"),
    ("dup_across", "candidate_ids[0]", "(first at candidates[0])"),
    ("dup_within", "candidate_ids[2]", "(first at candidate_ids[0])"),
])
def test_errors_name_the_candidate_ids_entry(stub, known_items, case, field, detail):
    msg = [pb.Candidate(item_id=known_items[0])]
    ids = {"unknown": [known_items[1], "no-such-item"], "empty": [known_items[1], known_items[2], ""],
           "dup_across": [known_items[0]], "dup_within": [known_items[1], known_items[2], known_items[1]]}[case]
    err = _call(stub, pb.RankRequest(user=pb.User(user_id="1"), candidates=msg, candidate_ids=ids))
    assert _violation(err) == field
    assert detail in err.details()


def test_message_candidate_errors_keep_their_names(stub, known_items):
    req = pb.RankRequest(user=pb.User(user_id="1"), candidate_ids=[known_items[1]],
                         candidates=[pb.Candidate(item_id=known_items[0]), pb.Candidate(item_id="no-such-item")])
    assert _violation(_call(stub, req)) == "candidates[1].item_id"


@pytest.mark.parametrize("n_messages,n_ids", [(0, 1001), (0, 10_001), (400, 601)])
def test_ids_count_towards_max_candidates(stub, known_items, n_messages, n_ids):
    """The count limit names candidate_ids when the request has ids (alone, or together with messages)."""
    req = pb.RankRequest(user=pb.User(user_id="1"), candidate_ids=[f"x{i}" for i in range(n_ids)],
                         candidates=[pb.Candidate(item_id=f"m{i}") for i in range(n_messages)])
    err = _call(stub, req)
    assert _violation(err) == "candidate_ids"
    assert f"{n_ids} candidate_ids" in err.details() and "the limit is 1000" in err.details()


def test_too_many_messages_still_name_candidates(stub, known_items):
    req = pb.RankRequest(user=pb.User(user_id="1"), candidates=[pb.Candidate(item_id=f"m{i}") for i in range(1001)])
    assert _violation(_call(stub, req)) == "candidates"


def test_stream_errors_name_the_request_and_the_ids_entry(stub, known_items):
    good = pb.RankRequest(user=pb.User(user_id="1"), candidate_ids=known_items[:5])
    bad = pb.RankRequest(user=pb.User(user_id="1"), candidate_ids=[known_items[0], "no-such-item"])
    with pytest.raises(grpc.RpcError) as info:
        list(stub.RankStream(iter([good, bad]), timeout=30))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violation(info.value) == "requests[1].candidate_ids[1]"
