import numpy as np
import pytest

from audit.evaluate_harm import HARMFUL_PHRASES, obfuscations
from audit.harm import deobfuscate, normalise


@pytest.mark.parametrize("obfuscated, plain", [
    ("f u c k you", "fuck you"), ("F.U.C.K you", "fuck you"), ("b-i-t-c-h", "bitch"),
    ("you b!tch", "you bitch"), ("stupid h0e", "stupid hoe"), ("a$$hole", "asshole"), ("n1gga please", "nigga please"),
    ("shut up f@ggot", "shut up faggot"), ("fuuuuuck you", "fuck you"), ("sh_it", "shit"), ("FUCK YOU!!!", "fuck you!!!"),
])
def test_obfuscations_map_to_the_plain_phrase(obfuscated, plain):
    assert deobfuscate(normalise(obfuscated)) == plain


@pytest.mark.parametrize("title", ["12 Years a Slave (2013)", "Apollo 13 (1995)", "Kill Bill: Vol. 1 (2003)",
                                   "Schindler's List (1993)", "sci-fi", "good book!!!", "2 Fast 2 Furious (2003)"])
def test_innocent_text_is_left_alone(title):
    assert deobfuscate(normalise(title)) == normalise(title)


def test_generated_obfuscations_all_reduce_to_the_plain_phrase():
    for phrase in HARMFUL_PHRASES:
        plain = deobfuscate(normalise(phrase))
        for v in obfuscations(phrase):
            got = deobfuscate(normalise(v))
            got = got.rstrip("!")
            # known limit: a one-letter word before a spaced-out word is joined into it
            # ("a w o r t h l e s s" -> "aworthless"); the letters are recovered, one word boundary is not
            assert got == plain or got.replace(" ", "") == plain.replace(" ", ""), (v, got)


def test_classifier_scores_obfuscated_like_plain(tiny_bert):
    from audit.harm_bert import BertHarmClassifier

    clf = BertHarmClassifier.from_base(tiny_bert, device="cpu", seed=0)
    for phrase in HARMFUL_PHRASES[:4]:
        variants = [v for v in obfuscations(phrase) if not v.endswith("!!!")]
        p_plain = clf.score([phrase])[0][0]
        np.testing.assert_allclose(clf.score(variants)[0], p_plain, atol=1e-6)
