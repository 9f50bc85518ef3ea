"""The guard of recsys/unpadded_bert.py: it reads transformers' BERT internals and transformers is not pinned,
so a model whose internals are not what it reads (an attribute gone, or BertModel computing something else)
is run on the standard padded forward, with one warning naming the transformers version, and `encode` gives
the same vectors as the standard path."""
import logging
import warnings

import numpy as np
import pytest
import torch
import transformers

from recsys import unpadded_bert
from recsys.encoder import TextEncoder, _mean_pool
from recsys.unpadded_bert import probe_problem, structure_problem, supports

TEXTS = ["Heat", "Toy Story (1995). Genres: Animation|Children", "", "a b c d e f g h i j k l m n o p",
         "Jumanji (1995)", "Heat"]


def _standard(enc: TextEncoder, texts: list[str]) -> np.ndarray:
    batch = enc.tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.inference_mode():
        hidden = enc.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    ref = _mean_pool(hidden, batch["attention_mask"]).numpy()
    return ref / np.linalg.norm(ref, axis=1, keepdims=True)


@pytest.fixture
def enc(tiny_bert, monkeypatch):
    monkeypatch.setattr(unpadded_bert, "_warned", set())
    return TextEncoder.load(tiny_bert, device="cpu", precision="fp32")


def test_the_intact_model_passes_both_checks(enc):
    assert structure_problem(enc.model) is None and probe_problem(enc.model) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert supports(enc.model)


def test_a_missing_internal_falls_back_with_one_warning(enc, caplog):
    """`num_attention_heads` is read only by the unpadded forward (BertModel's own forward does not need
    it): without it the guard must refuse, and encode must still give the standard path's vectors."""
    for layer in enc.model.encoder.layer:
        del layer.attention.self.num_attention_heads
    assert structure_problem(enc.model) == "encoder.layer[0] has no attention.self.num_attention_heads"
    with caplog.at_level(logging.WARNING, logger="recsys.unpadded_bert"), \
            pytest.warns(RuntimeWarning, match=f"transformers {transformers.__version__}.*padded forward"):
        assert not supports(enc.model)
        got = enc.encode(TEXTS, batch_size=4)
    np.testing.assert_allclose(got, _standard(enc, TEXTS), rtol=0, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # once per model: no second warning, no second check
        assert not supports(enc.model)
        enc.encode_token_scores(TEXTS, np.ones((1, enc.dim), np.float32))
    assert sum("num_attention_heads" in r.getMessage() for r in caplog.records) == 1


def test_a_changed_computation_is_caught_by_the_probe(enc):
    """The attributes are all there but BertModel computes something else than the reimplementation (here:
    its default token type is 1, the unpadded forward assumes 0): the probe sees it and encode falls back."""
    enc.model.embeddings.token_type_ids.fill_(1)
    assert structure_problem(enc.model) is None
    assert "differs from BertModel's" in probe_problem(enc.model)
    with pytest.warns(RuntimeWarning, match="differs from BertModel's"):
        got = enc.encode(TEXTS, batch_size=4)
    np.testing.assert_allclose(got, _standard(enc, TEXTS), rtol=0, atol=1e-6)
    vectors, _ = enc.encode_token_scores(TEXTS, np.ones((1, enc.dim), np.float32))
    np.testing.assert_allclose(vectors, _standard(enc, TEXTS), rtol=0, atol=1e-5)


def test_an_unpadded_forward_that_raises_is_refused_not_propagated(enc):
    """An attribute still there but meaning something else (here a head count the hidden size does not match,
    which BertModel's own forward never reads): the probe's exception is a refusal, and encode falls back."""
    for layer in enc.model.encoder.layer:
        layer.attention.self.num_attention_heads = 3
    assert "failed on a probe batch (RuntimeError" in probe_problem(enc.model)
    with pytest.warns(RuntimeWarning, match="failed on a probe batch"):
        got = enc.encode(TEXTS, batch_size=4)
    np.testing.assert_allclose(got, _standard(enc, TEXTS), rtol=0, atol=1e-6)
