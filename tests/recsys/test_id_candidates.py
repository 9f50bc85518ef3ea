"""`IdCandidates` (candidates that are ids alone) reads like a tuple of `Candidate`s, and every stage that takes a
fast path for it gives exactly what the same candidates as a tuple give: results, errors and audit."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.domain import Candidate, IdCandidates, RankRequest, UserContext
from recsys.errors import InvalidRequest
from recsys.validation import Limits, validate_request


def test_reads_as_a_tuple_of_candidates():
    c = IdCandidates(["a", "b", "c"])
    as_tuple = (Candidate("a"), Candidate("b"), Candidate("c"))
    assert c == as_tuple and as_tuple == c and c == IdCandidates(("a", "b", "c"))
    assert c != (Candidate("a"),) and c != IdCandidates(["a"])
    assert len(c) == 3 and list(c) == list(as_tuple) and c[1] == Candidate("b") and c[-1] == Candidate("c")
    assert c[1:] == as_tuple[1:] and isinstance(c[1:], tuple)
    assert Candidate("b") in c and c.index(Candidate("c")) == 2
    with pytest.raises(IndexError):
        c[3]
    with pytest.raises(TypeError):
        hash(c)


def _outcome(req, limits):
    try:
        validate_request(req, limits)
    except InvalidRequest as exc:
        return exc.field, exc.description
    return None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["", "a", "b", "x" * 9]), st.text(max_size=10)), min_size=1, max_size=12))
def test_validation_gives_the_same_verdict_and_message(ids):
    limits = Limits(max_id_chars=8)
    user = UserContext("u")
    as_ids = RankRequest(user, IdCandidates(ids))
    as_tuple = RankRequest(user, tuple(map(Candidate, ids)))
    assert _outcome(as_ids, limits) == _outcome(as_tuple, limits)


def _request(candidates, **user):
    return RankRequest(UserContext("u1", **user), candidates, top_k=10)


def _same_context(a, b):
    for name in ("item_ids", "texts", "groups_from_catalog", "final", "removed"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("cand_idx", "groups", "history_idx", "X", "scores", "order"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    fa, fb = a.response.audit.findings, b.response.audit.findings
    assert [(f.code, f.metric, f.value, f.group) for f in fa] == [(f.code, f.metric, f.value, f.group) for f in fb]
    assert a.response.audit.verdict == b.response.audit.verdict
    assert a.response.items == b.response.items


def test_the_pipeline_gives_the_same_answer(pipeline, known_items):
    history = tuple(known_items[30:35])
    # under_18 turns on the default policy's audience rule, whose candidate loop IdCandidates skips
    for attrs in ({}, {"age_band": "under_18"}):
        a = pipeline.run(_request(IdCandidates(known_items[:30]), history_item_ids=history, audit_attributes=attrs))
        b = pipeline.run(_request(tuple(map(Candidate, known_items[:30])), history_item_ids=history,
                                  audit_attributes=attrs))
        _same_context(a, b)
        assert len(a.response.items) == 10


def test_an_unknown_id_is_named_alike(pipeline, known_items):
    ids = known_items[:5] + ["no-such-item"] + known_items[5:8]
    errors = []
    for cands in (IdCandidates(ids), tuple(map(Candidate, ids))):
        with pytest.raises(InvalidRequest) as exc:
            pipeline.run(_request(cands))
        errors.append((exc.value.field, exc.value.description))
    assert errors[0] == errors[1] == ("candidates[5].item_id", "item 'no-such-item' is not in the catalog and has no text")
