"""The unpadded forward (recsys/unpadded_bert.py) against HuggingFace's padded forward with a mask, in fp32
(bf16 against fp32: test_encode_precision.py)."""
import numpy as np
import pytest
import torch

from recsys.encoder import TextEncoder, _mean_pool, base_model_path
from recsys.unpadded_bert import mean_pooled, supports

TEXTS = ["Heat", "Toy Story (1995). Genres: Animation|Children", "", "a b c d e f g h i j k l m n o p",
         "Jumanji (1995)", "Heat"]


def _padded_reference(enc: TextEncoder, texts: list[str], max_length: int = 64) -> np.ndarray:
    batch = enc.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        hidden = enc.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    return _mean_pool(hidden, batch["attention_mask"]).numpy()


def _ids(enc: TextEncoder, texts: list[str]) -> list[list[int]]:
    return enc.tokenizer(texts, truncation=True, max_length=64)["input_ids"]


def test_mean_pooled_equals_the_padded_forward_with_a_mask(tiny_bert):
    enc = TextEncoder.load(tiny_bert, device="cpu")
    assert supports(enc.model)
    with torch.inference_mode():
        ours = mean_pooled(enc.model, _ids(enc, TEXTS)).numpy()
    ref = _padded_reference(enc, TEXTS)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)
    # every text is a different length, so positions, masks and pooling were all exercised
    assert len({len(r) for r in _ids(enc, TEXTS)}) >= 4
    np.testing.assert_array_equal(ours[0], ours[5])


def test_real_minilm_agrees_with_the_padded_forward():
    enc = TextEncoder.load(base_model_path(), device="cpu", precision="fp32")
    ours = enc.encode(TEXTS, max_length=64)
    ref = _padded_reference(enc, TEXTS)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert float((ours * ref).sum(1).min()) > 0.999999
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


def test_models_it_does_not_cover_take_the_padded_forward(tmp_path, tiny_bert):
    """A non-BERT encoder (here a tiny DistilBERT) and a model in training mode are not run unpadded;
    `encode` still gives each text the padded forward's vector."""
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    torch.manual_seed(0)
    DistilBertModel(DistilBertConfig(vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64)
                    ).save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    enc = TextEncoder.load(tmp_path, device="cpu", precision="fp32")
    assert not supports(enc.model)
    ref = _padded_reference(enc, TEXTS)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(enc.encode(TEXTS, batch_size=4), ref, rtol=0, atol=1e-5)
    bert = TextEncoder.load(tiny_bert, device="cpu")
    bert.model.train()
    assert not supports(bert.model)


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_encode_is_independent_of_batching(tiny_bert, batch_size):
    enc = TextEncoder.load(tiny_bert, device="cpu", precision="fp32")
    np.testing.assert_allclose(enc.encode(TEXTS, batch_size=batch_size), enc.encode(TEXTS, batch_size=64),
                               rtol=0, atol=1e-6)
