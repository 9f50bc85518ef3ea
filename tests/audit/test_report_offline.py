"""The report's offline mode: the real pipeline ranks MovieLens-100K test users and
outcomes are split by gender, age band, occupation and their intersection."""
import json

import numpy as np
import pytest

from tests.cli import run_main
from tests.conftest import ML100K

pytestmark = [pytest.mark.skipif(not (ML100K / "u.data").is_file(),
                                 reason="MovieLens 100K is read from ../shared/data only"),
              pytest.mark.artifact]   # trains an ML-100K artifact of its own: not in make test-fast


@pytest.fixture(scope="module")
def ml100k_artifacts(tmp_path_factory, tiny_bert):
    from recsys.train import TrainConfig, train

    root = tmp_path_factory.mktemp("art100k")
    # 300 of the 943 users (218 of them test users; the whole 1,682-item catalog): ~40 s instead of ~4 min
    train(TrainConfig(data=ML100K, out=root, base_model=tiny_bert, max_pairs=256, lr=5e-4, harm_max_rows=6000,
                      als_grid="quick", ranker_grid="quick", sample_users=300))
    return root


@pytest.fixture(scope="module")
def offline_run(ml100k_artifacts, tmp_path_factory):
    from audit.log import AuditLog
    from audit.policy import load_policy
    from recsys.compose import build_pipeline, load_artifacts
    from recsys.data import load_dataset
    from recsys.offline import evaluate_with_pipeline

    art = load_artifacts(ml100k_artifacts, device="cpu")
    log = AuditLog(tmp_path_factory.mktemp("log") / "a.db", salt=b"s")
    pipe = build_pipeline(art, policy=load_policy(), audit_log=log)
    return evaluate_with_pipeline(pipe, art, load_dataset(ML100K), max_users=120, progress=False)


def test_group_metrics_equal_plain_pandas(offline_run):
    from audit.policy import load_policy
    from audit.report.build import build_report

    users = offline_run.users
    assert len(users) > 50 and {"gender", "age_band", "occupation"} <= set(users.columns)
    rep = build_report(records=None, offline_run=offline_run, policy=load_policy(), n_boot=0)["offline"]
    tables = {t["name"]: t for t in rep["user_groups"]}
    assert set(tables) == {"gender", "age_band", "occupation", "gender × age_band"}
    expect = users.groupby("gender")["ndcg@10"].mean()
    for g in tables["gender"]["groups"]:
        assert np.isclose(g["ndcg@10"], expect[g["group"]])
    inter = users.groupby(["gender", "age_band"])["recall@10"].mean()
    for g in tables["gender × age_band"]["groups"]:
        gender, band = g["group"].split(" × ")
        assert np.isclose(g["recall@10"], inter[(gender, band)])
    assert np.isclose(rep["overall"]["ndcg@10"], users["ndcg@10"].mean())
    pop = {t["name"]: t for t in rep["item_groups"]}["popularity"]
    c = offline_run.candidates
    head = c[c["popularity"] == "head"]
    assert np.isclose({g["group"]: g for g in pop["groups"]}["head"]["selection_rate"], (head["rank"] > 0).mean())
    returned = c[c["rank"] > 0]
    assert rep["popularity_bias"]["distinct_items_returned"] == returned["item_id"].nunique()
    assert np.isclose(rep["popularity_bias"]["catalog_coverage"], returned["item_id"].nunique() / 1682)


def test_history_is_only_the_past(offline_run, ml100k_artifacts):
    """The offline run ranks test users of the artifact's split, each with their train part as history and
    their holdout as the targets: every history item is older than every target (the drawn cold items' rows,
    part "cold", are in neither: their time is anyone's)."""
    from recsys.compose import load_artifacts
    from recsys.data import load_dataset
    from recsys.offline import split_of

    art = load_artifacts(ml100k_artifacts, device="cpu")
    sp = split_of(art, load_dataset(ML100K)).split
    users = set(offline_run.users["user_id"])
    assert users <= sp.test_users
    inter = sp.interactions[sp.interactions["user_id"].isin(users)]
    for _, rows in inter.groupby("user_id"):
        train, hold = rows[rows["part"].isin(("fit", "fit_cold", "label"))], rows[rows["part"] == "holdout"]
        assert train["timestamp"].max() <= hold["timestamp"].min()


def test_cli_offline_and_log_together(ml100k_artifacts, tmp_path, capsys):
    from audit.report.__main__ import main
    from tests.audit.test_report import _write_log

    _write_log(tmp_path / "a.db", 12, 2)
    res = run_main(main, ["--dataset", "ml-100k", "--data", ML100K, "--artifacts", ml100k_artifacts, "--log",
                          tmp_path / "a.db", "--max-users", "40", "--n-boot", "10", "--out", tmp_path / "rep"], capsys)
    assert res.returncode in (0, 3), res.stderr
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert {"log", "offline"} <= set(rep)
    assert rep["offline"]["users"] == 40
    assert (res.returncode == 3) == (not rep["passed"])
    for t in rep["offline"]["user_groups"]:
        for g in t["groups"]:
            if g["n"] < 30:
                assert g["status"] == "insufficient evidence"


def test_wrong_dataset_for_artifact_is_rejected(ml100k_artifacts, tmp_path, capsys):
    from audit.report.__main__ import main

    res = run_main(main, ["--dataset", "ml-latest-small", "--artifacts", ml100k_artifacts, "--out", tmp_path / "rep"],
                   capsys)
    assert res.returncode == 2 and "was trained on ml-100k" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "rep").exists()
