"""LightGBM LambdaRank ranker with the scikit-learn estimator contract."""
from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np

from recsys.compiled_trees import CompiledTrees
from recsys.quickscorer import SplitMemo


class LambdaRanker:
    """Keyword-only parameters, stored as given; learned state ends in `_`."""

    def __init__(self, *, n_estimators: int = 300, learning_rate: float = 0.03, num_leaves: int = 31,
                 min_child_samples: int = 50, subsample: float = 0.8, colsample_bytree: float = 0.8,
                 min_iterations: int = 50, eval_at: int = 10, random_state: int = 0, n_jobs: int = 2) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_iterations = min_iterations
        self.eval_at = eval_at
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _check_params(self) -> None:
        for name in ("n_estimators", "num_leaves", "min_child_samples", "min_iterations", "eval_at"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.min_iterations > self.n_estimators:
            raise ValueError(f"min_iterations ({self.min_iterations}) must not exceed n_estimators "
                             f"({self.n_estimators})")
        for name in ("learning_rate", "subsample", "colsample_bytree"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")

    def fit(self, X: np.ndarray, y: np.ndarray, group: np.ndarray, *, feature_names: list[str],
            eval_set: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> "LambdaRanker":
        """With `eval_set`, all `n_estimators` trees are grown and the model keeps the prefix with the best
        validation NDCG@eval_at among those of at least `min_iterations` trees: early stopping on a noisy
        curve once picked 5 trees, leaving three quarters of the candidates tied."""
        self._check_params()
        model = lgb.LGBMRanker(
            objective="lambdarank", n_estimators=self.n_estimators, learning_rate=self.learning_rate,
            num_leaves=self.num_leaves, min_child_samples=self.min_child_samples, subsample=self.subsample,
            subsample_freq=1 if self.subsample < 1 else 0, colsample_bytree=self.colsample_bytree,
            random_state=self.random_state, n_jobs=self.n_jobs, deterministic=True, force_col_wise=True,
            verbose=-1,
        )
        kw: dict = {"feature_name": list(feature_names), "eval_at": [self.eval_at]}
        if eval_set is not None:
            Xv, yv, gv = eval_set
            kw.update(eval_X=(Xv,), eval_y=(yv,), eval_group=[gv])
        model.fit(X, y, group=group, **kw)
        self.booster_ = model.booster_
        self.validation_curve_: list[float] = []
        if eval_set is not None:
            curve = np.asarray(next(iter(model.evals_result_.values()))[f"ndcg@{self.eval_at}"], dtype=np.float64)
            self.validation_curve_ = curve.tolist()
            start = self.min_iterations - 1
            self.best_iteration_ = int(start + np.argmax(curve[start:]) + 1)
        else:
            self.best_iteration_ = self.n_estimators
        self.feature_names_ = list(feature_names)
        self.feature_importance_ = dict(zip(self.feature_names_,
                                            self.booster_.feature_importance("gain", iteration=self.best_iteration_)
                                            .astype(float).tolist()))
        self.compiled_ = CompiledTrees.from_booster(self.booster_, self.best_iteration_)
        return self

    @property
    def best_validation_ndcg_(self) -> float | None:
        return self.validation_curve_[self.best_iteration_ - 1] if getattr(self, "validation_curve_", None) else None

    def predict(self, X: np.ndarray, *, keys: np.ndarray | None = None, memo: SplitMemo | None = None) -> np.ndarray:
        """LightGBM's scores; from the compiled trees when the model allows (the same numbers, ~2.7x faster
        for a request's 100 rows, and without holding the GIL: recsys/compiled_trees.py). `keys`/`memo`
        (`item_memo`) only make it faster for the rows they cover."""
        if getattr(self, "compiled_", None) is not None:
            return self.compiled_.predict(X, keys=keys, memo=memo)
        return self.booster_.predict(X, num_iteration=self.best_iteration_, num_threads=1)

    def item_memo(self, names: tuple[str, ...], values: np.ndarray) -> SplitMemo | None:
        """Precomputed splits for known rows (catalog items) over the features `names` (their `values`, one
        row per item), for `predict(X, keys=rows, memo=...)`; None when the compiled trees cannot use one or
        the model lacks one of the features."""
        compiled = getattr(self, "compiled_", None)
        if compiled is None or not set(names) <= set(self.feature_names_):
            return None
        return compiled.memo([self.feature_names_.index(n) for n in names], values)

    def save(self, path: Path) -> None:
        """LightGBM's own text format: no pickle, readable, diffable."""
        self.booster_.save_model(str(path), num_iteration=self.best_iteration_)

    @classmethod
    def load(cls, path: Path) -> "LambdaRanker":
        self = cls()
        self.booster_ = lgb.Booster(model_file=str(path))
        self.best_iteration_ = self.booster_.current_iteration()
        self.feature_names_ = self.booster_.feature_name()
        self.feature_importance_ = dict(zip(self.feature_names_,
                                            self.booster_.feature_importance("gain").astype(float).tolist()))
        self.compiled_ = CompiledTrees.from_booster(self.booster_, self.best_iteration_)
        return self
