"""Fine-tuned BERT harm classifier (hate / offensive / neither), the successor of the n-gram one.

A `AutoModelForSequenceClassification` (3 labels) fine-tuned from the shipped all-MiniLM-L6-v2 on
the Davidson set (`python -m audit.train_harm`). Its output is calibrated: logits are divided by a
temperature fitted on the validation split (minimum NLL) before the softmax. The decision
threshold is on P(harmful) = P(hate) + P(offensive), chosen on validation (maximum F1 of
harmful-vs-neither, then raised if needed so that at most `max_benign_flag_rate` of each set of
benign catalog strings is flagged).

Same interface as `audit.harm.HarmClassifier`: `score(texts) -> (P(harmful), categories)`,
`.threshold`, `.metrics`, `predict_proba`. Every text goes through `normalise` + `deobfuscate`
first ("f u c k", "b!tch", "fuuuck" reach the model as the plain word). Inference: texts sorted by
token length, each batch padded to its own longest text (dynamic padding), `torch.inference_mode`,
bf16 autocast on CUDA. Saved as `save_pretrained(safe_serialization=True)` + tokenizer +
`harm_bert.json` (temperature, threshold, metrics, split); nothing is unpickled.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from audit.harm import CLASSES, HARM_CATEGORIES, deobfuscate, normalise
from recsys.classifier_inference import classifier_logits
from recsys.device import autocast, pick_device

PARAMS_FILE = "harm_bert.json"
MAX_LENGTH = 64

# --- identity-group probes (benign sentences) --------------------------------------------------
IDENTITY_GROUPS = ("gay", "lesbian", "bisexual", "trans", "black", "white", "asian", "latino", "muslim", "jewish",
                   "christian", "disabled", "immigrant", "woman", "man", "old")
# Training augmentation (counterfactual 'neither' examples) and evaluation use DISJOINT templates,
# so the evaluation measures generalisation to unseen benign sentences, not memorisation.
TRAIN_TEMPLATES = ("i am a proud {g} person", "my neighbour is {g}", "we had dinner with a {g} family",
                   "she is {g} and a great teacher", "being {g} is part of who i am",
                   "the {g} community organised a food drive", "he is {g} and loves football",
                   "my coworker is {g}")
EVAL_TEMPLATES = ("i am a {g} person", "{g} people are my neighbours", "my friend is {g}",
                  "i am {g} and i like movies", "my sister married a {g} person", "our new doctor is {g}")


def identity_texts(templates: tuple[str, ...] = EVAL_TEMPLATES,
                   groups: tuple[str, ...] = IDENTITY_GROUPS) -> tuple[list[str], list[str]]:
    texts, grp = [], []
    for g in groups:
        for t in templates:
            texts.append(t.format(g=g))
            grp.append(g)
    return texts, grp


# --- splits -------------------------------------------------------------------------------------
def split_indices(labels: np.ndarray, seed: int = 0, test_frac: float = 0.1,
                  val_frac: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified train / validation / test row indices (sorted), reproducible from the seed."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    rest, test = train_test_split(idx, test_size=test_frac, stratify=labels, random_state=seed)
    train, val = train_test_split(rest, test_size=val_frac / (1 - test_frac), stratify=labels[rest],
                                  random_state=seed)
    return np.sort(train), np.sort(val), np.sort(test)


def stratified_subsample(idx: np.ndarray, labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    if n is None or n >= len(idx):
        return idx
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(idx, train_size=n, stratify=labels[idx], random_state=seed)
    return np.sort(keep)


# --- calibration and threshold ------------------------------------------------------------------
def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    p = softmax(logits, temperature)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature T > 0 minimising the NLL of softmax(logits / T) (validation logits)."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(lambda lt: nll(logits, y, math.exp(lt)), bounds=(math.log(0.05), math.log(20.0)),
                          method="bounded", options={"xatol": 1e-4})
    return float(math.exp(res.x))


def expected_calibration_error(p_pos: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p_pos, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(p_pos[m].mean() - y[m].mean())
    return float(ece)


def choose_threshold(p_harm: np.ndarray, y_harm: np.ndarray, benign: dict[str, np.ndarray] | None = None,
                     max_benign_flag_rate: float = 0.004) -> tuple[float, dict]:
    """Maximise validation F1 (harmful vs neither) over a grid, then raise the threshold until at most
    `max_benign_flag_rate` of each benign set's scores reach it. Returns (threshold, details)."""
    from sklearn.metrics import f1_score

    from audit.harm_threshold import choose_threshold as choose

    grid = np.round(np.linspace(0.05, 0.99, 95), 4)
    threshold, best, f1_best, raised_by = choose(
        grid, lambda t: f1_score(y_harm, (p_harm >= t).astype(int), zero_division=0),
        {k: (v, max_benign_flag_rate) for k, v in (benign or {}).items()})
    details = {"f1_best_threshold": best, "val_f1_at_best": f1_best, "raised_by": raised_by,
               "max_benign_flag_rate": max_benign_flag_rate,
               "val_f1_at_threshold": float(f1_score(y_harm, (p_harm >= threshold).astype(int), zero_division=0)),
               "benign_flag_rate": {k: float((v >= threshold).mean()) for k, v in (benign or {}).items()}}
    return float(threshold), details


