import shutil

import pytest

from audit.evaluate_harm import main


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    return err


def test_missing_artifact_dir_is_one_line_exit_2(tmp_path, capsys):
    assert main(["--artifacts", str(tmp_path / "nope"), "--out", str(tmp_path / "r.json")]) == 2
    assert "not found" in _err(capsys)
    assert not (tmp_path / "r.json").exists()


def test_artifact_without_harm_bert_is_exit_2(copy_artifacts, tmp_path, capsys):
    assert main(["--artifacts", str(copy_artifacts), "--out", str(tmp_path / "r.json")]) == 2
    assert "no harm_bert/" in _err(capsys)


@pytest.mark.parametrize("bad", ["data", "movielens", "tampered"])
def test_bad_inputs_are_exit_2(copy_artifacts, tmp_path, capsys, bad):
    vdir = copy_artifacts / (copy_artifacts / "LATEST").read_text().strip()
    (vdir / "harm_bert").mkdir()
    (vdir / "harm_bert" / "harm_bert.json").write_text("{}")
    args = ["--artifacts", str(vdir), "--out", str(tmp_path / "r.json")]
    if bad == "data":
        args += ["--data", str(tmp_path / "missing.csv")]
    elif bad == "movielens":
        shutil.copytree(vdir, tmp_path / "empty-ml", ignore=lambda *_: [])  # a dir without movies.csv
        args += ["--movielens", str(tmp_path / "empty-ml" / "harm_bert")]
    else:
        import json
        meta = json.loads((vdir / "metadata.json").read_text())
        meta["files"]["harm_bert/harm_bert.json"] = "0" * 64
        (vdir / "metadata.json").write_text(json.dumps(meta))
    assert main(args) == 2
    _err(capsys)
    assert not (tmp_path / "r.json").exists()
