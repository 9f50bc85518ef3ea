"""First harm classifier: character n-gram logistic regression trained on the
Davidson hate-speech set (hate / offensive / neither).

Character n-grams (hashed, so there is no vocabulary to store) survive
spacing, l33t and repeated letters better than word lists. Saved as JSON +
.npy and loaded without pickle. A fine-tuned BERT classifier is the planned
successor (its own issue); this one is real, fast and small.
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score

from audit.harm_threshold import choose_threshold

CLASSES = ("hate", "offensive", "neither")
HARM_CATEGORIES = CLASSES[:2]
_MENTION = re.compile(r"(?<!\w)@\w+[:]?")   # "@user", not the "@" of "f@ggot"
_URL = re.compile(r"https?://\S+")
_RT = re.compile(r"\bRT\b")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Strip tweet artefacts (mentions, URLs, RT, HTML entities) the catalog never has."""
    text = html.unescape(html.unescape(text))
    text = _URL.sub(" ", _MENTION.sub(" ", _RT.sub(" ", text)))
    text = re.sub(r"&#\d+;?", " ", text)
    return _SPACE.sub(" ", text).strip().lower()


_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i",
                       "|": "l", "+": "t"})
_MIXED = re.compile(r"\S*[a-z]\S*")            # a token with at least one letter
_SPACED = re.compile(r"(?<![a-z0-9])(?:[a-z0-9@$!][ ._\-*]){2,}[a-z0-9@$!](?![a-z0-9])")
_INNER_PUNCT = re.compile(r"(?<=[a-z0-9@$!])[_*`~^](?=[a-z0-9@$!])")
_REPEAT = re.compile(r"([a-z])\1{2,}")


def _unleet(token: str) -> str:
    core = token.strip(".,;:?\"'()[]{}")
    # only tokens that mix letters with leet symbols ("h0e", "b!tch", "a$$"); "1995", "12", "(2003)" stay
    if not core or not re.search(r"[a-z]", core) or not re.search(r"[0134579@$!|+]", core):
        return token
    if re.fullmatch(r"[a-z]+[!?.]+", core):    # plain word with trailing "!!!"
        return token
    return token.replace(core, core.translate(_LEET))


def deobfuscate(text: str) -> str:
    """Undo common obfuscations of (already `normalise`d, lower-case) text before a model sees it.

    spacing and separators between single characters ("f u c k", "f.u.c.k", "f-u-c-k") are joined,
    masking symbols inside words are dropped ("sh_it" -> "shit", "f*ck" -> "fck"; hyphens, dots and
    apostrophes inside words are kept: "sci-fi", "schindler's"), leet symbols in
    tokens that also hold letters are mapped ("h0e" -> "hoe", "b!tch" -> "bitch", "a$$" -> "ass"),
    and runs of three or more equal letters become one ("fuuuuck" -> "fuck"; "good" keeps its "oo").
    Pure numbers ("12 years a slave", "(1995)") are left alone. Known limits: a one-letter word right
    before a spaced-out word is joined into it ("a w o r t h l e s s" -> "aworthless"); a word that starts
    with "@" is read as a tweet @mention by `normalise` and removed; masks that hide letters ("f*ck")
    cannot be restored.
    """
    text = _SPACED.sub(lambda m: re.sub(r"[ ._\-*]", "", m.group(0)), text)
    text = _INNER_PUNCT.sub("", text)
    text = " ".join(_unleet(t) for t in text.split(" "))
    text = _REPEAT.sub(r"\1", text)
    return _SPACE.sub(" ", text).strip()


def _vectorizer(n_features: int) -> HashingVectorizer:
    return HashingVectorizer(analyzer="char_wb", ngram_range=(2, 5), n_features=n_features,
                             alternate_sign=False, norm="l2", lowercase=False)


