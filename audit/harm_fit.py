"""Training the shipped harm classifier (audit/harm_model.py): `fit_harm_model`, the one call recsys.train makes.

Data: the Davidson tweets (80/10/10 stratified split, seed 0: train / validation / a test split no model
selection looks at) plus the functional suite's TRAIN templates over its training groups (audit/harm_suite).
The suite's held-out templates and groups, and HateCheck, are never read here. The train templates are split
again, by template, into fitting and validation templates, so validation also measures unseen wording.

Labels: Davidson "hate" -> hate, "neither" -> none, "offensive" -> spread evenly over the lesser classes
(profanity-only, harassment, sexual: the tweets are all three and the label does not say which); suite cases
carry their functionality's category. Each suite functionality gets the same total weight, and the suite as a
whole `suite_weight` times the Davidson rows' weight, so neither a large functionality nor Davidson's size
decides what "hate" means. The suite puts every group in hateful AND benign sentences, so a group mention is
not evidence either way (the trap of benign-only identity augmentation), and swearing appears in benign
sentences, so profanity is not hate.

Calibration and thresholds come from validation only (Davidson validation rows + suite validation templates,
the two weighted equally): Platt scaling of P(hateful); the threshold maximises the mean of the two macro-F1s,
then is raised, if needed, until at most `max_benign_flag_rate` of each benign set (catalog texts, MovieLens
titles, tags) is flagged and at most `max_identity_fpr` of the validation identity sentences.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from audit.harm_model import FINE_CLASSES, HATEFUL_IDX, LESSER_IDX, HarmModel, fit_platt, platt, softmax
from audit.harm_suite import Suite, load_suite
from audit.harm_threshold import choose_threshold

#: Train templates whose index (within their functionality) is 3 mod 4 are validation templates.
VAL_TEMPLATE_EVERY = 4
PROFILES = {
    # quick: the `recsys.train --quick` / `make run` profile, minutes on 2 CPU cores
    "quick": dict(backbone="frozen", max_rows=4000, max_val_rows=1000),   # = fit_artifact_harm(max_rows=4000)
    # full: every Davidson training row (CPU: encoding ~25k tweets; a GPU is faster: --device cuda)
    "full": dict(backbone="frozen", max_rows=None, max_val_rows=None),
}


def split_suite(suite: Suite) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fitting cases, validation cases) of the suite's train templates over its training groups."""
    cases = suite.cases("train")
    index = cases["template_id"].str.rsplit("/", n=1).str[1].astype(int)
    val = index % VAL_TEMPLATE_EVERY == VAL_TEMPLATE_EVERY - 1
    return cases[~val].reset_index(drop=True), cases[val].reset_index(drop=True)


def _fine_index(category: str) -> int:
    return 0 if category == "none" else FINE_CLASSES.index(category)


def davidson_targets(labels: np.ndarray) -> np.ndarray:
    """(n, 7) soft targets of Davidson classes (0 hate, 1 offensive, 2 neither)."""
    t = np.zeros((len(labels), len(FINE_CLASSES)))
    t[labels == 0, FINE_CLASSES.index("hate")] = 1.0
    t[labels == 2, 0] = 1.0
    off = labels == 1
    for k in LESSER_IDX:
        t[off, k] = 1.0 / len(LESSER_IDX)
    return t


def suite_targets(cases: pd.DataFrame, total_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """(n, 7) one-hot targets and per-case weights: each functionality sums to the same weight."""
    t = np.zeros((len(cases), len(FINE_CLASSES)))
    t[np.arange(len(cases)), [_fine_index(c) for c in cases["category"]]] = 1.0
    counts = cases["functionality"].map(cases["functionality"].value_counts()).to_numpy(dtype=np.float64)
    w = 1.0 / counts
    return t, w / w.sum() * total_weight


def _stratified(idx: np.ndarray, labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    from audit.harm_bert import stratified_subsample

    return stratified_subsample(idx, labels, n, seed)


def _macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, pred, average="macro", zero_division=0))


