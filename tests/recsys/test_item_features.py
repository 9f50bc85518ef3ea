"""Request-supplied numeric features: declared by training, used by the ranker, validated per request."""
import numpy as np
import pandas as pd
import pytest

from recsys.domain import Candidate, RankRequest, UserContext
from recsys.errors import InvalidRequest
from tests.conftest import DATA

# trains an artifact of its own (module fixture): not in make test-fast
pytestmark = pytest.mark.artifact


@pytest.fixture(scope="module")
def featured(tmp_path_factory, tiny_bert):
    from recsys.compose import load_artifacts
    from recsys.train import TrainConfig, train

    tmp = tmp_path_factory.mktemp("feat")
    movies = pd.read_csv(DATA / "movies.csv", dtype={"movieId": str})
    rng = np.random.default_rng(0)
    pd.DataFrame({"item_id": movies["movieId"], "price": rng.uniform(1, 20, len(movies)).round(2)}) \
        .to_csv(tmp / "items.csv", index=False)
    train(TrainConfig(data=DATA, out=tmp / "art", base_model=tiny_bert, sample_users=150, max_pairs=64, lr=5e-4,
                      harm_max_rows=3000, item_features=tmp / "items.csv", als_grid="quick", ranker_grid="quick"))
    return load_artifacts(tmp / "art", device="cpu")


def test_declared_feature_is_in_the_artifact_and_the_ranker(featured):
    assert featured.extra_features == ("price",)
    assert featured.feature_names[-1] == "price"
    assert featured.ranker.feature_names_[-1] == "price"


def test_request_features_validated_and_used(featured, audit_log, known_items):
    from audit.policy import load_policy
    from recsys.compose import build_pipeline

    pipe = build_pipeline(featured, policy=load_policy(), audit_log=audit_log)
    ids = known_items[:10]
    ctx = pipe.run(RankRequest(UserContext("1"), tuple(Candidate(i, features={"price": 5.0}) for i in ids[:5])
                               + tuple(Candidate(i) for i in ids[5:]), top_k=3))
    price = ctx.X[:, featured.feature_names.index("price")]
    assert list(price[:5]) == [5.0] * 5 and np.isnan(price[5:]).all()  # missing -> NaN
    with pytest.raises(InvalidRequest, match="undeclared feature 'colour'; accepted: price") as info:
        pipe.rank(RankRequest(UserContext("1"), (Candidate(ids[0], features={"colour": 1.0}),)))
    assert info.value.field == "candidates[0].features"
