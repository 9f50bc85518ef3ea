"""Bad input to `python -m audit.evaluate_harm` and `python -m audit.train_harm`: one line, exit 2, nothing
written or published."""
import json
import shutil

import pytest

from audit.evaluate_harm import main
from audit.train_harm import main as train_main


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


def test_missing_artifact_dir_is_one_line_exit_2(tmp_path, capsys):
    assert main(["--artifacts", str(tmp_path / "nope"), "--out", str(tmp_path / "r.json")]) == 2
    assert "not found" in _err(capsys)
    assert not (tmp_path / "r.json").exists()


def _suite_dir(tmp_path, edit):
    from importlib import resources

    d = tmp_path / "suite"
    d.mkdir()
    base = resources.files("audit.harm_suite")
    for f in ("templates.toml", "groups.toml"):
        (d / f).write_text(base.joinpath(f).read_text())
    edit(d)
    return d


@pytest.mark.parametrize("bad", ["data", "movielens", "tampered", "hatecheck", "hatecheck-columns", "ml100k",
                                 "unknown-category", "empty-heldout", "malformed-data"])
def test_bad_inputs_are_exit_2(copy_artifacts, tmp_path, capsys, bad):
    vdir = copy_artifacts / (copy_artifacts / "LATEST").read_text().strip()
    args = ["--artifacts", str(vdir), "--out", str(tmp_path / "r.json"), "--no-profanity-check", "--no-ngram"]
    if bad == "data":
        args += ["--data", str(tmp_path / "missing.csv")]
    elif bad == "malformed-data":
        (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
        args += ["--data", str(tmp_path / "bad.csv")]
    elif bad == "movielens":
        (tmp_path / "empty-ml").mkdir()
        args += ["--movielens", str(tmp_path / "empty-ml")]
    elif bad == "hatecheck":
        args += ["--hatecheck", str(tmp_path / "missing.csv")]
    elif bad == "hatecheck-columns":
        (tmp_path / "hc.csv").write_text("text,label\nhello,0\n")
        args += ["--hatecheck", str(tmp_path / "hc.csv")]
    elif bad == "ml100k":
        args += ["--ml100k", str(tmp_path / "u.item")]
    elif bad == "unknown-category":
        d = _suite_dir(tmp_path, lambda d: (d / "templates.toml").write_text(
            (d / "templates.toml").read_text().replace('category = "threat"', 'category = "violence"')))
        args += ["--suite", str(d)]
    elif bad == "empty-heldout":
        import re

        d = _suite_dir(tmp_path, lambda d: (d / "templates.toml").write_text(
            re.sub(r"heldout = \[.*?\n\]", "heldout = []", (d / "templates.toml").read_text(), flags=re.S)))
        args += ["--suite", str(d)]
    else:
        meta = json.loads((vdir / "metadata.json").read_text())
        meta["files"]["harm/harm_model.json"] = "0" * 64
        (vdir / "metadata.json").write_text(json.dumps(meta))
    assert main(args) == 2
    err = _err(capsys)
    if bad == "unknown-category":
        assert "violence" in err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("bad", ["missing", "malformed", "one-class"])
def test_train_harm_bad_data_is_exit_2_and_publishes_nothing(copy_artifacts, tmp_path, capsys, bad):
    before = (copy_artifacts / "LATEST").read_text()
    versions = sorted(p.name for p in copy_artifacts.iterdir())
    data = tmp_path / "d.csv"
    if bad == "malformed":
        data.write_text("tweet;class\nhello;2\n")
    elif bad == "one-class":
        data.write_text("tweet,class\n" + "".join(f"text {i},2\n" for i in range(100)))
    assert train_main(["--out", str(copy_artifacts), "--data", str(data), "--profile", "quick"]) == 2
    _err(capsys)
    assert (copy_artifacts / "LATEST").read_text() == before
    assert sorted(p.name for p in copy_artifacts.iterdir()) == versions
