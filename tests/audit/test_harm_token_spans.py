"""Token-decomposition spans (HarmModel.token_spans / score_explain): the words whose tokens carry the largest
share of the category's logit over "none", as written in the original text."""
import numpy as np
import pytest

from audit.harm_model import FINE_CLASSES, MIN_WORD_LOGIT, HarmModel, prepare
from recsys.encoder import TextEncoder

TEXT = "Immigrants are V3RMIN, really."
DEHUM = FINE_CLASSES.index("dehumanisation")


@pytest.fixture(scope="module")
def model(tiny_bert):
    enc = TextEncoder.load(tiny_bert, device="cpu", precision="fp32")
    rng = np.random.default_rng(0)
    return HarmModel("frozen", enc, None, enc.device, head_coef=rng.normal(size=(7, enc.dim)),
                     head_intercept=np.zeros(7))


def _token_scores(model, prepared: str, shares: dict[str, tuple[int, float]]) -> np.ndarray:
    """(tokens, 7) zeros except `shares`: word -> (class, share), spread over that word's tokens."""
    enc = model.model.tokenizer(prepared, truncation=True, max_length=64, return_offsets_mapping=True)
    scores = np.zeros((len(enc["input_ids"]), 7))
    scores[0, DEHUM] = 50.0                 # [CLS]: a special token, never a word of the span
    for word, (k, share) in shares.items():
        a = prepared.index(word)
        toks = [t for t, (s, e) in enumerate(enc["offset_mapping"]) if e > s and a <= s < a + len(word)]
        scores[toks, k] += share / len(toks)
    return scores


def test_span_words_in_text_order_as_written(model):
    prepared = prepare([TEXT])[0]
    assert prepared == "immigrants are vermin, really."
    scores = _token_scores(model, prepared, {"immigrants": (DEHUM, 1.5), "vermin,": (DEHUM, 2.0),
                                             "really.": (DEHUM, 0.3), "are": (0, 1.0)})
    assert model.token_spans([TEXT], [prepared], [scores], ["dehumanisation"]) == [["Immigrants", "V3RMIN"]]
    # the share is of the category's logit over "none": a word that raises "none" as much counts for nothing
    scores[:, 0] = scores[:, DEHUM]
    assert model.token_spans([TEXT], [prepared], [scores], ["dehumanisation"]) == [[]]


def test_small_shares_give_no_span(model):
    prepared = prepare([TEXT])[0]
    scores = _token_scores(model, prepared, {"vermin,": (DEHUM, MIN_WORD_LOGIT / 2)})
    assert model.token_spans([TEXT], [prepared], [scores], ["dehumanisation"]) == [[]]


def test_score_explain_scores_as_score_does_and_explains_from_the_same_pass(model):
    texts = [TEXT, "a quiet drama about two sisters", ""]
    p, cats = model.score(texts)
    p2, cats2, spans = model.score_explain(texts)
    np.testing.assert_allclose(p2, p, atol=1e-6)
    assert cats2 == cats and len(spans) == 3
    words = set(TEXT.replace(",", " ").replace(".", " ").split())
    assert all(w in words for w in spans[0]) and spans[2] == []
    assert model.explain(texts, cats) == spans
    # stored explanations (catalog texts at training time) come first
    model.explanations = {TEXT: ["stored"]}
    try:
        assert model.score_explain([TEXT])[2] == [["stored"]]
    finally:
        model.explanations = {}
