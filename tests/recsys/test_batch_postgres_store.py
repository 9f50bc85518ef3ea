"""A batch job writes its audit records to the service's PostgreSQL store, on a chain of its own named by
the job (`batch-<job id>/<run>`), exactly one per scored user; rerunning the finished job adds none."""
import pandas as pd

from audit.log import AuditLog, read_records
from audit.verify import verify_store
from recsys.batch import build_batch_pipeline, run_batch
from tests.recsys.batch_frames import mixed_frame


def test_batch_records_go_to_the_store_on_the_jobs_chain(artifacts, known_items, pg_url, tmp_path):
    from audit.policy import load_policy

    src = tmp_path / "in.parquet"
    frame = mixed_frame(artifacts, known_items, n_known=4, n_new=4)
    frame.to_parquet(src)
    log = AuditLog(pg_url, salt=b"s", synchronous="FULL", lazy=True)
    pipe = build_batch_pipeline(artifacts, load_policy(), log)
    for _ in range(2):   # the second run finds the job complete and writes nothing
        run_batch(pipe, artifacts.catalog.index, artifacts.extra_features, src, tmp_path / "out", progress=False,
                  chunk_users=3)
    log.close()
    records = list(read_records(pg_url))
    out = pd.read_parquet(tmp_path / "out")
    assert sorted(r.audit_id for r in records) == sorted(out["audit_id"].unique())
    assert len(records) == frame["user_id"].nunique()
    writers = {r.writer for r in records}
    assert len(writers) == 1 and next(iter(writers)).startswith("batch-")
    res = verify_store(pg_url)
    assert res.ok and [c.records for c in res.chains] == [len(records)]