def choose_thresholds(p_val: list[tuple[np.ndarray, np.ndarray]], benign: dict[str, np.ndarray],
                      identity: np.ndarray, *, max_benign_flag_rate: float, max_identity_fpr: float
                      ) -> tuple[float, dict]:
    """Threshold on calibrated P(hateful): best mean macro-F1 over the validation sources, then raised until
    every benign set and the identity sentences are within their caps."""
    caps = {k: (v, max_benign_flag_rate) for k, v in benign.items() if len(v)}
    if len(identity):
        caps["validation_identity_sentences"] = (identity, max_identity_fpr)
    threshold, best, f1_best, raised_by = choose_threshold(
        np.round(np.arange(0.02, 0.995, 0.01), 4), lambda t: np.mean([_macro_f1(y, p >= t) for p, y in p_val]), caps)
    at = float(np.mean([_macro_f1(y, p >= threshold) for p, y in p_val]))
    return threshold, {"f1_best_threshold": best, "val_mean_macro_f1_at_best": f1_best,
                       "val_mean_macro_f1_at_threshold": at, "raised_by": raised_by,
                       "flag_rate": {k: float((v >= threshold).mean()) for k, (v, _) in caps.items()}}


def choose_lesser_threshold(p_lesser: np.ndarray, y_lesser: np.ndarray, benign: dict[str, np.ndarray],
                            max_rate: float) -> tuple[float, dict]:
    """Threshold on P(lesser harm): best validation F1 of lesser-vs-none, raised until at most `max_rate` of
    each benign set would carry a lesser flag."""
    from sklearn.metrics import f1_score

    threshold, best, f1_best, raised_by = choose_threshold(
        np.round(np.arange(0.05, 0.995, 0.01), 4), lambda t: f1_score(y_lesser, p_lesser >= t, zero_division=0),
        {k: (v, max_rate) for k, v in benign.items()})
    return threshold, {"f1_best_threshold": best, "val_f1_at_best": f1_best, "raised_by": raised_by,
                       "val_f1_at_threshold": float(f1_score(y_lesser, p_lesser >= threshold, zero_division=0))}


class _Memo:
    """Probabilities of texts already scored while fitting (the catalog), so recsys.train's scoring of the
    same catalog right after does not run the model a second time."""

    def __init__(self, model: HarmModel) -> None:
        self.model, self.store = model, {}
        self._inner = model.predict_proba

    def __call__(self, texts: list[str]) -> np.ndarray:
        texts = list(texts)
        todo = list(dict.fromkeys(t for t in texts if t not in self.store))
        if todo:
            for t, row in zip(todo, softmax(self.model.logits(todo))):
                self.store[t] = row
        return np.array([self.store[t] for t in texts]).reshape(len(texts), len(FINE_CLASSES))


