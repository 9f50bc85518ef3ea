"""Once loaded, the server's long-lived objects are frozen out of the cyclic collector's walks (a full
collection over them held the GIL for ~0.3 s); a reload unfreezes so the old snapshot can be collected."""
import gc

from service.server import freeze_loaded_objects
from tests.service.support import config, running


def test_freeze_then_reload_unfreezes(artifact_root, tmp_path):
    with running(config(artifact_root, tmp_path)) as (app, _target):
        try:
            freeze_loaded_objects()
            assert gc.get_freeze_count() > 10_000   # models, tokenizers, libraries
            assert app.reload().ok
            assert gc.get_freeze_count() == 0
        finally:
            gc.unfreeze()
