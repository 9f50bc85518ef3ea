"""Vectors memory-mapped by default, read into memory for the server: the same numbers either way."""
import numpy as np

from recsys.compose import load_artifacts


def _is_mapped(a: np.ndarray) -> bool:
    while a is not None:
        if isinstance(a, np.memmap):
            return True
        a = a.base if isinstance(a.base, np.ndarray) else None
    return False


def test_vectors_in_memory_hold_the_same_values(artifact_root):
    mapped = load_artifacts(artifact_root, device="cpu")
    loaded = load_artifacts(artifact_root, device="cpu", vectors_in_memory=True)
    assert _is_mapped(mapped.store.item_vectors) and not _is_mapped(loaded.store.item_vectors)
    np.testing.assert_array_equal(mapped.store.item_vectors, loaded.store.item_vectors)
    assert mapped.store.known_users is not None     # training writes the known users' vectors
    assert _is_mapped(mapped.store.known_users.vectors) and not _is_mapped(loaded.store.known_users.vectors)
    np.testing.assert_array_equal(mapped.store.known_users.vectors, loaded.store.known_users.vectors)


def test_the_server_reads_vectors_into_memory(artifact_root, tmp_path):
    from service.reload import load_models
    from tests.service.support import config

    artifacts, _ = load_models(config(artifact_root, tmp_path))
    assert not _is_mapped(artifacts.store.item_vectors)