def fit_harm_model(data: str | Path, *, encoder_path: str | Path, benign: dict[str, list[str]] | None = None,
                   profile: str = "quick", backbone: str | None = None, max_rows: int | None | str = "profile",
                   max_val_rows: int | None | str = "profile", suite: Suite | None = None, suite_weight: float = 1.0,
                   max_benign_flag_rate: float = 0.004, max_identity_fpr: float = 0.02,
                   max_lesser_flag_rate: float = 0.01, epochs: int = 2, lr: float = 5e-5, batch_size: int = 32,
                   C: float = 1.0, seed: int = 0, device: str = "cpu", explain_sets: tuple[str, ...] = ("catalog_texts",),
                   log: Callable[[str], None] | None = None) -> HarmModel:
    """Train, calibrate and threshold the harm classifier; `benign` maps a name to benign texts (catalog
    texts, MovieLens titles, tags) the false-positive caps apply to. The returned model's `.score` of the
    `explain_sets` texts is memoised and their flagged texts' explanations are stored with the model."""
    from audit.harm import load_davidson
    from audit.harm_bert import split_indices

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}; got {profile!r}")
    prof = PROFILES[profile]
    backbone = backbone or prof["backbone"]
    max_rows = prof["max_rows"] if max_rows == "profile" else max_rows
    max_val_rows = prof["max_val_rows"] if max_val_rows == "profile" else max_val_rows
    say = log or (lambda _m: None)
    t0 = time.perf_counter()
    df = load_davidson(Path(data))
    labels = df["label"].to_numpy()
    if len(df) < 50 or len(set(labels.tolist())) < 3:
        raise ValueError(f"harm data {data} has {len(df)} rows and classes {sorted(set(labels.tolist()))}: "
                         "need all three Davidson classes")
    if not set(labels.tolist()) <= {0, 1, 2}:
        raise ValueError(f"harm data {data}: unknown class values {sorted(set(labels.tolist()) - {0, 1, 2})}")
    tr, va, te = split_indices(labels, seed=seed)
    tr = _stratified(tr, labels, max_rows, seed)
    va = _stratified(va, labels, max_val_rows, seed)
    suite = suite or load_suite()
    fit_cases, val_cases = split_suite(suite)
    if fit_cases.empty or val_cases.empty:
        raise ValueError("the harm suite has no fitting or no validation templates")
    texts = df["text"].tolist()
    d_targets = davidson_targets(labels[tr])
    s_targets, s_weights = suite_targets(fit_cases, suite_weight * len(tr))
    train_texts = [texts[i] for i in tr] + fit_cases["text"].tolist()
    targets = np.vstack([d_targets, s_targets])
    weights = np.concatenate([np.ones(len(tr)), s_weights])
    say(f"harm: {backbone} MiniLM on {len(tr)} Davidson rows + {len(fit_cases)} suite cases "
        f"({fit_cases['template_id'].nunique()} templates); validation {len(va)} rows + {len(val_cases)} cases")
    if backbone == "frozen":
        model = _fit_frozen(encoder_path, train_texts, targets, weights, C=C, device=device, seed=seed)
    elif backbone == "finetuned":
        model = _fit_finetuned(encoder_path, train_texts, targets, weights, epochs=epochs, lr=lr,
                               batch_size=batch_size, device=device, seed=seed, log=say)
    else:
        raise ValueError(f"backbone must be 'frozen' or 'finetuned'; got {backbone!r}")
    memo = _Memo(model)
    model.predict_proba = memo            # instance attribute: catalog texts scored once
    t_fit = time.perf_counter() - t0

    # --- calibration on validation ---
    pv_d = model.predict_proba([texts[i] for i in va])
    pv_s = model.predict_proba(val_cases["text"].tolist())
    yv_d = (labels[va] == 0).astype(int)
    yv_s = val_cases["label"].to_numpy().astype(int)
    raw = np.concatenate([pv_d[:, HATEFUL_IDX].sum(1), pv_s[:, HATEFUL_IDX].sum(1)])
    yv = np.concatenate([yv_d, yv_s])
    wv = np.concatenate([np.full(len(yv_d), 0.5 / len(yv_d)), np.full(len(yv_s), 0.5 / len(yv_s))])
    model.calibration = fit_platt(raw, yv, wv)
    cal = platt(raw, *model.calibration)
    ph_d, ph_s = cal[:len(yv_d)], cal[len(yv_d):]

    # --- thresholds ---
    benign = {k: list(v) for k, v in (benign or {}).items()}
    benign_proba = {k: model.predict_proba(v) for k, v in benign.items()}
    benign_hate = {k: platt(v[:, HATEFUL_IDX].sum(1), *model.calibration) for k, v in benign_proba.items()}
    ident = val_cases["functionality"].isin(["identity_neutral", "identity_positive"]).to_numpy()
    model.threshold, t_details = choose_thresholds([(ph_d, yv_d), (ph_s, yv_s)], benign_hate, ph_s[ident],
                                                   max_benign_flag_rate=max_benign_flag_rate,
                                                   max_identity_fpr=max_identity_fpr)
    # lesser harms: Davidson offensive vs neither, suite lesser functionalities vs benign ones
    nd = labels[va] != 0
    ns = yv_s == 0
    p_less = np.concatenate([pv_d[nd][:, LESSER_IDX].sum(1), pv_s[ns][:, LESSER_IDX].sum(1)])
    y_less = np.concatenate([(labels[va][nd] == 1).astype(int),
                             val_cases["category"].to_numpy()[ns] != "none"]).astype(int)
    model.lesser_threshold, l_details = choose_lesser_threshold(
        p_less, y_less, {k: v[:, LESSER_IDX].sum(1) for k, v in benign_proba.items()}, max_lesser_flag_rate)

    # --- explanations of the flagged catalog texts ---
    stored = {}
    for name in explain_sets:
        xs = benign.get(name, [])
        if not xs:
            continue
        p, cats = model.score(xs)
        from audit.harm_model import LESSER_CATEGORIES

        flagged = [i for i, (pi, c) in enumerate(zip(p, cats)) if pi >= model.threshold or c in LESSER_CATEGORIES]
        for i, span in zip(flagged, model.explain([xs[i] for i in flagged], [cats[i] for i in flagged])):
            stored[xs[i]] = span
    model.explanations = stored
    from sklearn.metrics import roc_auc_score

    model.metrics = {
        "backbone": backbone, "profile": profile, "encoder": str(encoder_path),
        "n_train_davidson": int(len(tr)), "n_train_suite": int(len(fit_cases)),
        "n_val_davidson": int(len(va)), "n_val_suite": int(len(val_cases)), "n_test_davidson_untouched": int(len(te)),
        "suite_fit_templates": int(fit_cases["template_id"].nunique()),
        "suite_val_templates": int(val_cases["template_id"].nunique()),
        "val_auc_davidson_hate": float(roc_auc_score(yv_d, ph_d)),
        # harmful (hate or offensive) vs neither, on P(not none): what the n-gram model's val_auc measured
        "val_auc_davidson_harmful": float(roc_auc_score(labels[va] != 2, 1.0 - pv_d[:, 0])),
        "val_auc_suite": float(roc_auc_score(yv_s, ph_s)),
        "calibration": {"platt": list(model.calibration), "val_ece_raw": _ece(raw, yv, wv),
                        "val_ece_calibrated": _ece(cal, yv, wv)},
        "threshold": model.threshold, "threshold_details": t_details,
        "lesser_threshold": model.lesser_threshold, "lesser_details": l_details,
        "n_explanations_stored": len(stored),
        "seconds_fit": round(t_fit, 1), "seconds_total": round(time.perf_counter() - t0, 1),
        "split": {"seed": seed, "test_frac": 0.1, "val_frac": 0.1, "max_rows": max_rows,
                  "max_val_rows": max_val_rows, "val_template_every": VAL_TEMPLATE_EVERY},
    }
    say(f"harm: threshold {model.threshold:.3f} (raised by {t_details['raised_by']}), lesser "
        f"{model.lesser_threshold:.3f}; validation AUC Davidson hate {model.metrics['val_auc_davidson_hate']:.3f}, "
        f"harmful {model.metrics['val_auc_davidson_harmful']:.3f}, "
        f"suite {model.metrics['val_auc_suite']:.3f}; {model.metrics['seconds_total']:.0f}s")
    return model


