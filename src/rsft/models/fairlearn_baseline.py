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

The sensitive feature handed to fairlearn is the task's group id ``s``: the binary attribute, or one of K
groups (the values of an attribute, or the value tuples of several), which ``MetricFrame``,
``ExponentiatedGradient`` and ``ThresholdOptimizer`` take as they are (REFERENCES §9); the evaluation compares
every group with the task's reference group, as for the other models.

Both predict randomized decisions; they are drawn with ``random_state=model.net.seed`` per batch, so a
run is reproducible. The scores handed to the evaluation are those 0/1 decisions: every threshold of
the grid then gives the same decisions, so the validation split chooses nothing (``<split>/threshold``
reads 0.01) and the fairlearn method alone decides.

Checkpoints hold no fitted estimator, only a fingerprint of the fit as tensors (key ``fairlearn_fit``): a
SHA-256 of the training rows and the fitted method's probability of a positive decision on every training
row. ``resume`` refits the method on this config's training split and refuses, naming the entry, unless the
refit reproduces both bit for bit. Refitting was chosen over storing the estimator's arrays and rebuilding it:
the fit is deterministic given the data, ``C``, ``max_iter`` (and ``seed`` for the draws), so a resumed run
goes through exactly the code and the estimator of an uninterrupted one, while a rebuild would set private
attributes of fairlearn and scikit-learn objects (a second construction path to keep right by hand across
versions). A checkpoint is then nothing but tensors, read with ``torch.load(weights_only=True)``; nothing in it
is unpickled. The refit costs one fit (seconds) per resume.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
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
        groups: Sequence[str] | None = None,
        reference: int = 1,
    ):
        # l2 (model=logistic's ½·l2·‖w‖² on the mean loss), when an experiment sets it, fixes the base learner's
        # C = 1 / (l2 · n) so both rows regularise alike; lr is accepted for the same reason and not used.
        super().__init__(eval_splits, threshold_split, lr=lr, groups=groups, reference=reference)
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

    # -- the checkpoint: a fingerprint of the fit, refitted and checked on resume (see the module docstring) ------
    def decision_probabilities(self) -> torch.Tensor:
        """The fitted method's probability of deciding 1 on each training row (float64): what its randomized
        decisions are drawn from."""
        x, s = self.rows["x"], self.rows["s"]
        # _pmf_predict: the probabilities predict() draws from; fairlearn is pinned (0.15) in pyproject.toml.
        if isinstance(self.estimator, ThresholdOptimizer):
            pmf = self.estimator._pmf_predict(x, sensitive_features=s)
        else:
            pmf = self.estimator._pmf_predict(x)
        return torch.as_tensor(np.ascontiguousarray(np.asarray(pmf, dtype=np.float64)[:, 1]))

    def training_rows_digest(self) -> torch.Tensor:
        """SHA-256 of the training rows (x, y, s as fitted), as 32 uint8."""
        digest = hashlib.sha256()
        for key in ("x", "y", "s"):
            digest.update(np.ascontiguousarray(self.rows[key]).tobytes())
        return torch.tensor(list(digest.digest()), dtype=torch.uint8)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.estimator is not None:
            checkpoint[FIT_KEY] = {
                "training_rows_sha256": self.training_rows_digest(),
                "decision_probabilities": self.decision_probabilities(),
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        where = self._resumed_checkpoint()
        self.check_checkpoint(checkpoint, where)
        fit = checkpoint.get(FIT_KEY)
        if fit is None:
            return  # saved before any fit (model.pretrain.steps=0): the evaluation says so
        self.fit_method()
        if not _identical(self.decision_probabilities(), fit["decision_probabilities"]):
            self.estimator = None
            raise ValueError(
                f"{where}: the refit of model.net.method={self.method!r} does not reproduce "
                f"{FIT_KEY}.decision_probabilities bit for bit (model.net.C, max_iter, or the fairlearn / "
                "scikit-learn version differ from the run that wrote it); resume with that run's config and "
                "environment, or start the run again without resume"
            )

    def check_checkpoint(self, checkpoint: dict[str, Any], where: str) -> None:
        """The checks that need no refit: no pickled estimator, the fingerprint's layout, the same training rows."""
        if PICKLED_KEY in checkpoint:
            raise ValueError(
                f"{where} holds {PICKLED_KEY!r}, a pickled fitted estimator (written by an earlier rsft); rsft no "
                "longer unpickles checkpoint entries, since unpickling can run code. Start the run again without "
                "resume: the fit is deterministic and takes seconds"
            )
        fit = checkpoint.get(FIT_KEY)
        if fit is None:
            return  # saved before any fit (model.pretrain.steps=0): the evaluation says so
        if not isinstance(fit, dict) or set(fit) != {"training_rows_sha256", "decision_probabilities"}:
            raise ValueError(
                f"{where}: its {FIT_KEY!r} entry is not the fingerprint rsft writes (a dict of "
                "training_rows_sha256 and decision_probabilities); give a checkpoint written by rsft"
            )
        if not _identical(self.training_rows_digest(), fit["training_rows_sha256"]):
            raise ValueError(
                f"{where}: {FIT_KEY}.training_rows_sha256 differs from this config's training split "
                "(model.net.data): resume with the task config of the run that wrote the checkpoint"
            )

    def _resumed_checkpoint(self) -> str:
        """How errors name the checkpoint being loaded: the ``resume`` key and, under a Trainer, the file."""
        path = getattr(self._trainer, "ckpt_path", None)  # _trainer: None when called outside trainer.fit
        return f"resume: the checkpoint {str(path)!r}" if path else "resume: the checkpoint"


#: The checkpoint entry holding the fit's fingerprint (tensors only).
FIT_KEY = "fairlearn_fit"
#: Where rsft used to store the pickled estimator; refused, never unpickled.
PICKLED_KEY = "fairlearn_estimator"


def _identical(expected: torch.Tensor, stored: Any) -> bool:
    return (
        torch.is_tensor(stored)
        and stored.dtype == expected.dtype
        and stored.shape == expected.shape
        and torch.equal(stored, expected)
    )
