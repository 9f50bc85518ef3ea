"""The shipped harm classifier: MiniLM with a 7-way head over harm categories, calibrated, with explanations.

Classes (`FINE_CLASSES`): none, the lesser harms (profanity-only, harassment, sexual) and the hateful ones
(hate, dehumanisation, threat). Hateful means aimed at a protected group; the lesser harms are not hate
(swearing at a film is not hate, an insult to one person is harassment), so they never raise P(hateful),
and the policy can act on each category separately.

* `score(texts) -> (P(hateful), categories)`: P(hateful) is the hateful classes' probability mass, Platt-
  calibrated on validation (`calibration`); `threshold` on it was chosen on validation. A text's category
  is its most likely hateful class, unless P(hateful) is below the threshold and the lesser classes'
  mass reaches `lesser_threshold`: then it is the most likely lesser class (a flag the policy may act on).
* `explain(texts, categories)`: the words that drove the category. Frozen backbone: each word's exact
  share of the category's logit over "none" (`token_spans`: a linear head on mean-pooled token states is
  a sum over tokens), from one forward pass; `score_explain` gives scores and spans of the same pass, so
  explaining a request text costs nothing beyond scoring it. Fine-tuned backbone: occlusion
  (audit/harm_explain.py), one pass of up to 33 variants per text.
* Backbones (`backbone`): "finetuned" - the whole MiniLM fine-tuned with the 7-way head (safetensors);
  "frozen" - the shipped MiniLM frozen, mean-pooled, and a logistic-regression head (npy). Both read text
  through `audit.harm.normalise` + `deobfuscate`.

Saved as `harm_model.json` + safetensors / npy; nothing is unpickled.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audit import harm_categories as categories
from audit.harm import deobfuscate, normalise
from audit.harm_explain import MAX_SPAN_WORDS, REL_DROP
from audit.harm_explain import explain as occlusion_explain

FINE_CLASSES = ("none", "profanity-only", "harassment", "sexual", "hate", "dehumanisation", "threat")
HATEFUL_IDX = (4, 5, 6)
LESSER_IDX = (1, 2, 3)
HATEFUL_CATEGORIES = tuple(FINE_CLASSES[i] for i in HATEFUL_IDX)
LESSER_CATEGORIES = tuple(FINE_CLASSES[i] for i in LESSER_IDX)
assert set(HATEFUL_CATEGORIES) == set(categories.HATEFUL_CATEGORIES)
assert set(LESSER_CATEGORIES) == set(categories.LESSER_CATEGORIES)
PARAMS_FILE = "harm_model.json"
#: A word is in a token-decomposition span when its share of the category's logit over "none" is at least
#: this (in logits; 0.1 moves a probability near 0.5 by about 2.5 points) and at least REL_DROP of the top
#: word's share; at most MAX_SPAN_WORDS words.
MIN_WORD_LOGIT = 0.1
_WORD = re.compile(r"\S+")
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

    def score_explain(self, texts: list[str]) -> tuple[np.ndarray, list[str], list[list[str]]]:
        """`score(texts)` and the words that drove each text's category (see `explain`), from one forward
        pass for the frozen backbone (the fine-tuned one adds its occlusion passes)."""
        texts = list(texts)
        if self.backbone != "frozen" or not texts:
            p, cats = self.score(texts)
            return p, cats, self.explain(texts, cats)
        prepared = prepare(texts)
        X, token_scores = self.model.encode_token_scores(prepared, self.head_coef, max_length=self.max_length,
                                                         batch_size=self.batch_size)
        p, _, cats = self.decide(softmax(X.astype(np.float64) @ self.head_coef.T + self.head_intercept))
        spans = [self.explanations.get(t) for t in texts]
        todo = [i for i, sp in enumerate(spans) if sp is None]
        if todo:
            for i, span in zip(todo, self.token_spans([texts[i] for i in todo], [prepared[i] for i in todo],
                                                      [token_scores[i] for i in todo], [cats[i] for i in todo])):
                spans[i] = span
        return p, cats, spans

    def token_spans(self, texts: list[str], prepared: list[str], token_scores: list[np.ndarray],
                    categories: list[str]) -> list[list[str]]:
        """The words whose tokens raised the category's logit over "none" most (token-decomposition).

        `token_scores[i]` is (tokens, 7): each token's share of the 7 logits (TextEncoder.encode_token_scores).
        Words are the whitespace words of the prepared text the model read; each is reported as it is
        written in the original text when a word there prepares to it ("Immigrants", "h0e"), else as read."""
        enc = self.model.tokenizer(prepared, truncation=True, max_length=self.max_length,
                                   return_offsets_mapping=True, return_attention_mask=False,
                                   return_token_type_ids=False)
        out = []
        for text, prep, scores, cat, offsets in zip(texts, prepared, token_scores, categories,
                                                    enc["offset_mapping"]):
            k = FINE_CLASSES.index(cat) if cat in FINE_CLASSES else 0
            contrib = scores[:, k] - scores[:, 0]
            words = [(m.start(), m.end()) for m in _WORD.finditer(prep)]
            if not words or k == 0:
                out.append([])
                continue
            starts = np.array([a for a, _ in words])
            share = np.zeros(len(words))
            for (a, b), c in zip(offsets, contrib):
                if b > a:       # special tokens have empty offsets
                    share[int(np.searchsorted(starts, a, side="right")) - 1] += c
            top = float(share.max())
            if top < MIN_WORD_LOGIT:
                out.append([])
                continue
            keep = [j for j in np.argsort(-share, kind="stable")[:MAX_SPAN_WORDS]
                    if share[j] >= max(MIN_WORD_LOGIT, REL_DROP * top)]
            as_written = _as_written(text)
            out.append([as_written.get(w, w) for w in (_strip(prep[words[j][0]:words[j][1]]) for j in sorted(keep))])
        return out

    def explain(self, texts: list[str], categories: list[str]) -> list[list[str]]:
        """The words that drove each text's category: the stored ones (catalog texts), else token-
        decomposition (frozen backbone, one forward pass) or occlusion (fine-tuned backbone)."""
        out: list[list[str] | None] = [self.explanations.get(t) for t in texts]
        todo = [i for i, o in enumerate(out) if o is None]
        if self.backbone == "frozen" and todo:
            sub = [texts[i] for i in todo]
            prepared = prepare(sub)
            _, token_scores = self.model.encode_token_scores(prepared, self.head_coef, max_length=self.max_length,
                                                             batch_size=self.batch_size)
            for i, span in zip(todo, self.token_spans(sub, prepared, token_scores, [categories[i] for i in todo])):
                out[i] = span
            return [o or [] for o in out]
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


def _strip(word: str) -> str:
    return word.strip(".,;:!?\"'()[]{}") or word


def _as_written(text: str) -> dict[str, str]:
    """Each word of `text` keyed by what `prepare` makes of it, first occurrence first."""
    out: dict[str, str] = {}
    for w in _WORD.findall(text):
        out.setdefault(_strip(deobfuscate(normalise(w))), _strip(w))
    return out


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
