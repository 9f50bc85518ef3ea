import pytest

from recsys.domain import Candidate, RankRequest, UserContext
from recsys.errors import InvalidRequest
from recsys.validation import Limits, validate_request


def _req(cands, **kw):
    return RankRequest(UserContext("u", **kw.pop("user", {})), tuple(cands), **kw)


@pytest.mark.parametrize("req, field", [
    (_req([]), "candidates"),
    (_req([Candidate("a")] * 3), "candidates"),  # over the limit of 2
    (_req([Candidate("")]), "candidates[0].item_id"),
    (_req([Candidate("a"), Candidate("a")]), "candidates[1].item_id"),
    (_req([Candidate("a", text="x" * 11)]), "candidates[0].text"),
    (_req([Candidate("a", features={"f": float("nan")})]), "candidates[0].features[f]"),
    (_req([Candidate("a")], top_k=0), "top_k"),
    (_req([Candidate("a")], top_k=11), "top_k"),
    (_req([Candidate("a")], user={"history_texts": ("x" * 11,)}), "user.history_texts[0]"),
    (_req([Candidate("a")], user={"history_item_ids": ("1", "2", "3", "4")}), "user.history_item_ids"),
])
def test_first_bad_field_is_named(req, field):
    limits = Limits(max_candidates=2, max_top_k=10, max_text_chars=10, max_history_items=3)
    with pytest.raises(InvalidRequest) as info:
        validate_request(req, limits)
    assert info.value.field == field


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="limits.max_top_k"):
        Limits(max_top_k=0)
