"""Shared helper for the BERT harm-classifier tests: a tiny classifier fine-tuned briefly on a Davidson slice."""
from __future__ import annotations

import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DAVIDSON = ROOT / "data" / "hate-speech-davidson" / "labeled_data.csv"


@functools.lru_cache(maxsize=2)   # shared by the tests of one session (read-only use)
def tiny_trained(tiny_bert, n_train: int = 192, n_val: int = 160, steps: int = 6):
    import numpy as np

    from audit.harm import load_davidson
    from audit.harm_bert import BertHarmClassifier, calibrate_and_threshold, fine_tune, split_indices

    df = load_davidson(DAVIDSON)
    labels = df["label"].to_numpy()
    tr, va, _ = split_indices(labels, seed=0)
    rng = np.random.default_rng(0)
    tr, va = rng.choice(tr, n_train, replace=False), rng.choice(va, n_val, replace=False)
    clf = BertHarmClassifier.from_base(tiny_bert, device="cpu", seed=0)
    fine_tune(clf, df["text"].iloc[tr].tolist(), labels[tr], batch_size=32, lr=1e-3, max_steps=steps)
    cal = calibrate_and_threshold(clf, df["text"].iloc[va].tolist(), labels[va])
    return clf, cal, df["text"].iloc[va].tolist(), labels[va]
