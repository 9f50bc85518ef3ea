import pytest

from recsys.data import load_dataset
from recsys.data.movielens import DatasetError
from tests.conftest import DATA, ML100K


def test_latest_small_loads_with_tags_and_years():
    ds = load_dataset(DATA)
    assert ds.name == "ml-latest-small"
    assert len(ds.interactions) == 100_836
    assert ds.interactions["user_id"].nunique() == 610
    assert len(ds.items) == 9_742
    assert len(ds.tags) > 3_000
    toy = ds.items[ds.items["item_id"] == "1"].iloc[0]
    assert toy["title"] == "Toy Story (1995)" and toy["year"] == 1995.0


@pytest.mark.skipif(not (ML100K / "u.data").is_file(), reason="MovieLens 100K is read from ../shared/data only")
def test_ml_100k_loads_from_a_path_with_demographics():
    ds = load_dataset(ML100K)
    assert ds.name == "ml-100k"
    assert len(ds.interactions) == 100_000
    assert set(ds.users.columns) >= {"gender", "age_band", "occupation"}
    assert ds.items["title"].str.len().gt(0).all()


def test_missing_or_wrong_directory_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match="neither"):
        load_dataset(tmp_path)
