"""The functional harm suite: template-level split, held-out groups, no HateCheck overlap, bad files."""
import difflib
import re
from pathlib import Path

import pytest

from audit.harm_suite import GROUP_SLOTS, SuiteError, load_suite, parse_suite

HATECHECK = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "hatecheck" / "test_suite_cases.csv"


@pytest.fixture(scope="module")
def suite():
    return load_suite()


def test_train_and_heldout_templates_are_disjoint(suite):
    train = {t.text for t in suite.templates_in("train")}
    heldout = {t.text for t in suite.templates_in("heldout")}
    assert train and heldout and not train & heldout
    tr_cases, ho_cases = suite.cases("train"), suite.cases("heldout")
    assert not set(tr_cases["template_id"]) & set(ho_cases["template_id"])
    assert not set(tr_cases["text"]) & set(ho_cases["text"])


def test_every_functionality_has_train_and_heldout_templates(suite):
    for name in suite.functionalities:
        assert any(t.functionality == name for t in suite.templates_in("train")), name
        assert any(t.functionality == name for t in suite.templates_in("heldout")), name


def test_heldout_groups_never_reach_training_cases(suite):
    heldout_groups = {g.plural for g in suite.groups if g.split == "heldout"}
    assert heldout_groups
    assert not heldout_groups & set(suite.cases("train")["group"])
    assert heldout_groups <= set(suite.cases("heldout")["group"])


def test_cases_are_filled_and_labelled(suite):
    cases = suite.cases("heldout")
    assert not cases["text"].str.contains(r"[{}]").any()
    hateful = cases[cases["label"] == 1]
    assert set(hateful["category"]) <= {"hate", "dehumanisation", "threat"}
    assert (hateful["group"] != "").all()      # hate is aimed at a group
    # every group appears in hateful AND in benign identity sentences (a group mention is no evidence)
    benign = cases[cases["functionality"].isin(["identity_neutral", "identity_positive"])]
    assert set(hateful["group"]) == set(benign["group"])


def test_hateful_templates_have_no_profanity(suite):
    swear = re.compile(r"\b(fuck\w*|shit\w*|bitch\w*|damn|crap|ass|bastard\w*|cunt)\b", re.I)
    for t in suite.templates:
        if t.label == "hateful":
            assert not swear.search(t.text), t.id


def _norm(text: str) -> list[str]:
    text = re.sub(r"\[[A-Z_]+\]|\{[A-Za-z_]+\}", " X ", text.lower())
    return re.sub(r"[^a-z x]+", " ", text).split()


@pytest.mark.skipif(not HATECHECK.is_file(), reason="HateCheck is not at ../shared/data/hatecheck")
def test_no_template_copies_or_closely_paraphrases_hatecheck(suite):
    import pandas as pd

    theirs = [_norm(t) for t in pd.read_csv(HATECHECK)["case_templ"].dropna().unique()]
    for t in suite.templates:
        mine = _norm(t.text)
        best = max(difflib.SequenceMatcher(None, mine, other).ratio() for other in theirs)
        assert best < 0.7, f"{t.id} is too close to a HateCheck template ({best:.2f})"


GROUPS = {"group": [{"plural": "testers", "singular": "tester", "split": "train"}]}


def _templates(**over):
    spec = {"label": "hateful", "category": "hate", "train": ["{G} are bad."], "heldout": ["{G} are awful."]}
    spec.update(over)
    return {"functionality": {"f": spec}}


@pytest.mark.parametrize("over, words", [
    ({"category": "offensive"}, "functionality.f.category"),
    ({"label": "maybe"}, "functionality.f.label"),
    ({"train": ["{G} are {thing}."]}, "{thing}"),
    ({"heldout": ["{G} are bad."]}, "disjoint"),
    ({"train": "not a list"}, "functionality.f.train"),
    ({"colour": "red"}, "functionality.f.colour"),
])
def test_malformed_suites_name_the_problem(over, words):
    with pytest.raises(SuiteError, match=re.escape(words)):
        parse_suite(_templates(**over), GROUPS)


def test_a_group_split_must_be_known():
    with pytest.raises(SuiteError, match="group\\[0\\].split"):
        parse_suite(_templates(), {"group": [{"plural": "a", "singular": "b", "split": "test"}]})


def test_group_slots_fill_plural_singular_and_article():
    s = parse_suite(_templates(train=["{G}, {S}, {a_S}."], heldout=["x {G}"]),
                    {"group": [{"plural": "immigrants", "singular": "immigrant", "split": "train"}]})
    assert s.cases("train")["text"].tolist() == ["Immigrants, immigrant, an immigrant."]
    assert set(GROUP_SLOTS) == {"G", "S", "a_S"}
