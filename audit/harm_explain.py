"""Why a text was flagged: leave-one-word-out occlusion on the classifier itself.

Each word is removed in turn and the text re-scored; the words whose removal lowers the flagged category's
probability most are the span a reviewer sees ("driven by: 'vermin', 'exterminated'"). Occlusion needs no
access to the model's internals, so it explains whatever classifier the artifact ships, and it measures the
model's own behaviour rather than a proxy (a word list). Cost: one batched scoring call of n_words + 1 texts,
paid only for flagged texts (catalog items at training time, request texts once, then cached).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

_WORD = re.compile(r"\S+")
#: Longer texts are occluded in windows of several words, so a request text costs at most this many variants.
MAX_VARIANTS = 32
#: A word is part of the span when its removal lowers the probability by at least this share of the largest
#: drop (and by at least MIN_DROP in absolute terms).
REL_DROP = 0.5
MIN_DROP = 0.02
MAX_SPAN_WORDS = 4


def occlusion_variants(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """The texts with one word (or one window of words) left out, and the character span each leaves out."""
    words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    if not words:
        return [], []
    size = max(1, -(-len(words) // MAX_VARIANTS))
    spans = [(words[i][0], words[min(i + size, len(words)) - 1][1]) for i in range(0, len(words), size)]
    variants = [_SPACES.sub(" ", (text[:a] + " " + text[b:])).strip() for a, b in spans]
    return variants, spans


_SPACES = re.compile(r"\s+")


def span_from_drops(text: str, spans: Sequence[tuple[int, int]], drops: np.ndarray) -> list[str]:
    """The words (in text order) whose removal lowered the probability most."""
    if len(drops) == 0:
        return []
    top = float(np.max(drops))
    if top < MIN_DROP:
        return []
    keep = [i for i in np.argsort(-drops, kind="stable")[:MAX_SPAN_WORDS] if drops[i] >= max(MIN_DROP, REL_DROP * top)]
    return [_strip(text[spans[i][0]:spans[i][1]]) for i in sorted(keep)]


def _strip(word: str) -> str:
    return word.strip(".,;:!?\"'()[]{}") or word


def explain(texts: Sequence[str], prob_fn: Callable[[list[str]], np.ndarray], base: np.ndarray) -> list[list[str]]:
    """For each text, the span that drove `prob_fn` (a probability per text) to its value `base`.

    All variants of all texts are scored in one call, so a batch of flagged texts costs one model pass."""
    all_variants: list[str] = []
    parts: list[tuple[int, int, list[tuple[int, int]]]] = []
    for text in texts:
        variants, spans = occlusion_variants(text)
        parts.append((len(all_variants), len(variants), spans))
        all_variants.extend(variants)
    probs = np.asarray(prob_fn(all_variants), dtype=np.float64) if all_variants else np.zeros(0)
    out = []
    for text, b, (start, n, spans) in zip(texts, base, parts):
        out.append(span_from_drops(text, spans, float(b) - probs[start:start + n]))
    return out