@dataclass
class HarmClassifier:
    coef: np.ndarray          # (n_classes, n_features) float32
    intercept: np.ndarray     # (n_classes,)
    threshold: float          # on P(harmful) = 1 - P(neither)
    n_features: int
    metrics: dict

    def __post_init__(self) -> None:
        self._vec = _vectorizer(self.n_features)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """(n, 3) probabilities in CLASSES order."""
        if not texts:
            return np.zeros((0, len(CLASSES)))
        X = self._vec.transform([normalise(t) for t in texts])
        logits = np.asarray(X @ self.coef.T) + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def score(self, texts: list[str]) -> tuple[np.ndarray, list[str]]:
        """P(harmful) and the more likely harm category of each text."""
        p = self.predict_proba(texts)
        harm = 1.0 - p[:, 2]
        cats = [HARM_CATEGORIES[int(np.argmax(row[:2]))] for row in p]
        return harm, cats

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "coef.npy", self.coef.astype(np.float32), allow_pickle=False)
        np.save(path / "intercept.npy", self.intercept.astype(np.float64), allow_pickle=False)
        (path / "params.json").write_text(json.dumps({
            "kind": "char-ngram-logreg", "classes": list(CLASSES), "threshold": self.threshold,
            "n_features": self.n_features, "metrics": self.metrics}, indent=2))

    @classmethod
    def load(cls, path: Path) -> "HarmClassifier":
        params = json.loads((path / "params.json").read_text())
        return cls(np.load(path / "coef.npy", allow_pickle=False),
                   np.load(path / "intercept.npy", allow_pickle=False),
                   float(params["threshold"]), int(params["n_features"]), params.get("metrics", {}))


def load_davidson(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    if not {"tweet", "class"} <= set(df.columns):
        raise ValueError(f"{path} is not the Davidson labeled_data.csv (needs columns tweet, class)")
    return pd.DataFrame({"text": df["tweet"].astype(str), "label": df["class"].astype(int)})


def train_harm_classifier(data: pd.DataFrame, *, benign_texts: list[str] | None = None,
                          max_benign_flag_rate: float = 0.004, n_features: int = 2 ** 18,
                          seed: int = 0) -> HarmClassifier:
    """Fit on 80 %, choose the threshold on the other 20 %.

    The threshold maximises validation F1 of harmful-vs-neither, then is raised
    if needed so that at most `max_benign_flag_rate` of `benign_texts` (e.g.
    catalog titles) are flagged: a classifier that removes "Kill Bill" is a harm too.
    """
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(data))
    cut = int(len(data) * 0.8)
    tr, va = data.iloc[perm[:cut]], data.iloc[perm[cut:]]
    vec = _vectorizer(n_features)
    Xtr = vec.transform([normalise(t) for t in tr["text"]])
    Xva = vec.transform([normalise(t) for t in va["text"]])
    lr = LogisticRegression(C=4.0, max_iter=300, class_weight="balanced", random_state=seed)
    lr.fit(Xtr, tr["label"].to_numpy())
    clf = HarmClassifier(lr.coef_.astype(np.float32), lr.intercept_.astype(np.float64), 0.5, n_features, {})
    p_va = clf.predict_proba(list(va["text"]))
    harm_va = 1.0 - p_va[:, 2]
    y_va = (va["label"].to_numpy() != 2).astype(int)
    benign = clf.score(list(benign_texts))[0] if benign_texts else np.zeros(0)
    threshold = choose_threshold(np.linspace(0.05, 0.99, 95), lambda t: f1_score(y_va, (harm_va >= t).astype(int)),
                                 {"benign_texts": (benign, max_benign_flag_rate)}).threshold
    benign_rate = float((benign >= threshold).mean()) if benign_texts else None
    pred = (harm_va >= threshold).astype(int)
    clf.threshold = threshold
    clf.metrics = {
        "val_auc": float(roc_auc_score(y_va, harm_va)),
        "val_f1_at_threshold": float(f1_score(y_va, pred)),
        "val_macro_f1_3class": float(f1_score(va["label"].to_numpy(), p_va.argmax(1), average="macro")),
        "benign_flag_rate": benign_rate, "n_train": int(len(tr)), "n_val": int(len(va)),
    }
    return clf
