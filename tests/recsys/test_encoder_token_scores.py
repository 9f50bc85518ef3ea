"""TextEncoder.encode_token_scores: the same vectors as `encode`, and per-token shares of a linear head that add
up exactly to the head's output on those vectors (the harm model's explanations rest on this)."""
import numpy as np
import pytest

from recsys.encoder import TextEncoder

TEXTS = ["Heat", "they are vermin and must go", "", "a b c d e f g h i j k l m n o p", "Heat"]


@pytest.mark.parametrize("unpadded", [True, False])
def test_token_shares_sum_to_the_head_output(tiny_bert, monkeypatch, unpadded):
    enc = TextEncoder.load(tiny_bert, device="cpu", precision="fp32")
    if not unpadded:   # the padded path other (non-BERT) models take
        monkeypatch.setattr("recsys.encoder.supports_unpadded", lambda _m: False)
    head = np.random.default_rng(0).normal(size=(7, enc.dim))
    vectors, scores = enc.encode_token_scores(TEXTS, head, max_length=64, batch_size=2)
    np.testing.assert_allclose(vectors, enc.encode(TEXTS, max_length=64), atol=1e-5)
    ids = enc.tokenizer(TEXTS, truncation=True, max_length=64)["input_ids"]
    assert [s.shape for s in scores] == [(len(i), 7) for i in ids]
    sums = np.stack([s.sum(0) for s in scores])
    np.testing.assert_allclose(sums, vectors @ head.T, atol=1e-4)
    # the shares differ between tokens (not the output spread evenly), and equal texts get equal shares
    assert np.ptp(scores[1][:, 0]) > 1e-3
    np.testing.assert_allclose(scores[0], scores[4], atol=1e-6)


def test_no_texts(tiny_bert):
    enc = TextEncoder.load(tiny_bert, device="cpu")
    vectors, scores = enc.encode_token_scores([], np.zeros((7, enc.dim)))
    assert vectors.shape == (0, enc.dim) and scores == []
