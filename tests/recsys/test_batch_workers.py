"""`--engine local --workers N`: worker processes give exactly the in-process engine's rows, one audit
record per user in one intact hash chain, and refuse to score for a job whose pipeline they do not hold."""

import pandas as pd
import pytest

from recsys.batch import PipelineRecipe, build_batch_pipeline, run_batch
from recsys.blend import Blend
from tests.cli import run_main
from tests.recsys.batch_frames import mixed_frame


@pytest.mark.slow
def test_worker_processes_give_the_in_process_rows(artifacts, artifact_root, audit_log, known_items, tmp_path):
    from audit.log import read_records
    from audit.policy import load_policy
    from audit.verify import verify_log
    from recsys.batch.process_engine import WorkerPool

    df = mixed_frame(artifacts, known_items, n_known=10, n_new=6)
    src = tmp_path / "in.parquet"
    df.to_parquet(src)
    pipeline = build_batch_pipeline(artifacts, load_policy(), audit_log)
    local = run_batch(pipeline, artifacts.catalog.index, (), src, tmp_path / "local", top_k=6, chunk_users=3,
                      progress=False)
    db = tmp_path / "workers-audit.db"
    recipe = PipelineRecipe(artifacts=str(artifact_root), policy=None, audit_log=str(db), device="cpu")
    with WorkerPool(recipe, 2) as pool:
        multi = run_batch(pipeline, artifacts.catalog.index, (), src, tmp_path / "multi", top_k=6, chunk_users=3,
                          progress=False, pool=pool)
        # the pool outlives a job; a job whose pipeline differs from the workers' is refused, nothing committed
        other = build_batch_pipeline(artifacts, load_policy(), audit_log, Blend("linear", 0.3))
        with pytest.raises(ValueError, match="differs from the job's"):
            run_batch(other, artifacts.catalog.index, (), src, tmp_path / "other", top_k=6, chunk_users=3,
                      progress=False, pool=pool)
    assert multi.parts == local.parts == 6 and multi.rows == local.rows == len(df)
    assert multi.verdicts == local.verdicts and multi.removed == local.removed > 0
    a, b = pd.read_parquet(tmp_path / "local"), pd.read_parquet(tmp_path / "multi")
    pd.testing.assert_frame_equal(a.drop(columns="audit_id"), b.drop(columns="audit_id"), check_exact=True)
    records = list(read_records(db))
    assert len(records) == df["user_id"].nunique() and set(b["audit_id"]) == {r.audit_id for r in records}
    assert verify_log(db).ok
    assert not list((tmp_path / "other").glob("part-*"))


def test_cli_workers_apply_to_the_local_engine_and_address_does_not(artifact_root, tmp_path, capsys):
    from recsys.batch.cli import main

    pd.DataFrame({"user_id": ["1"], "item_id": ["1"]}).to_parquet(tmp_path / "in.parquet")
    base = ["--input", tmp_path / "in.parquet", "--output", tmp_path / "out", "--artifacts", artifact_root]
    res = run_main(main, [*base, "--address", "ray://nowhere:1"], capsys)
    assert res.returncode == 2 and res.stderr.strip() == "error: --address applies to --engine ray"
    res = run_main(main, [*base, "--workers", "0"], capsys)
    assert res.returncode == 2 and res.stderr.strip() == "error: --workers must be >= 1, got 0"
    assert not (tmp_path / "out").exists()