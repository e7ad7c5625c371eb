"""``model=fairlearn``: fairlearn's in- and post-processing methods as baselines beside rsft's fair resampling.

The method is fitted once, on the whole training split (``model.net.data``, the task's split), when
rsft would pre-train (``model.pretrain.steps`` > 0); the base learner is scikit-learn's
``LogisticRegression(C=1)`` on the same standardised features as ``model=logistic``. Fine-tuning then
changes nothing (the model has no trainable parameters; run it with ``trainer.max_epochs=1``): the
evaluation is :class:`~rsft.models.tabular.TabularDecisionModel`'s, the same metric code as every
other row of a fairness table.

Methods (``model.net.method``):

- ``exponentiated_gradient_dp`` / ``exponentiated_gradient_eo``: ``ExponentiatedGradient`` with
  ``DemographicParity`` / ``EqualizedOdds`` (in-processing: a randomized classifier over reweighted fits).
  Its objective is the *balanced* error (false-positive and false-negative costs 1/(2·P(y=0)) and
  1/(2·P(y=1)) on the training split), so it aims at the balanced accuracy the other rows are tuned for.
- ``threshold_optimizer_dp`` / ``threshold_optimizer_eo``: ``ThresholdOptimizer`` with
  ``demographic_parity`` / ``equalized_odds`` and ``objective="balanced_accuracy_score"``
  (post-processing: group-specific thresholds on the base learner's probabilities; it reads the
  sensitive attribute at prediction time).

Both predict randomized decisions; they are drawn with ``random_state=model.net.seed`` per batch, so a
run is reproducible. The scores handed to the evaluation are those 0/1 decisions: every threshold of
the grid then gives the same decisions, so the validation split chooses nothing (``<split>/threshold``
reads 0.01) and the fairlearn method alone decides.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from rsft.batch import Batch, training_rows
from rsft.models.tabular import TabularDecisionModel

try:
    from fairlearn.postprocessing import ThresholdOptimizer
    from fairlearn.reductions import DemographicParity, EqualizedOdds, ErrorRate, ExponentiatedGradient
    from sklearn.linear_model import LogisticRegression as SkLogisticRegression
except ImportError as err:  # the fairness extra is optional; say how to get it
    raise ImportError(
        "model=fairlearn needs fairlearn (and scikit-learn): pip install 'rsft[fairness]' (fairlearn 0.15)"
    ) from err

METHODS = (
    "exponentiated_gradient_dp",
    "exponentiated_gradient_eo",
    "threshold_optimizer_dp",
    "threshold_optimizer_eo",
)


def _base_learner(C: float, max_iter: int) -> SkLogisticRegression:
    return SkLogisticRegression(C=C, max_iter=max_iter)


def build_method(method: str, y: np.ndarray, C: float = 1.0, max_iter: int = 1000) -> Any:
    """The unfitted fairlearn estimator named ``method`` (balanced-error objective from the labels ``y``)."""
    if method.startswith("exponentiated_gradient"):
        p1 = float(np.mean(y))
        if not 0 < p1 < 1:
            raise ValueError(f"model=fairlearn needs both labels in the training split, got P(y=1) = {p1}")
        objective = ErrorRate(costs={"fp": 0.5 / (1 - p1), "fn": 0.5 / p1})
        constraint = DemographicParity() if method.endswith("_dp") else EqualizedOdds()
        return ExponentiatedGradient(_base_learner(C, max_iter), constraints=constraint, objective=objective)
    return ThresholdOptimizer(
        estimator=_base_learner(C, max_iter),
        constraints="demographic_parity" if method.endswith("_dp") else "equalized_odds",
        objective="balanced_accuracy_score",
        predict_method="predict_proba",
    )


class FairlearnBaseline(TabularDecisionModel):
    """A fairlearn method on the training split, evaluated like the tabular classifiers (``model=fairlearn``)."""

    def __init__(
        self,
        data: Any,
        method: str = "exponentiated_gradient_dp",
        C: float = 1.0,
        max_iter: int = 1000,
        seed: int = 0,
        eval_splits: tuple[str, ...] = ("val", "test"),
        threshold_split: str = "val",
        l2: float | None = None,
        lr: float = 1e-3,
    ):
        # l2 (model=logistic's ½·l2·‖w‖² on the mean loss), when an experiment sets it, fixes the base learner's
        # C = 1 / (l2 · n) so both rows regularise alike; lr is accepted for the same reason and not used.
        super().__init__(eval_splits, threshold_split, lr=lr)
        if method not in METHODS:
            raise ValueError(
                f"model.net.method={method!r} is not a fairlearn baseline; choose one of {', '.join(METHODS)}"
            )
        if not C > 0:
            raise ValueError(f"model.net.C must be positive (inverse L2 strength, sklearn's C), got {C}")
        self.save_hyperparameters(ignore=["data"])
        rows = training_rows(data)
        missing = [k for k in ("x", "y", "s") if k not in rows]
        if missing:
            raise KeyError(
                f"model=fairlearn fits on the task's training split, which lacks {missing} (it has {sorted(rows)}); "
                "use it with task=decisions (model.net.data: ${task.data})"
            )
        # float64: fairlearn (with pandas 3) refuses to write float64 probabilities into a float32 frame
        self.rows = {
            k: rows[k].detach().cpu().numpy().astype(np.float64 if k == "x" else np.int64) for k in ("x", "y", "s")
        }
        if l2 is not None:
            if not l2 > 0:
                raise ValueError(f"model.net.l2 must be positive for model=fairlearn (it sets C = 1/(l2·n)), got {l2}")
            C = 1.0 / (float(l2) * len(self.rows["y"]))
        self.method, self.C, self.max_iter, self.seed = method, float(C), int(max_iter), int(seed)
        self.estimator: Any = None
        # no parameters to train; the dummy buffer gives the module a device for Lightning
        self.register_buffer("_device_anchor", torch.zeros(()), persistent=False)

    # -- fitting (rsft's pre-training step) -------------------------------------------------
    def fit_method(self) -> None:
        x, y, s = self.rows["x"], self.rows["y"], self.rows["s"]
        self.estimator = build_method(self.method, y, self.C, self.max_iter)
        self.estimator.fit(x, y, sensitive_features=s)

    def pretrain(
        self, draw: Callable, steps: int, batch_size: int, generator: torch.Generator, **_: Any
    ) -> list[float]:
        """Fit the fairlearn method on the whole training split (``draw``, ``steps`` and the rest are not used:
        fairlearn fits in one call). Returns the training split's balanced error of the fitted method."""
        self.fit_method()
        decisions = self._predict(self.rows["x"], self.rows["s"])
        y = self.rows["y"]
        error = 0.5 * (np.mean(decisions[y == 1] == 0) + np.mean(decisions[y == 0] == 1))
        return [float(error)]

    def _predict(self, x: np.ndarray, s: np.ndarray) -> np.ndarray:
        if self.estimator is None:
            raise RuntimeError(
                "model=fairlearn is fitted at pre-training time; it was evaluated before that "
                "(set model.pretrain.steps > 0 and no model.init_checkpoint)"
            )
        if isinstance(self.estimator, ThresholdOptimizer):
            return np.asarray(self.estimator.predict(x, sensitive_features=s, random_state=self.seed))
        return np.asarray(self.estimator.predict(x, random_state=self.seed))

    def scores(self, batch: Batch) -> torch.Tensor:
        x = batch["x"].detach().cpu().numpy().astype(np.float64)
        s = batch["s"].detach().cpu().numpy()
        return torch.as_tensor(self._predict(x, s), dtype=torch.float32, device=batch["x"].device)

    # -- no fine-tuning ------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> None:
        return None  # nothing to train: the accepted set is drawn but not used

    def configure_optimizers(self) -> None:
        return None

    # -- a fitted sklearn object in the checkpoint (so resume=auto continues with the same fit) -----------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.estimator is not None:
            checkpoint["fairlearn_estimator"] = torch.frombuffer(
                bytearray(pickle.dumps(self.estimator)), dtype=torch.uint8
            )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "fairlearn_estimator" in checkpoint:
            self.estimator = pickle.load(io.BytesIO(checkpoint["fairlearn_estimator"].numpy().tobytes()))