def _ece(p: np.ndarray, y: np.ndarray, w: np.ndarray, bins: int = 10) -> float:
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += w[m].sum() * abs(np.average(p[m], weights=w[m]) - np.average(y[m], weights=w[m]))
    return float(total / w.sum())


def _fit_frozen(encoder_path, texts: list[str], targets: np.ndarray, weights: np.ndarray, *, C: float,
                device: str, seed: int) -> HarmModel:
    """Multinomial logistic regression on frozen mean-pooled MiniLM vectors; soft targets become weighted
    duplicate rows (one per class with mass)."""
    from sklearn.linear_model import LogisticRegression

    from audit.harm_model import MAX_LENGTH, prepare
    from recsys.encoder import TextEncoder

    enc = TextEncoder.load(encoder_path, device=device)
    X = enc.encode(prepare(texts), max_length=MAX_LENGTH)
    rows, cls = np.nonzero(targets)
    w = weights[rows] * targets[rows, cls]
    lr = LogisticRegression(C=C, max_iter=3000, random_state=seed)
    lr.fit(X[rows], cls, sample_weight=w / w.mean())
    coef = np.zeros((len(FINE_CLASSES), X.shape[1]))
    intercept = np.full(len(FINE_CLASSES), -30.0)      # a class absent from training gets no mass
    coef[lr.classes_] = lr.coef_
    intercept[lr.classes_] = lr.intercept_
    return HarmModel("frozen", enc, None, enc.device, head_coef=coef, head_intercept=intercept)


