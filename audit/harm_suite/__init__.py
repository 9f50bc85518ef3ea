"""The functional harm suite: templates x groups -> labelled cases, split by TEMPLATE into train and held-out.

Why a suite of our own: the catalog and user texts the audit sees do not look like the Davidson tweets, and a
classifier that has only seen those learns slurs and profanity, not what is said about a group. The suite
states the behaviours that matter (derogation, dehumanisation, threats and exclusion without slurs; implicit
and negated hate; counter-speech; neutral and positive identity mentions; non-hateful profanity; dark
titles; ...) as templates, and keeps a held-out part that training never sees: templates, and some groups,
on which generalisation is measured. See README.md beside this file.
"""
from __future__ import annotations

import itertools
import re
import string
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

LABELS = ("hateful", "non-hateful")
from audit.harm_categories import CATEGORIES, HATEFUL_CATEGORIES, LESSER_CATEGORIES  # noqa: E402,F401
SPLITS = ("train", "heldout")
GROUP_SLOTS = ("G", "S", "a_S")
#: At most this many cases per template (its slot combinations are sampled deterministically beyond it).
MAX_CASES_PER_TEMPLATE = 40


class SuiteError(ValueError):
    """The suite's files are malformed (named in the message)."""


@dataclass(frozen=True)
class Template:
    id: str
    functionality: str
    split: str
    text: str
    label: str
    category: str
    fill: dict[str, tuple[str, ...]]

    @property
    def slots(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f for _, f, _, _ in string.Formatter().parse(self.text) if f))

    @property
    def uses_group(self) -> bool:
        return any(s in GROUP_SLOTS for s in self.slots)


@dataclass(frozen=True)
class Group:
    plural: str
    singular: str
    split: str

    @property
    def with_article(self) -> str:
        return ("an " if self.singular[0].lower() in "aeiou" else "a ") + self.singular


@dataclass(frozen=True)
class Suite:
    templates: tuple[Template, ...]
    groups: tuple[Group, ...]
    functionalities: dict[str, dict]

    def templates_in(self, split: str) -> list[Template]:
        if split not in SPLITS:
            raise SuiteError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
        return [t for t in self.templates if t.split == split]

    def cases(self, split: str, *, groups: str | None = None, seed: int = 0) -> pd.DataFrame:
        """The cases of one template split. `groups`: "train" (only training groups), "all"; default: "train"
        for the train split (training never sees a held-out group) and "all" for the held-out split.

        Columns: text, label (1 hateful, 0 not), functionality, category, template_id, group ("" when the
        template names no group), template_split, group_split."""
        groups = groups or ("train" if split == "train" else "all")
        if groups not in ("train", "all"):
            raise SuiteError(f"groups must be 'train' or 'all'; got {groups!r}")
        gs = [g for g in self.groups if groups == "all" or g.split == "train"]
        rows = []
        for t in self.templates_in(split):
            rows.extend(_expand(t, gs, seed))
        df = pd.DataFrame(rows, columns=["text", "label", "functionality", "category", "template_id", "group",
                                         "template_split", "group_split"])
        return df.drop_duplicates("text", ignore_index=True)


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:] if text[:1].islower() else text


def _expand(t: Template, groups: list[Group], seed: int) -> list[tuple]:
    slots = t.slots
    own = [s for s in slots if s not in GROUP_SLOTS]
    own_values = list(itertools.product(*(t.fill[s] for s in own))) if own else [()]
    group_values: list[Group | None] = list(groups) if t.uses_group else [None]
    combos = list(itertools.product(group_values, own_values))
    if len(combos) > MAX_CASES_PER_TEMPLATE:
        # crc-free deterministic choice: a generator seeded from the template id and the suite seed
        rng = np.random.default_rng([seed, *map(ord, t.id)])
        keep = np.sort(rng.choice(len(combos), MAX_CASES_PER_TEMPLATE, replace=False))
        combos = [combos[i] for i in keep]
    out = []
    y = 1 if t.label == "hateful" else 0
    for g, vals in combos:
        values = dict(zip(own, vals))
        if g is not None:
            values.update(G=g.plural, S=g.singular, a_S=g.with_article)
        out.append((_capitalise(t.text.format(**values)), y, t.functionality, t.category, t.id,
                    g.plural if g else "", t.split, g.split if g else ""))
    return out


