"""request_from_proto reads `candidates` from their bytes when there are many (service/convert.py); every
candidate must come out exactly as the field-by-field reading gives it, whatever it sets."""
from hypothesis import given, settings
from hypothesis import strategies as st
from ethicrec.v1 import recommender_pb2 as pb

from service.convert import _VIEW_FROM, _candidate, request_from_proto

_ids = st.one_of(st.text(max_size=3), st.text(min_size=120, max_size=140),
                 st.text(alphabet="ab\u00e9\u4e2d\U0001f600", max_size=70), st.text(max_size=300))
_candidates = st.builds(
    lambda item_id, text, group, features, attributes: pb.Candidate(
        item_id=item_id, text=text, group=group, features=features, attributes=attributes),
    _ids, st.none() | st.text(max_size=5), st.none() | st.text(max_size=5),
    st.dictionaries(st.text(max_size=4), st.floats(allow_nan=False), max_size=2),
    st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2))


def _field_by_field(msg: pb.RankRequest):
    return tuple(map(_candidate, msg.candidates))


@settings(max_examples=200, deadline=None)
@given(st.lists(_candidates, min_size=_VIEW_FROM, max_size=40), st.lists(st.text(max_size=4), max_size=3))
def test_candidates_read_from_bytes_equal_the_field_by_field_reading(candidates, ids):
    msg = pb.RankRequest(request_id="r", candidates=candidates, candidate_ids=ids)
    got = request_from_proto(pb.RankRequest.FromString(msg.SerializeToString()))
    assert got.candidates[: len(candidates)] == _field_by_field(msg)
    assert [c.item_id for c in got.candidates[len(candidates):]] == ids


def test_unknown_fields_and_explicit_defaults_take_the_full_reading():
    """A candidate with a field this server does not know (a newer client), or `text` set to "" (presence
    matters), is not an id-only candidate even though its id is all a plain reading would see."""
    plain = [pb.Candidate(item_id=f"i{k}") for k in range(_VIEW_FROM)]
    empty_text = pb.Candidate(item_id="x", text="")
    newer = pb.Candidate(item_id="y").SerializeToString() + bytes([0x30, 0x07])   # field 6, varint 7
    raw = pb.RankRequest(candidates=plain + [empty_text]).SerializeToString()
    raw += bytes([0x1A, len(newer)]) + newer                                       # candidates (field 3) += newer
    msg = pb.RankRequest.FromString(raw)
    got = request_from_proto(msg).candidates
    assert got == _field_by_field(msg)
    assert got[-2].item_id == "x" and got[-2].text == ""
    assert got[-1].item_id == "y" and got[-1].text is None
    assert len(got) == _VIEW_FROM + 2


def test_ids_alone_become_id_candidates():
    """All candidates plain ids (or only candidate_ids): `IdCandidates`, which the stages read column-wise; one
    candidate with anything else set: a tuple of `Candidate`s, the same as field by field."""
    from recsys.domain import IdCandidates

    ids = [f"i{k}" for k in range(_VIEW_FROM + 4)]
    plain = request_from_proto(pb.RankRequest(candidates=[pb.Candidate(item_id=i) for i in ids])).candidates
    assert type(plain) is IdCandidates and plain.item_ids == tuple(ids)
    only_ids = request_from_proto(pb.RankRequest(candidate_ids=ids)).candidates
    assert type(only_ids) is IdCandidates and only_ids.item_ids == tuple(ids)
    msg = pb.RankRequest(candidates=[pb.Candidate(item_id=i) for i in ids[:-1]] + [pb.Candidate(item_id="z", group="g")])
    mixed = request_from_proto(msg).candidates
    assert type(mixed) is tuple and mixed == _field_by_field(msg) and mixed[-1].group == "g"
