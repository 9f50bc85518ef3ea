"""The server's text encoder runs in the configured precision (config key encode_precision)."""
import numpy as np
import pytest


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_server_encodes_in_the_configured_precision(artifact_root, tmp_path, precision):
    from service.server import load_app
    from tests.service.support import config

    app = load_app(config(artifact_root, tmp_path, encode_precision=precision))
    try:
        assert app.artifacts.store.encoder.precision == precision
        # A cold text goes through the encoder in that precision and comes back as a unit vector.
        vec = app.artifacts.store.item_vectors_for(np.array([-1]), ["A new film about bees"])
        assert vec.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    finally:
        app.close()