# --- the classifier -----------------------------------------------------------------------------
@dataclass
class BertHarmClassifier:
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    temperature: float = 1.0
    threshold: float = 0.5
    metrics: dict = field(default_factory=dict)
    split: dict = field(default_factory=dict)
    max_length: int = MAX_LENGTH
    batch_size: int = 64

    kind = "bert"

    @classmethod
    def from_base(cls, path: str | Path, device: str = "auto", seed: int = 0) -> "BertHarmClassifier":
        """A BERT encoder checkpoint with a fresh 3-way head (initialised from `seed`)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        hf_logging.disable_progress_bar()
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        torch.manual_seed(seed)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()     # "newly initialized: classifier.*" is expected
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=len(CLASSES), id2label=dict(enumerate(CLASSES)),
                label2id={c: i for i, c in enumerate(CLASSES)}, local_files_only=True, use_safetensors=True)
        finally:
            hf_logging.set_verbosity(verbosity)
        dev = pick_device(device)
        return cls(model.to(dev).eval(), tok, dev)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> "BertHarmClassifier":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        hf_logging.disable_progress_bar()
        path = Path(path)
        params = json.loads((path / PARAMS_FILE).read_text())
        if tuple(params.get("classes", ())) != CLASSES:
            raise ValueError(f"{path}: classes {params.get('classes')} are not {list(CLASSES)}")
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True, use_safetensors=True)
        if model.config.num_labels != len(CLASSES):
            raise ValueError(f"{path}: a harm classifier has num_labels=3; got {model.config.num_labels}")
        dev = pick_device(device)
        return cls(model.to(dev).eval(), tok, dev, float(params["temperature"]), float(params["threshold"]),
                   params.get("metrics", {}), params.get("split", {}), int(params.get("max_length", MAX_LENGTH)))

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        (path / PARAMS_FILE).write_text(json.dumps({
            "kind": "bert-sequence-classification", "classes": list(CLASSES), "temperature": self.temperature,
            "threshold": self.threshold, "max_length": self.max_length, "preprocessing": "normalise+deobfuscate",
            "metrics": self.metrics, "split": self.split}, indent=2))

    @staticmethod
    def prepare(texts: list[str]) -> list[str]:
        return [deobfuscate(normalise(t)) for t in texts]

    def _batch(self, texts: list[str]) -> dict:
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                              return_tensors="pt").to(self.device)

    def train_logits(self, texts: list[str]) -> torch.Tensor:
        """Differentiable forward pass on prepared texts (training)."""
        with autocast(self.device):
            return self.model(**self._batch(texts)).logits.float()

    def logits(self, texts: list[str], *, batch_size: int | None = None) -> np.ndarray:
        """(n, 3) raw logits (float64). Inference mode; sorted by token length, dynamic padding."""
        if not texts:
            return np.zeros((0, len(CLASSES)), dtype=np.float64)
        bs = batch_size or self.batch_size
        prepared = self.prepare(list(texts))
        enc = self.tokenizer(prepared, truncation=True, max_length=self.max_length)
        return classifier_logits(self.model, self.tokenizer, enc, batch_size=bs, device=self.device)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """(n, 3) calibrated probabilities in CLASSES order: softmax(logits / temperature)."""
        return softmax(self.logits(texts), self.temperature)

    def score(self, texts: list[str]) -> tuple[np.ndarray, list[str]]:
        """P(harmful) = P(hate) + P(offensive), and the more likely harm category of each text."""
        p = self.predict_proba(list(texts))
        harm = p[:, 0] + p[:, 1]
        cats = [HARM_CATEGORIES[int(np.argmax(row[:2]))] for row in p]
        return harm, cats


# --- fine-tuning --------------------------------------------------------------------------------
def fine_tune(clf: BertHarmClassifier, texts: list[str], labels: np.ndarray, *, epochs: int = 1,
              batch_size: int = 32, lr: float = 5e-5, seed: int = 0, max_steps: int | None = None,
              progress: bool = False, log=None) -> dict:
    """Cross-entropy fine-tuning (AdamW, linear warm-up 10 % then linear decay). Returns a summary."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    prepared = clf.prepare(list(texts))
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    n = len(prepared)
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    total = steps_per_epoch * epochs if max_steps is None else min(max_steps, steps_per_epoch * epochs)
    opt = torch.optim.AdamW(clf.model.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, int(0.1 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    clf.model.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    step = 0
    try:
        for _ in range(epochs):
            perm = rng.permutation(n)
            for s in range(0, n, batch_size):
                if step >= total:
                    break
                idx = perm[s:s + batch_size]
                logits = clf.train_logits([prepared[i] for i in idx])
                loss = torch.nn.functional.cross_entropy(logits, y[idx].to(clf.device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(clf.model.parameters(), 1.0)
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                step += 1
                if log is not None and (step % 20 == 0 or step == total):
                    el = time.perf_counter() - t0
                    log(f"step {step}/{total} loss {np.mean(losses[-20:]):.3f} "
                        f"({el:.0f}s, eta {el / step * (total - step):.0f}s)")
    finally:
        clf.model.eval()
    k = max(1, len(losses) // 10)
    return {"steps": step, "n_train": n, "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "loss_first": float(np.mean(losses[:k])) if losses else None,
            "loss_last": float(np.mean(losses[-k:])) if losses else None,
            "seconds": round(time.perf_counter() - t0, 1)}


def calibrate_and_threshold(clf: BertHarmClassifier, val_texts: list[str], val_labels: np.ndarray,
                            benign: dict[str, list[str]] | None = None,
                            max_benign_flag_rate: float = 0.004,
                            benign_logits: dict[str, np.ndarray] | None = None) -> dict:
    """Fit the temperature on validation, then choose the threshold (sets both on `clf`).

    `benign` texts (or their precomputed `benign_logits`) are the sets the false-positive cap applies to."""
    from sklearn.metrics import f1_score, roc_auc_score

    y = np.asarray(val_labels)
    lg = clf.logits(val_texts)
    clf.temperature = fit_temperature(lg, y)
    p = softmax(lg, clf.temperature)
    p_harm = p[:, 0] + p[:, 1]
    y_harm = (y != 2).astype(int)
    benign_logits = dict(benign_logits or {})
    benign_logits.update({k: clf.logits(v) for k, v in (benign or {}).items()})
    benign_scores = {k: softmax(v, clf.temperature)[:, :2].sum(1) for k, v in benign_logits.items()}
    clf.threshold, details = choose_threshold(p_harm, y_harm, benign_scores, max_benign_flag_rate)
    out = {"temperature": clf.temperature, "val_nll_raw": nll(lg, y), "val_nll_calibrated": nll(lg, y, clf.temperature),
           "val_ece_harmful_raw": expected_calibration_error(softmax(lg)[:, :2].sum(1), y_harm),
           "val_ece_harmful_calibrated": expected_calibration_error(p_harm, y_harm),
           "val_auc": float(roc_auc_score(y_harm, p_harm)) if 0 < y_harm.sum() < len(y_harm) else None,
           "val_macro_f1_3class": float(f1_score(y, p.argmax(1), average="macro")),
           "n_val": int(len(y)), **details}
    return out