def _fit_finetuned(encoder_path, texts: list[str], targets: np.ndarray, weights: np.ndarray, *, epochs: int,
                   lr: float, batch_size: int, device: str, seed: int, log) -> HarmModel:
    """The whole MiniLM fine-tuned with a 7-way head: soft-target cross-entropy, rows drawn in proportion
    to their weight (AdamW, linear warm-up then decay)."""
    import torch

    from audit.harm_model import MAX_LENGTH, load_sequence_classifier, prepare
    from recsys.device import autocast, pick_device

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model, tok = load_sequence_classifier(encoder_path, num_labels=len(FINE_CLASSES))
    dev = pick_device(device)
    model.to(dev)
    prepared = prepare(texts)
    n = len(prepared)
    p = weights / weights.sum()
    y = torch.as_tensor(targets, dtype=torch.float32)
    steps = max(1, epochs * math.ceil(n / batch_size))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    model.train()
    t0 = time.perf_counter()
    try:
        for step in range(steps):
            idx = rng.choice(n, size=min(batch_size, n), replace=True, p=p)
            batch = tok([prepared[i] for i in idx], padding=True, truncation=True, max_length=MAX_LENGTH,
                        return_tensors="pt").to(dev)
            with autocast(dev):
                logits = model(**batch).logits.float()
            loss = torch.nn.functional.cross_entropy(logits, y[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if (step + 1) % 50 == 0 or step + 1 == steps:
                el = time.perf_counter() - t0
                log(f"harm fine-tuning step {step + 1}/{steps} loss {float(loss):.3f} ({el:.0f}s)")
    finally:
        model.eval()
    return HarmModel("finetuned", model, tok, dev)


def benign_sets_of(catalog) -> dict[str, list[str]]:
    """The benign strings of a catalog the false-positive caps cover: its item texts (what is scored and
    served), titles, and distinct tags."""
    tags = sorted({t.strip() for ts in catalog.tags for t in str(ts).split("|") if t.strip()})
    return {"catalog_texts": list(catalog.texts), "catalog_titles": list(catalog.titles), "catalog_tags": tags}


def fit_artifact_harm(data: str | Path, catalog, *, encoder_path: str | Path | None = None,
                      max_rows: int | None = None, seed: int = 0, device: str = "auto",
                      log: Callable[[str], None] | None = None) -> HarmModel:
    """What `recsys.train` trains: the harm model on `max_rows` Davidson training rows (None: all) + the
    suite's train templates, capped on the catalog's texts, titles and tags. Its encoder is the shipped
    all-MiniLM-L6-v2 unless `encoder_path` says otherwise: the harm check does not depend on which base the
    interest model was fine-tuned from. Scoring the catalog's texts afterwards costs no second model pass
    (memoised)."""
    from recsys.encoder import base_model_path

    model = fit_harm_model(data, encoder_path=encoder_path or base_model_path(), benign=benign_sets_of(catalog), max_rows=max_rows,
                           max_val_rows=None if max_rows is None else max(500, max_rows // 4), seed=seed,
                           device=device, log=log)
    # In distribution and the same quantity as the n-gram model's val_auc before it: Davidson validation rows,
    # harmful (hate or offensive) vs neither. Hate vs the rest is val_auc_davidson_hate.
    model.metrics["val_auc"] = model.metrics["val_auc_davidson_harmful"]
    return model
