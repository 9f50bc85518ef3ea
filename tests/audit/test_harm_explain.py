"""Occlusion spans: the words whose removal lowers the probability are the ones reported."""
import numpy as np

from audit.harm_explain import MAX_VARIANTS, explain, occlusion_variants


def _prob(texts):
    return np.array([0.95 if "vermin" in t else (0.6 if "rats" in t else 0.05) for t in texts])


def test_span_is_the_word_that_drives_the_probability():
    texts = ["Immigrants are vermin and should leave.", "A quiet drama about two sisters."]
    spans = explain(texts, _prob, _prob(texts))
    assert spans == [["vermin"], []]


def test_two_drivers_are_both_reported_in_text_order():
    def prob(texts):
        return np.array([0.1 + 0.4 * ("vermin" in t) + 0.4 * ("exterminated" in t) for t in texts])
    text = "They are vermin, they should be exterminated."
    assert explain([text], prob, prob([text])) == [["vermin", "exterminated"]]


def test_long_texts_are_occluded_in_windows():
    text = " ".join(f"w{i}" for i in range(200)) + " vermin"
    variants, spans = occlusion_variants(text)
    assert len(variants) <= MAX_VARIANTS + 1 and len(variants) == len(spans)
    assert any("vermin" in text[a:b] for a, b in spans)
    span = explain([text], _prob, _prob([text]))[0]
    assert any("vermin" in w for w in span)


def test_empty_text_has_no_span():
    assert explain([""], _prob, _prob([""])) == [[]]
