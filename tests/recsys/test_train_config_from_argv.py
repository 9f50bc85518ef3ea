"""`recsys.train`'s command line: --quick gives the quick profile's values, and an option not given does not
overwrite them (the quick harm profile of 4,000 Davidson rows was silently replaced by all rows)."""
from pathlib import Path

from recsys.train import TrainConfig, config_from_argv

QUICK = TrainConfig.quick(data=Path("d"), out=Path("o"))


def test_quick_keeps_its_harm_rows_unless_told():
    cfg, _ = config_from_argv(["--quick"])
    assert cfg.harm_max_rows == QUICK.harm_max_rows == 4000
    assert cfg.max_pairs == QUICK.max_pairs
    assert config_from_argv(["--quick", "--harm-max-rows", "1500"])[0].harm_max_rows == 1500
    assert config_from_argv(["--quick", "--harm-max-rows", "0"])[0].harm_max_rows is None    # 0 = all rows


def test_full_profile_uses_every_harm_row():
    assert config_from_argv([])[0].harm_max_rows is None
    assert config_from_argv(["--harm-max-rows", "2000"])[0].harm_max_rows == 2000
