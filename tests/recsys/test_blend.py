import numpy as np
import pytest

from recsys.blend import Blend
from recsys.compose import build_pipeline
from recsys.domain import Candidate, RankRequest, UserContext


def test_linear_blend_normalises_per_request():
    b = Blend("linear", 0.25)
    s = b.combine(np.array([0.2, 0.4, 0.6]), np.array([10.0, -10.0, 0.0]))
    np.testing.assert_allclose(s, [0.25 * 0 + 0.75 * 1, 0.25 * 0.5 + 0, 0.25 * 1 + 0.75 * 0.5])
    np.testing.assert_allclose(Blend("linear", 1.0).combine(np.array([3.0, 3.0]), np.array([1.0, 2.0])), [0.5, 0.5])
    np.testing.assert_array_equal(Blend().combine(np.array([1.0]), np.array([7.0])), [7.0])


@pytest.mark.parametrize("kw, msg", [({"mode": "avg"}, "blend mode must be one of lightgbm, linear; got 'avg'"),
                                     ({"weight": 1.5}, "blend weight must be between 0 and 1; got 1.5")])
def test_bad_blend_names_parameter(kw, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(")):
        Blend(**kw)


def test_linear_blend_in_the_pipeline_reports_both_components(artifacts, audit_log, known_items):
    from audit.policy import load_policy

    pipe = build_pipeline(artifacts, policy=load_policy(), audit_log=audit_log, blend=Blend("linear", 1.0))
    resp = pipe.rank(RankRequest(UserContext("1"), tuple(Candidate(i) for i in known_items[:20]), top_k=20))
    interest = [i.interest_score for i in resp.items]
    assert interest == sorted(interest, reverse=True)  # weight 1: ordered by the BERT score alone
    assert any(i.ranker_score != i.score for i in resp.items)
