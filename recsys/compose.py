"""The composition root: the one module that knows both the recsys stages and the audit package.

recsys core (artifacts, stages, pipeline) does not import audit; audit imports recsys core. Whatever needs
the two together is put together here, and only applications (`service`, the CLIs, `recsys.batch`, the bias
report) call it (ARCHITECTURE.md):

* `load_artifacts`: one artifact version with audit's harm classifier (harm_bert/ preferred over the n-gram
  harm/) — `recsys.artifacts.load_version` with the loader filled in;
* `check_servable`: what `recsys.artifact_update.derive_version` runs before publishing a derived version;
* `build_pipeline`: the standard stage list, with audit's `HarmStage` and `AuditStage` between ranking and the response.
"""
from __future__ import annotations

from pathlib import Path

from audit.harm_model import load_harm
from recsys.artifacts import Artifacts, load_version
from recsys.blend import Blend
from recsys.interest import CrossEncoderScorer
from recsys.pipeline import (CrossEncoderStage, FeatureStage, InterestStage, Pipeline, RankStage, ResolveStage,
                             RespondStage, Stage)
from recsys.validation import Limits


def load_artifacts(path: str | Path, *, device: str = "auto", verify: bool = True,
                   vectors_in_memory: bool = False, encode_precision: str = "auto") -> Artifacts:
    """One version (or the root's LATEST) with every model, audit's harm classifier included; the parameters
    are `recsys.artifacts.load_version`'s."""
    return load_version(path, load_harm=load_harm, device=device, verify=verify,
                        vectors_in_memory=vectors_in_memory, encode_precision=encode_precision)


def check_servable(version_dir: Path, *, device: str = "cpu") -> None:
    """Raise ArtifactError unless `version_dir` loads completely with every sha256 verified (the check
    `derive_version` runs before it publishes)."""
    load_artifacts(version_dir, device=device, verify=True)


def build_pipeline(artifacts: Artifacts, *, policy, audit_log, limits: Limits | None = None,
                   blend: Blend | None = None, cross_encoder: bool | None = None, cross_encoder_top_n: int = 20,
                   cross_encoder_weight: float = 0.5) -> Pipeline:
    """The standard stage list. `policy`/`audit_log` come from the audit package.

    `cross_encoder`: None (default) adds the cross-encoder re-scoring stage when the artifact has a
    `cross_encoder/` and it was loaded on CUDA (device auto with a GPU present); True adds it on any
    device (ValueError when the artifact has none); False never adds it.
    """
    from audit.harm_stage import HarmStage
    from audit.stage import AuditStage   # lazy, as before the move: the audit stage's imports only when built

    ce = artifacts.cross_encoder
    if cross_encoder and ce is None:
        raise ValueError(f"artifact {artifacts.version} has no cross_encoder/ "
                         "(train one with python -m recsys.train_cross_encoder)")
    use_ce = ce is not None and (cross_encoder or (cross_encoder is None and ce.device.type == "cuda"))
    stages: list[Stage] = [
        ResolveStage(artifacts, limits or Limits()),
        InterestStage(artifacts),
        FeatureStage(artifacts),
        RankStage(artifacts, blend or Blend()),
    ]
    if use_ce:
        stages.append(CrossEncoderStage(CrossEncoderScorer(ce, artifacts.catalog.texts), top_n=cross_encoder_top_n,
                                        weight=cross_encoder_weight))
    audit = AuditStage(artifacts, policy, audit_log)
    # The harm model's inference on request texts, timed apart from the audit's own budget (audit/harm_stage.py).
    stages += [HarmStage(audit.harm, policy), audit, RespondStage(artifacts)]
    return Pipeline(stages)
