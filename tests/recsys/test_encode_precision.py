"""Inference precision of the text encoder (recsys.device.inference_precision): fp32, or bf16 autocast."""
import numpy as np
import pytest
import torch

from recsys.device import cpu_has_native_bf16, inference_precision
from recsys.encoder import TextEncoder, base_model_path

# Every text a different token length: the unpadded forward scatters them into a padded attention layout.
TEXTS = ["Heat", "Toy Story (1995). Genres: Animation|Children", "", "a b c d e f g h i j k l m n o p",
         "Jumanji (1995)", "Heat", "Se7en (1995). Genres: Crime|Mystery|Thriller. Tags: twist ending, dark"]


def test_auto_is_bf16_on_cuda_and_on_cpus_that_have_it():
    assert inference_precision(torch.device("cuda")) == "bf16"
    assert inference_precision(torch.device("cpu")) == ("bf16" if cpu_has_native_bf16() else "fp32")
    for device in ("cpu", "cuda"):
        assert inference_precision(torch.device(device), "fp32") == "fp32"
        assert inference_precision(torch.device(device), "bf16") == "bf16"


def test_an_unknown_precision_names_the_allowed_values():
    with pytest.raises(ValueError, match=r"precision must be one of 'auto', 'fp32', 'bf16'; got 'fp16'"):
        inference_precision(torch.device("cpu"), "fp16")
    with pytest.raises(ValueError, match="got 'half'"):
        TextEncoder.load(base_model_path(), device="cpu", precision="half")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_bf16_vectors_stay_within_a_rounding_of_fp32_on_the_real_minilm():
    """Texts of mixed lengths in one batch: the projections are bf16 under autocast, and the padded
    attention layout they are scattered into must take their dtype (a float32 layout failed here)."""
    fp32 = TextEncoder.load(base_model_path(), device="cpu", precision="fp32")
    bf16 = TextEncoder(fp32.model, fp32.tokenizer, fp32.device, precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    a, b = fp32.encode(TEXTS, max_length=64), bf16.encode(TEXTS, max_length=64)
    assert b.dtype == np.float32 and b.shape == a.shape
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    cos = _cosines(a, b)
    assert cos.min() > 0.9999, cos
    assert not np.array_equal(a, b)   # bf16 really ran
    np.testing.assert_array_equal(b[0], b[5])   # the same text, the same vector


def test_bf16_gives_a_text_nearly_the_same_vector_in_any_batch(tiny_bert):
    """fp32 is batch-independent to float rounding (test_encoder.py); bf16 products of a different row count
    may round differently, so a text's vector may move by a bf16 rounding with its batch, no more."""
    enc = TextEncoder.load(tiny_bert, device="cpu", precision="bf16")
    together = enc.encode(TEXTS, max_length=64, batch_size=8)
    alone = np.vstack([enc.encode([t], max_length=64) for t in TEXTS])
    assert _cosines(together, alone).min() > 0.9999


def test_load_artifacts_takes_the_precision(artifact_root):
    from recsys.compose import load_artifacts

    art = load_artifacts(artifact_root, device="cpu", encode_precision="fp32")
    assert art.store.encoder.precision == "fp32"
    # A caller's mistake is a ValueError naming the argument, not "the artifact is corrupt".
    with pytest.raises(ValueError, match="encode_precision must be one of 'auto', 'fp32', 'bf16'; got 'int8'"):
        load_artifacts(artifact_root, device="cpu", encode_precision="int8")


def test_the_artifact_records_what_its_vectors_were_encoded_in(artifacts):
    assert artifacts.metadata["encode_precision"] == inference_precision(torch.device("cpu"))
    assert artifacts.metadata["params"]["encode_precision"] == "auto"
