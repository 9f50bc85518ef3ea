"""How users and items become text for the BERT interest model."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def item_text(title: str, genres: str = "", tags: Sequence[str] = (), description: str = "") -> str:
    parts = [title.strip()]
    if genres:
        parts.append("Genres: " + ", ".join(g for g in genres.split("|") if g))
    if tags:
        parts.append("Tags: " + ", ".join(tags))
    if description:
        parts.append(description.strip())
    return ". ".join(p for p in parts if p)


#: History items (most recent first) that make a user's text.
USER_TEXT_ITEMS = 10


def user_text(history_item_texts: Sequence[str], history_texts: Sequence[str] = (),
              max_items: int = USER_TEXT_ITEMS) -> str:
    """Most recent first; the tokenizer truncates the tail, so the oldest go first.

    Only titles (the part before the first '. ') of history items are kept: a
    history of full item texts would fill the token budget with genre lists.
    """
    titles = [t.split(". Genres:")[0] for t in history_item_texts[:max_items]]
    return " | ".join([*history_texts, *titles])


def history_user_text(catalog_texts: Sequence[str], history_idx, history_texts: Sequence[str] = ()) -> str:
    """The user text of a request: its catalog history rows (most recent first, -1 = not in the catalog,
    skipped) and its free history texts. Serving and the precomputed user vectors both build it here, so
    their texts (and vector keys) match exactly. Only the USER_TEXT_ITEMS kept texts are looked up."""
    idx = np.asarray(history_idx)
    known = idx[idx >= 0][:USER_TEXT_ITEMS].tolist()
    return user_text([catalog_texts[i] for i in known], history_texts)
