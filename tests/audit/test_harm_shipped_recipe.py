"""The shipped recipe on the real MiniLM (trained small): the issue-25 examples. Slow: encodes ~4k texts."""
import pytest

from audit.harm_categories import HATEFUL_CATEGORIES

DEHUMANISING = "Immigrants are vermin and parasites; they should all be exterminated like rats."


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="known miss of issue 25 (bench/README.md#harm-classifier-out-of-distribution): "
                   "the frozen-MiniLM recipe gives the dehumanising sentence P(hateful) 0.53 < threshold 0.65, "
                   "which the 2 % identity-FPR cap raised from 0.24; remove this mark when a recipe passes")
def test_shipped_recipe_flags_dehumanising_text_without_slurs_and_spares_swearing():
    from audit.harm_fit import fit_harm_model
    from recsys.encoder import base_model_path

    titles = ["Switchback (1997)", "Toy Story (1995)", "Kill Bill: Vol. 1 (2003)", "Heat (1995)",
              "Schindler's List (1993)", "The Killing Fields (1984)"] * 20
    m = fit_harm_model("data/hate-speech-davidson/labeled_data.csv", encoder_path=base_model_path(),
                       benign={"catalog_titles": titles}, max_rows=1000, max_val_rows=500, device="cpu")
    (p_dehum, p_swear, p_title), (c_dehum, c_swear, _) = m.score(
        [DEHUMANISING, "This movie is fucking great", "Switchback (1997)"])
    assert p_dehum >= m.threshold and c_dehum in HATEFUL_CATEGORIES
    assert p_swear < m.threshold and c_swear == "profanity-only"
    assert p_title < m.threshold
    span = m.explain([DEHUMANISING], [c_dehum])[0]
    assert span and all(w in DEHUMANISING for w in span)
