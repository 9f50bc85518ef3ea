import pytest

from audit.policy import load_policy, parse_policy
from recsys.errors import ConfigError


def test_default_policy_loads():
    p = load_policy()
    assert p.failure_mode == "closed"
    assert p.harm.action == "ENFORCE"
    assert p.exposure.min_group_size >= 1
    assert p.audience.rules and p.audience.rules[0].user_attribute == "age_band"


@pytest.mark.parametrize("data, key", [
    ({"version": "x", "exposure": {"min_selection_ratio": 0.8}}, "exposure.min_selection_ratio"),
    ({"version": "x", "harm": {"action": "BLOCK"}}, "harm.action"),
    ({"version": "x", "exposure": {"min_exposure_ratio": 1.5}}, "exposure.min_exposure_ratio"),
    ({"version": "x", "failure_mode": "open"}, "failure_mode"),
    ({"exposure": {}}, "version"),
    ({"version": "x", "audience": {"rules": [{"user_attribute": "age_band"}]}}, "audience.rules[0].user_values"),
    ({"version": "x", "exposure": {"min_group_size": "5"}}, "exposure.min_group_size"),
])
def test_bad_policy_names_the_key(data, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        parse_policy(data)


def test_bad_policy_file(tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text("version = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_policy(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_policy(tmp_path / "missing.toml")