def _str_list(value, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise SuiteError(f"{where} must be a list of non-empty strings")
    return tuple(value)


def parse_suite(templates: dict, groups: dict) -> Suite:
    """Validate the two parsed TOML documents and build the suite."""
    funcs = templates.get("functionality")
    if not isinstance(funcs, dict) or not funcs:
        raise SuiteError("templates: no [functionality.*] tables")
    out: list[Template] = []
    for name, spec in funcs.items():
        where = f"functionality.{name}"
        unknown = set(spec) - {"label", "category", "description", "train", "heldout", "fill"}
        if unknown:
            raise SuiteError(f"{where}.{sorted(unknown)[0]} is not a known key")
        label, category = spec.get("label"), spec.get("category")
        if label not in LABELS:
            raise SuiteError(f"{where}.label must be one of {', '.join(LABELS)}; got {label!r}")
        allowed = HATEFUL_CATEGORIES if label == "hateful" else ("none",) + LESSER_CATEGORIES
        if category not in allowed:
            raise SuiteError(f"{where}.category must be one of {', '.join(allowed)} for a {label} "
                             f"functionality; got {category!r}")
        fill = {k: _str_list(v, f"{where}.fill.{k}") for k, v in spec.get("fill", {}).items()}
        for split in SPLITS:
            texts = _str_list(spec.get(split), f"{where}.{split}")
            for i, text in enumerate(texts):
                try:
                    t = Template(f"{name}/{split}/{i:02d}", name, split, text, label, category, fill)
                    missing = [s for s in t.slots if s not in GROUP_SLOTS and s not in fill]
                except ValueError as exc:   # a stray brace
                    raise SuiteError(f"{where}.{split}[{i}] is not a valid template: {exc}") from None
                if missing:
                    raise SuiteError(f"{where}.{split}[{i}] uses {{{missing[0]}}}, which is neither a group slot "
                                     f"({', '.join(GROUP_SLOTS)}) nor in {where}.fill")
                out.append(t)
    gs = []
    for i, g in enumerate(groups.get("group", [])):
        if not all(isinstance(g.get(k), str) and g.get(k) for k in ("plural", "singular")):
            raise SuiteError(f"group[{i}] needs non-empty plural and singular strings")
        if g.get("split") not in SPLITS:
            raise SuiteError(f"group[{i}].split must be one of {', '.join(SPLITS)}; got {g.get('split')!r}")
        gs.append(Group(g["plural"], g["singular"], g["split"]))
    if not any(g.split == "train" for g in gs):
        raise SuiteError("groups: no group with split = \"train\"")
    seen: dict[str, str] = {}
    for t in out:
        key = _template_key(t.text)
        if key in seen and seen[key] != t.split:
            raise SuiteError(f"template {t.id} is also a {seen[key]} template: the splits must be disjoint")
        seen[key] = t.split
    return Suite(tuple(out), tuple(gs), {k: {kk: vv for kk, vv in v.items() if kk in ("label", "category",
                                                                                    "description")}
                                         for k, v in funcs.items()})


def _template_key(text: str) -> str:
    return re.sub(r"[^a-z{} ]+", "", text.lower()).strip()


def load_suite(directory: str | Path | None = None) -> Suite:
    """The suite shipped in this package, or the templates.toml + groups.toml of `directory`."""
    try:
        if directory is None:
            base = resources.files("audit.harm_suite")
            t_text = base.joinpath("templates.toml").read_text()
            g_text = base.joinpath("groups.toml").read_text()
        else:
            d = Path(directory)
            t_text, g_text = (d / "templates.toml").read_text(), (d / "groups.toml").read_text()
    except OSError as exc:
        raise SuiteError(f"harm suite files unreadable: {exc}") from None
    try:
        return parse_suite(tomllib.loads(t_text), tomllib.loads(g_text))
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"harm suite files are not valid TOML: {exc}") from None
