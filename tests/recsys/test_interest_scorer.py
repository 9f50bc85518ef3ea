"""Both interest scorers satisfy one contract: shape, dtype, finite, deterministic,
request texts (unknown items, overrides) scored, and the bi-encoder's caches change nothing."""
import numpy as np
import pytest
import torch

from recsys.domain import Candidate, RankRequest, UserContext
from recsys.embedding_store import ITEM_MAX_LENGTH, USER_MAX_LENGTH
from recsys.interest import BiEncoderScorer, CrossEncoder, CrossEncoderScorer, InterestScorer

USER = "Toy Story (1995) | Heat (1995) | Jumanji (1995)"


@pytest.fixture(autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def scorers(artifacts, tiny_cross_encoder):
    ce = CrossEncoder.load(tiny_cross_encoder, device="cpu")
    return {"bi_encoder": BiEncoderScorer(artifacts.store),
            "cross_encoder": CrossEncoderScorer(ce, artifacts.catalog.texts, batch_size=4)}


@pytest.fixture(params=["bi_encoder", "cross_encoder"])
def scorer(request, scorers):
    return scorers[request.param]


def _candidates(artifacts):
    idx = np.array([0, 1, 2, 3, 4, 5, -1, -1, 7], dtype=np.int64)
    texts = [None] * 6 + ["A quiet drama about two sisters", "Brand-new sci-fi series. Genres: Sci-Fi",
                          "An override text for a catalog item"]
    return idx, texts


def test_contract_shape_dtype_finite_deterministic(scorer, artifacts):
    assert isinstance(scorer, InterestScorer)
    assert scorer.name in ("bi_encoder", "cross_encoder")
    idx, texts = _candidates(artifacts)
    a = scorer.score(USER, idx, texts)
    b = scorer.score(USER, idx, texts)
    assert a.shape == (len(idx),) and a.dtype == np.float64
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    empty = scorer.score(USER, np.zeros(0, dtype=np.int64), [])
    assert empty.shape == (0,) and empty.dtype == np.float64


def test_contract_request_texts_are_scored_like_catalog_texts(scorer, artifacts):
    """A known item's catalog text sent as a request text scores (almost) the same as the catalog row;
    an override is scored on the override, not on the catalog text."""
    cat = artifacts.catalog
    by_row = scorer.score(USER, np.array([3, 7]), [None, None])
    as_text = scorer.score(USER, np.array([-1, -1]), [cat.texts[3], cat.texts[7]])
    np.testing.assert_allclose(by_row, as_text, atol=1e-5)
    override = scorer.score(USER, np.array([7]), ["Something else entirely"])
    unknown = scorer.score(USER, np.array([-1]), ["Something else entirely"])
    np.testing.assert_allclose(override, unknown, atol=1e-6)
    assert abs(override[0] - by_row[1]) > 1e-6


def test_contract_depends_on_the_user(scorer, artifacts):
    idx = np.arange(6)
    a = scorer.score(USER, idx, [None] * 6)
    b = scorer.score("Pride and Prejudice (1995) | Sense and Sensibility (1995)", idx, [None] * 6)
    assert not np.allclose(a, b)


def test_cross_encoder_rejects_a_candidate_without_any_text(scorers):
    with pytest.raises(ValueError, match="no text"):
        scorers["cross_encoder"].score(USER, np.array([0, -1]), [None, None])


def test_bi_encoder_cached_path_equals_fresh_computation(artifacts):
    scorer = BiEncoderScorer(artifacts.store)
    store = artifacts.store
    text = "A never-seen documentary about honey bees"
    user = USER + " | Microcosmos (1996)"
    first = scorer.score(user, np.array([-1, 2]), [text, None])
    hits = store.text_cache.hits + store.user_cache.hits
    second = scorer.score(user, np.array([-1, 2]), [text, None])
    assert store.text_cache.hits + store.user_cache.hits == hits + 2
    np.testing.assert_array_equal(first, second)
    enc = store.encoder
    u = enc.encode([user], max_length=USER_MAX_LENGTH)[0]
    v = enc.encode([text, artifacts.catalog.texts[2]], max_length=ITEM_MAX_LENGTH)
    np.testing.assert_allclose(first, v @ u, atol=1e-5)


def test_interest_stage_is_the_bi_encoder_scorer(pipeline, artifacts, known_items):
    req = RankRequest(UserContext("1"), tuple(Candidate(i) for i in known_items[:20])
                      + (Candidate("new-1", text="A film about a lighthouse keeper"),), top_k=5)
    ctx = pipeline.run(req)
    expected = BiEncoderScorer(artifacts.store).score(ctx.user_text, ctx.cand_idx, ctx.texts)
    np.testing.assert_array_equal(ctx.interest, expected)
    assert ctx.interest_max.shape == ctx.interest.shape
    assert ctx.cross_scores is None   # no cross-encoder stage on CPU by default
