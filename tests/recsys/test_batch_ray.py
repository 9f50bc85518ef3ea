"""--engine ray: the same rows as the local engine, on a local 2-CPU Ray cluster.

Ray is an optional extra (`pip install '.[ray]'`, which `make setup` installs): the
equality test runs whenever Ray is importable and is skipped, saying so, only
when it is not.
"""
import sys

import pandas as pd
import pytest

from recsys.batch import PipelineRecipe, build_batch_pipeline, run_batch
from tests.cli import run_main
from tests.recsys.batch_frames import mixed_frame


@pytest.mark.slow
def test_ray_engine_gives_the_local_engines_rows(artifacts, artifact_root, audit_log, known_items, tmp_path):
    pytest.importorskip("ray.data", reason="Ray is not installed (optional extra: pip install '.[ray]')")
    from audit.log import read_records
    from audit.policy import load_policy

    df = mixed_frame(artifacts, known_items)
    src = tmp_path / "in.csv"          # CSV: the Ray engine reads the driver's spool, not the CSV
    df.to_csv(src, index=False)
    pipeline = build_batch_pipeline(artifacts, load_policy(), audit_log)
    local = run_batch(pipeline, artifacts.catalog.index, (), src, tmp_path / "local", top_k=6, chunk_users=3,
                      progress=False)
    recipe = PipelineRecipe(artifacts=str(artifact_root), policy=None, audit_log=str(tmp_path / "ray-audit.db"),
                            device="cpu", torch_threads=1)
    remote = run_batch(pipeline, artifacts.catalog.index, (), src, tmp_path / "ray", top_k=6, chunk_users=3,
                       progress=False, engine="ray", recipe=recipe, workers=2)
    assert remote.parts == local.parts == 6 and remote.rows == local.rows == len(df)
    assert remote.verdicts == local.verdicts and remote.removed == local.removed > 0
    a, b = pd.read_parquet(tmp_path / "local"), pd.read_parquet(tmp_path / "ray")
    pd.testing.assert_frame_equal(a.drop(columns="audit_id"), b.drop(columns="audit_id"), check_exact=True)
    assert set(b["audit_id"]) == {r.audit_id for r in read_records(tmp_path / "ray-audit.db")}
    assert sorted(p.name for p in (tmp_path / "ray").iterdir() if not p.name.startswith("part-")) == \
        [".lock", "_SUCCESS", "_manifest.json"]      # the spool is gone


def test_engine_ray_without_ray_is_one_line(artifact_root, tmp_path, capsys, monkeypatch):
    from recsys.batch.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)     # `import ray` raises ImportError, as without the package
    pd.DataFrame({"user_id": ["1"], "item_id": ["1"]}).to_parquet(tmp_path / "in.parquet")
    res = run_main(main, ["--input", tmp_path / "in.parquet", "--output", tmp_path / "out", "--artifacts",
                          artifact_root, "--audit-log", tmp_path / "a.db", "--engine", "ray"], capsys)
    assert res.returncode == 2
    assert res.stderr.strip() == "error: --engine ray needs Ray, which is not installed: pip install '.[ray]'"
    assert not (tmp_path / "out").exists()