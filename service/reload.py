"""Hot reload: build a complete new pipeline beside the serving one, then swap
one reference.

A request takes the current `Snapshot` once, at its start, and uses only that
object; so a request in flight during a swap finishes on the old model and
policy, and a response is never a mix of two versions. A load that fails
(corrupt artifact, bad policy) changes nothing: the old snapshot keeps
serving and the error is returned and logged. The retired snapshot's stages
are closed when its last request finishes.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from audit.log import AuditLog
from audit.policy import Policy, load_policy
from recsys.artifacts import Artifacts, resolve_version_dir
from recsys.blend import Blend
from recsys.compose import build_pipeline, load_artifacts
from recsys.errors import ConfigError, EthicrecError
from recsys.lru import LRUCache
from recsys.microbatch import MicroBatcher
from recsys.pipeline import Pipeline
from service.audit_trail import audit_target
from service.config import ServiceConfig


class Snapshot:
    """One immutable (artifacts, policy, pipeline) triple and the count of
    requests using it."""

    def __init__(self, artifacts: Artifacts, policy: Policy, pipeline: Pipeline) -> None:
        self.artifacts = artifacts
        self.policy = policy
        self.pipeline = pipeline
        self._lock = threading.Lock()
        self._users = 0
        self._retired = False
        self._closed = False

    @property
    def model_version(self) -> str:
        return self.artifacts.version

    def _enter(self) -> None:
        with self._lock:
            self._users += 1

    def _exit(self) -> None:
        with self._lock:
            self._users -= 1
            close = self._retired and self._users == 0
        if close:
            self.close()

    def retire(self) -> None:
        with self._lock:
            self._retired = True
            close = self._users == 0
        if close:
            self.close()

    def caches(self) -> dict[str, LRUCache]:
        """The LRU caches this snapshot's requests fill (and the precomputed user vectors they are read
        before), by name, for metrics: what the pipeline's stages declare (Pipeline.resources)."""
        return dict(self.pipeline.resources().caches)

    def batchers(self) -> dict[str, MicroBatcher]:
        """The store's text-encoding micro-batchers by name (none when batching is off), for metrics."""
        return {b.name: b for b in (self.artifacts.store.batchers or {}).values()}

    def monitor(self):
        """The audit stage's rolling user-group monitor (None when the policy turns it off)."""
        return self.pipeline.resources().monitors.get("user_groups")

    def exposure_window(self):
        """The audit stage's amortised exposure window (None when the policy turns it off)."""
        return self.pipeline.resources().monitors.get("exposure_window")

    def close(self) -> None:
        """Stop stage-owned helpers (e.g. the audit's background monitor); once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.pipeline.close()


def load_models(config: ServiceConfig, previous: Snapshot | None = None) -> tuple[Artifacts, Policy]:
    """The configured policy and artifact version (LATEST is re-read now).
    Artifacts already loaded from the same version directory are reused:
    versions are immutable, and loading BERT is the slow part."""
    policy = load_policy(config.policy)
    vdir = resolve_version_dir(config.artifacts)
    if previous is not None and previous.artifacts.path.resolve() == vdir.resolve():
        return previous.artifacts, policy
    # Vectors read into memory rather than memory-mapped: a request gathers ~120 scattered rows, and from a
    # memory-mapped file (4 KiB pages) the TLB misses slowed every stage after it. Measured in the server, one
    # client back to back, three alternating pairs: Pipeline.run median 0.94 -> 0.80, 0.98 -> 0.60,
    # 0.90 -> 0.87 ms (bench/README.md). The price: each server process holds its own copy (4 bytes x 384
    # per item, 15 MB for the demo catalog) instead of sharing the page cache.
    artifacts = load_artifacts(vdir, device=config.device, vectors_in_memory=True,
                               encode_precision=config.encode_precision)
    if config.encode_batch_max:
        artifacts.store.enable_batching(max_batch=config.encode_batch_max, instances=config.encode_instances,
                                        max_wait_s=config.encode_batch_wait_ms / 1000.0)
    return artifacts, policy


def assemble(config: ServiceConfig, artifacts: Artifacts, policy: Policy, audit_log: AuditLog) -> Snapshot:
    pipeline = build_pipeline(artifacts, policy=policy, audit_log=audit_log, limits=config.limits,
                              blend=Blend(config.blend, config.blend_weight))
    return Snapshot(artifacts, policy, pipeline)


def build_snapshot(config: ServiceConfig, audit_log: AuditLog, previous: Snapshot | None = None) -> Snapshot:
    artifacts, policy = load_models(config, previous)
    if previous is not None:
        if audit_target(config, policy) != audit_log.target:
            raise ConfigError(f"policy key log.store names another audit store than the one in use "
                              f"({audit_log.store.display}): the store is chosen at start-up; restart to change it")
    return assemble(config, artifacts, policy, audit_log)


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    model_version: str        # serving after the attempt
    policy_version: str
    previous_model_version: str
    previous_policy_version: str
    error: str | None = None


class Current:
    """The serving snapshot, swappable at run time."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._swap = threading.Lock()     # guards the reference and the per-snapshot user count together
        self._reloading = threading.Lock()  # one reload at a time; loading happens outside _swap
        self._idle = threading.Condition()
        self._in_use = 0

    def get(self) -> Snapshot:
        return self._snapshot

    @contextlib.contextmanager
    def use(self) -> Iterator[Snapshot]:
        """The snapshot for one request; it is not closed until the block ends."""
        with self._swap:
            snap = self._snapshot
            snap._enter()
        with self._idle:
            self._in_use += 1
        try:
            yield snap
        finally:
            snap._exit()
            with self._idle:
                self._in_use -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is using any snapshot (shutdown: before the audit
        log closes under a handler still finishing). False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_use == 0, timeout)

    def reload(self, config: ServiceConfig, audit_log: AuditLog) -> ReloadResult:
        with self._reloading:
            old = self._snapshot
            try:
                new = build_snapshot(config, audit_log, previous=old)
            except Exception as exc:  # whatever went wrong, the old snapshot keeps serving
                reason = str(exc) if isinstance(exc, (EthicrecError, OSError)) else f"{type(exc).__name__}: {exc}"
                return ReloadResult(False, old.model_version, old.policy.version, old.model_version,
                                    old.policy.version, reason)
            with self._swap:
                self._snapshot = new
            old.retire()
            return ReloadResult(True, new.model_version, new.policy.version, old.model_version, old.policy.version)
