import numpy as np
import torch

from recsys.encoder import TextEncoder


def test_encode_matches_training_forward_and_is_normalised(tiny_bert):
    enc = TextEncoder.load(tiny_bert, device="cpu", precision="fp32")
    texts = ["Toy Story (1995). Genres: Animation", "Heat", "A much longer text " * 10, ""]
    fast = enc.encode(texts, max_length=64, batch_size=2)
    with torch.no_grad():
        ref = enc.embed(texts, max_length=64).numpy()
    np.testing.assert_allclose(fast, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)


def test_dynamic_padding_does_not_change_vectors(tiny_bert):
    enc = TextEncoder.load(tiny_bert, device="cpu", precision="fp32")
    alone = enc.encode(["Heat"], max_length=64)
    mixed = enc.encode(["a very long neighbouring text " * 8, "Heat"], max_length=64, batch_size=2)
    np.testing.assert_allclose(alone[0], mixed[1], atol=1e-5)


def test_save_load_gives_identical_vectors(tiny_bert, tmp_path):
    enc = TextEncoder.load(tiny_bert, device="cpu")
    enc.save(tmp_path / "m")
    again = TextEncoder.load(tmp_path / "m", device="cpu")
    texts = ["Heat (1995)", "Toy Story"]
    np.testing.assert_array_equal(enc.encode(texts), again.encode(texts))


def test_store_cache_equals_fresh_computation(artifacts):
    store = artifacts.store
    text = "A brand new documentary about bees"
    first = store.item_vectors_for(np.array([-1]), [text])
    hits = store.text_cache.hits
    second = store.item_vectors_for(np.array([-1]), [text])
    assert store.text_cache.hits == hits + 1
    np.testing.assert_array_equal(first, second)
    fresh = store.encoder.encode([text], max_length=64)
    np.testing.assert_allclose(first, fresh, atol=1e-6)


def test_item_vectors_are_catalog_rows_unless_a_text_overrides(artifacts):
    """All-catalog requests take one gather; a text override or an unknown item takes the encoder, and
    either way each row is what that candidate alone would get."""
    store = artifacts.store
    idx = np.array([5, 0, 7, 5])
    plain = store.item_vectors_for(idx, [None] * 4)
    assert plain.dtype == np.float32 and plain.shape == (4, store.item_vectors.shape[1])
    np.testing.assert_array_equal(plain, store.item_vectors[idx])
    mixed = store.item_vectors_for(np.array([5, -1, 7, 0]), [None, "A new film about bees", None, "Override"])
    np.testing.assert_array_equal(mixed[[0, 2]], store.item_vectors[[5, 7]])
    np.testing.assert_allclose(mixed[[1, 3]], store.encoder.encode(["A new film about bees", "Override"],
                                                                   max_length=64), atol=1e-6)
    assert store.item_vectors_for(np.array([], dtype=np.intp), []).shape == (0, store.item_vectors.shape[1])


def test_a_text_gets_the_same_vector_in_any_batch(tiny_bert):
    enc = TextEncoder.load(tiny_bert, device="cpu", precision="fp32")
    texts = ["Heat", "Toy Story (1995)", "Jumanji (1995). Genres: Adventure", "a b c d e f g h i j k",
             "Heat", "Casino", "Se7en"]
    together = enc.encode(texts, max_length=64, batch_size=8)   # mixed lengths in one batch
    alone = np.vstack([enc.encode([t], max_length=64) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
