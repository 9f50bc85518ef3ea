"""Per-category harm actions: defaults, the [harm] action cap, validation naming the key."""
import pytest

from audit.policy import load_policy, parse_policy
from recsys.errors import ConfigError


def test_default_policy_flags_profanity_and_enforces_hate_and_threats():
    h = load_policy().harm
    assert h.action_for("profanity-only") == "FLAG" and h.action_for("sexual") == "FLAG"
    for c in ("hate", "threat", "dehumanisation", "harassment"):
        assert h.action_for(c) == "ENFORCE"
    assert h.action_for("offensive") == "ENFORCE"     # an older artifact's category follows [harm] action


def test_unlisted_categories_follow_action_except_flag_by_default_ones():
    h = parse_policy({"version": "t", "harm": {"categories": {"threat": "IGNORE"}}}).harm
    assert h.action_for("threat") == "IGNORE" and h.action_for("hate") == "ENFORCE"
    assert h.action_for("profanity-only") == "FLAG"


def test_action_flag_caps_every_category():
    h = parse_policy({"version": "t", "harm": {"action": "FLAG", "categories": {"hate": "ENFORCE"}}}).harm
    assert h.action_for("hate") == "FLAG" and h.action_for("profanity-only") == "FLAG"


@pytest.mark.parametrize("cats, key", [({"slurs": "FLAG"}, "harm.categories.slurs"),
                                       ({"hate": "DELETE"}, "harm.categories.hate"),
                                       ({"hate": 1}, "harm.categories.hate")])
def test_bad_category_entries_name_the_key(cats, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_policy({"version": "t", "harm": {"categories": cats}})
