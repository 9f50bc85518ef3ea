"""The bias report reads recsys.evaluate's JSON: models overall and by user group, not gated."""
import json

from audit.report.__main__ import main
from tests.cli import run_main


def _evaluation():
    grp = lambda a, b: {"F": {"ndcg@10": a, "recall@10": a, "mrr": a, "n": 40.0},   # noqa: E731
                        "M": {"ndcg@10": b, "recall@10": b, "mrr": b, "n": 70.0},
                        "_difference": {"ndcg@10": abs(a - b), "recall@10": abs(a - b), "mrr": abs(a - b)},
                        "_ratio_min_over_max": {"ndcg@10": min(a, b) / max(a, b), "recall@10": 1.0, "mrr": 1.0}}
    return {"dataset": "ml-100k", "artifact_version": "v1", "test_users": 110, "n_candidates": 100,
            "models": {"popularity": {"ndcg@10": 0.2, "recall@10": 0.1, "mrr": 0.3, "coverage@10": 0.01},
                       "blend": {"ndcg@10": 0.45, "recall@10": 0.3, "mrr": 0.6, "coverage@10": 0.2}},
            "by_group": {"popularity": {"gender": grp(0.2, 0.25)}, "blend": {"gender": grp(0.3, 0.5)}}}


def test_report_includes_the_model_comparison(tmp_path, capsys):
    ev = tmp_path / "evaluation.json"
    ev.write_text(json.dumps(_evaluation()))
    out = tmp_path / "rep"
    res = run_main(main, ["--evaluation", ev, "--out", out], capsys)
    assert res.returncode == 0, res.stderr
    rep = json.loads((out / "report.json").read_text())
    (mc,) = rep["model_comparison"]
    assert mc["models"]["blend"]["ndcg@10"] == 0.45
    assert mc["by_group"]["gender"]["rows"]["blend"]["_ratio_min_over_max"]["ndcg@10"] == 0.6
    assert mc["by_group"]["gender"]["rows"]["blend"]["F"]["n"] == 40
    assert rep["passed"] and rep["violations"] == []     # informational: never gates
    assert "NDCG@10 by gender" in (out / "report.html").read_text()
    assert "blend 0.60" in res.stdout


def test_not_an_evaluation_file_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text('{"rows": []}')
    res = run_main(main, ["--evaluation", bad, "--out", tmp_path / "o"], capsys)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "not a recsys.evaluate JSON" in res.stderr
    assert not (tmp_path / "o").exists()
