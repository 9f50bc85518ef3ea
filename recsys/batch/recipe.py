"""How a batch job's pipeline is built: in this process (`build_batch_pipeline`) or, from a picklable
`PipelineRecipe`, in a worker process (recsys/batch/process_engine.py) or a Ray actor (recsys/batch/ray_engine.py).

Its own module so that the driver (recsys/batch/run.py) and both engines import it without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recsys.batch.scoring import ChunkAuditLog, batch_policy
from recsys.blend import Blend


@dataclass(frozen=True)
class PipelineRecipe:
    """How to build the batch pipeline in another process (a Ray actor)."""

    artifacts: str
    policy: str | None
    audit_log: str
    device: str = "auto"
    encode_precision: str = "auto"
    blend: str = "lightgbm"
    blend_weight: float = 0.5
    torch_threads: int | None = None
    audit_key_file: str | None = None      # None: ETHICREC_AUDIT_KEY, else the default key file
    audit_store_password_file: str | None = None   # a postgresql:// audit_log: else ETHICREC_AUDIT_STORE_PASSWORD

    def build(self):
        """(pipeline, artifacts, audit log) — close the log when done."""
        from audit.log import AuditLog
        from audit.policy import load_policy
        from recsys.compose import load_artifacts
        from recsys.device import set_cpu_threads

        set_cpu_threads(self.torch_threads)
        policy = load_policy(Path(self.policy) if self.policy else None)
        artifacts = load_artifacts(self.artifacts, device=self.device, encode_precision=self.encode_precision)
        # One commit per chunk, so the fsync-per-commit mode costs little and keeps the promise that a part's
        # audit records are durable first. Lazy: neither the log nor a default key file is created before the
        # job's input has been checked (a job with bad input leaves nothing behind).
        log = AuditLog(self.audit_log, key_file=self.audit_key_file, synchronous="FULL", lazy=True,
                       password_file=self.audit_store_password_file)
        return build_batch_pipeline(artifacts, policy, log, Blend(self.blend, self.blend_weight)), artifacts, log


def build_batch_pipeline(artifacts, policy, audit_log, blend: Blend | None = None):
    """The serving pipeline as batch runs it: no per-request size caps, the rolling
    monitor off (see scoring.batch_policy), audit records committed per chunk."""
    from recsys.batch.scoring import BATCH_LIMITS
    from recsys.compose import build_pipeline

    return build_pipeline(artifacts, policy=batch_policy(policy), audit_log=ChunkAuditLog(audit_log),
                          limits=BATCH_LIMITS, blend=blend or Blend())
