"""The shipped harm classifier: MiniLM with a 7-way head over harm categories, calibrated, with explanations.

Classes (`FINE_CLASSES`): none, the lesser harms (profanity-only, harassment, sexual) and the hateful ones
(hate, dehumanisation, threat). Hateful means aimed at a protected group; the lesser harms are not hate
(swearing at a film is not hate, an insult to one person is harassment), so they never raise P(hateful),
and the policy can act on each category separately.

* `score(texts) -> (P(hateful), categories)`: P(hateful) is the hateful classes' probability mass, Platt-
  calibrated on validation (`calibration`); `threshold` on it was chosen on validation. A text's category
  is its most likely hateful class, unless P(hateful) is below the threshold and the lesser classes'
  mass reaches `lesser_threshold`: then it is the most likely lesser class (a flag the policy may act on).
* `explain(texts, categories)`: the words that drove the category (audit/harm_explain.py occlusion).
* Backbones (`backbone`): "finetuned" - the whole MiniLM fine-tuned with the 7-way head (safetensors);
  "frozen" - the shipped MiniLM frozen, mean-pooled, and a logistic-regression head (npy). Both read text
  through `audit.harm.normalise` + `deobfuscate`.

Saved as `harm_model.json` + safetensors / npy; nothing is unpickled.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audit import harm_categories as categories
from audit.harm import deobfuscate, normalise
from audit.harm_explain import explain as occlusion_explain

FINE_CLASSES = ("none", "profanity-only", "harassment", "sexual", "hate", "dehumanisation", "threat")
HATEFUL_IDX = (4, 5, 6)
LESSER_IDX = (1, 2, 3)
HATEFUL_CATEGORIES = tuple(FINE_CLASSES[i] for i in HATEFUL_IDX)
LESSER_CATEGORIES = tuple(FINE_CLASSES[i] for i in LESSER_IDX)
assert set(HATEFUL_CATEGORIES) == set(categories.HATEFUL_CATEGORIES)
assert set(LESSER_CATEGORIES) == set(categories.LESSER_CATEGORIES)
PARAMS_FILE = "harm_model.json"
BACKBONES = ("finetuned", "frozen")
MAX_LENGTH = 64


def prepare(texts: list[str]) -> list[str]:
    return [deobfuscate(normalise(t)) for t in texts]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def platt(p_raw: np.ndarray, a: float, b: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(a * _logit(p_raw) + b)))


def fit_platt(p_raw: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> tuple[float, float]:
    """(a, b) of sigmoid(a * logit(p) + b) minimising the weighted log-loss on validation."""
    from scipy.optimize import minimize

    x, y = _logit(p_raw), np.asarray(y, dtype=np.float64)
    w = np.ones_like(x) if weight is None else np.asarray(weight, dtype=np.float64)

    def loss(ab):
        z = ab[0] * x + ab[1]
        return float(np.sum(w * (np.logaddexp(0, z) - y * z)) / w.sum())

    res = minimize(loss, np.array([1.0, 0.0]), method="Nelder-Mead", options={"xatol": 1e-5, "fatol": 1e-9})
    return float(res.x[0]), float(res.x[1])


@dataclass
class HarmModel:
    """One of the two backbones (`backbone`) plus the calibration, thresholds and stored explanations."""

    backbone: str
    model: object                    # transformers sequence classifier ("finetuned") or recsys TextEncoder
    tokenizer: object | None
    device: object
    head_coef: np.ndarray | None = None        # (7, dim) for "frozen"
    head_intercept: np.ndarray | None = None   # (7,)
    calibration: tuple[float, float] = (1.0, 0.0)
    threshold: float = 0.5
    lesser_threshold: float = 0.5
    metrics: dict = field(default_factory=dict)
    explanations: dict[str, list[str]] = field(default_factory=dict)
    max_length: int = MAX_LENGTH
    batch_size: int = 64

    kind = "minilm-harm"
    score_name = "P(hateful)"

    # --- raw model ------------------------------------------------------------------------------
    def logits(self, texts: list[str]) -> np.ndarray:
        """(n, 7) raw logits of prepared-on-the-fly texts."""
        if not texts:
            return np.zeros((0, len(FINE_CLASSES)))
        prepared = prepare(list(texts))
        if self.backbone == "frozen":
            X = self.model.encode(prepared, max_length=self.max_length, batch_size=self.batch_size)
            return X.astype(np.float64) @ self.head_coef.T + self.head_intercept
        from recsys.classifier_inference import classifier_logits

        enc = self.tokenizer(prepared, truncation=True, max_length=self.max_length)
        return classifier_logits(self.model, self.tokenizer, enc, batch_size=self.batch_size, device=self.device)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """(n, 7) class probabilities in FINE_CLASSES order (uncalibrated softmax)."""
        return softmax(self.logits(texts))

    # --- decisions ------------------------------------------------------------------------------
    def decide(self, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(calibrated P(hateful), P(lesser), category) from class probabilities."""
        p_hate = platt(proba[:, HATEFUL_IDX].sum(1), *self.calibration)
        p_lesser = proba[:, LESSER_IDX].sum(1)
        hate_cat = np.asarray(HATEFUL_CATEGORIES)[np.argmax(proba[:, HATEFUL_IDX], 1)]
        lesser_cat = np.asarray(LESSER_CATEGORIES)[np.argmax(proba[:, LESSER_IDX], 1)]
        lesser = (p_hate < self.threshold) & (p_lesser >= self.lesser_threshold)
        return p_hate, p_lesser, np.where(lesser, lesser_cat, hate_cat).tolist()

    def score(self, texts: list[str]) -> tuple[np.ndarray, list[str]]:
        """Calibrated P(hateful) and the category of each text (see the module docstring)."""
        p_hate, _, cats = self.decide(self.predict_proba(list(texts)))
        return p_hate, cats

    def explain(self, texts: list[str], categories: list[str]) -> list[list[str]]:
        """The words that drove each text's category (stored ones for catalog texts, else occlusion)."""
        out: list[list[str] | None] = [self.explanations.get(t) for t in texts]
        for lesser in (False, True):
            todo = [i for i, t in enumerate(texts) if out[i] is None and (categories[i] in LESSER_CATEGORIES) == lesser]
            if not todo:
                continue

            def prob(xs: list[str], lesser=lesser) -> np.ndarray:
                p_hate, p_lesser, _ = self.decide(self.predict_proba(xs))
                return p_lesser if lesser else p_hate

            sub = [texts[i] for i in todo]
            for i, span in zip(todo, occlusion_explain(sub, prob, prob(sub))):
                out[i] = span
        return [o or [] for o in out]

    # --- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.backbone == "frozen":
            self.model.save(path / "encoder")
            np.save(path / "head_coef.npy", self.head_coef.astype(np.float32), allow_pickle=False)
            np.save(path / "head_intercept.npy", self.head_intercept.astype(np.float64), allow_pickle=False)
        else:
            self.model.save_pretrained(path, safe_serialization=True)
            self.tokenizer.save_pretrained(path)
        (path / PARAMS_FILE).write_text(json.dumps({
            "kind": self.kind, "backbone": self.backbone, "classes": list(FINE_CLASSES),
            "calibration": list(self.calibration), "threshold": self.threshold,
            "lesser_threshold": self.lesser_threshold, "max_length": self.max_length,
            "preprocessing": "normalise+deobfuscate", "metrics": self.metrics,
            "explanations": self.explanations}, indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> "HarmModel":
        from recsys.device import pick_device

        path = Path(path)
        params = json.loads((path / PARAMS_FILE).read_text())
        if tuple(params.get("classes", ())) != FINE_CLASSES:
            raise ValueError(f"{path}: classes {params.get('classes')} are not {list(FINE_CLASSES)}")
        backbone = params.get("backbone")
        if backbone not in BACKBONES:
            raise ValueError(f"{path}: unknown backbone {backbone!r}")
        common = dict(calibration=tuple(map(float, params["calibration"])), threshold=float(params["threshold"]),
                      lesser_threshold=float(params["lesser_threshold"]), metrics=params.get("metrics", {}),
                      explanations=dict(params.get("explanations", {})),
                      max_length=int(params.get("max_length", MAX_LENGTH)))
        if backbone == "frozen":
            from recsys.encoder import TextEncoder

            enc = TextEncoder.load(path / "encoder", device=device)
            return cls("frozen", enc, None, enc.device,
                       head_coef=np.load(path / "head_coef.npy", allow_pickle=False).astype(np.float64),
                       head_intercept=np.load(path / "head_intercept.npy", allow_pickle=False), **common)
        model, tok = load_sequence_classifier(path)
        dev = pick_device(device)
        return cls("finetuned", model.to(dev).eval(), tok, dev, **common)


def load_sequence_classifier(path: str | Path, num_labels: int | None = None):
    """A BERT sequence classifier and its tokenizer from local files (safetensors). With `num_labels`, a
    fresh head of that size is put on an encoder checkpoint (the shipped MiniLM)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    kw = {}
    if num_labels is not None:
        kw = dict(num_labels=num_labels, id2label=dict(enumerate(FINE_CLASSES)),
                  label2id={c: i for i, c in enumerate(FINE_CLASSES)})
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()     # "newly initialized: classifier.*" is expected for a fresh head
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                                                   **kw)
    finally:
        hf_logging.set_verbosity(verbosity)
    if model.config.num_labels != len(FINE_CLASSES):
        raise ValueError(f"{path}: a harm model has num_labels={len(FINE_CLASSES)}; got {model.config.num_labels}")
    return model.eval(), tok


def load_harm(version_dir: str | Path, device: str = "auto"):
    """The artifact's harm classifier: harm_bert/ (the older fine-tuned 3-way model) when present, else
    harm/, which holds this module's model (harm_model.json) or the first char-n-gram one (params.json)."""
    from audit.harm import HarmClassifier

    vdir = Path(version_dir)
    if (vdir / "harm_bert").is_dir():
        from audit.harm_bert import BertHarmClassifier

        return BertHarmClassifier.load(vdir / "harm_bert", device=device)
    if (vdir / "harm" / PARAMS_FILE).is_file():
        return HarmModel.load(vdir / "harm", device=device)
    return HarmClassifier.load(vdir / "harm")
