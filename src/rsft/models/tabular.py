"""Binary classifiers for tabular decisions (credit): logistic regression and an MLP.

Both output one logit for the favourable label. Evaluation follows AIF360's demo: the decision
threshold is the one (of 0.01 … 0.99) with the best balanced accuracy on the split named
``threshold_split``; every evaluation split is then scored at that threshold with the metrics of
:mod:`rsft.metrics.fairness`, logged as ``<split>/<metric>`` (plus ``<split>/threshold``).
During fine-tuning the statistical parity difference of the labels of the epoch's accepted set is
logged as ``train/accepted_spd`` (when the batches carry the sensitive attribute ``s``).
"""

from __future__ import annotations

import torch
from torch import nn

from rsft.batch import Batch
from rsft.metrics.fairness import best_threshold, classification_report
from rsft.models.base import FineTunedModel


class BinaryTabularClassifier(FineTunedModel):
    """``hidden=[]``: logistic regression; otherwise an MLP with ReLU layers of those widths.

    ``l2`` adds ½·l2·‖weights‖² (biases excluded) to the mean log-loss: sklearn's default
    ``LogisticRegression(C=1)`` on n rows corresponds to l2 = 1/n.
    """

    def __init__(
        self,
        input_dim: int,
        hidden: tuple[int, ...] = (),
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        lr_schedule: str = "constant",
        l2: float = 0.0,
        eval_splits: tuple[str, ...] = ("val", "test"),
        threshold_split: str = "val",
    ):
        super().__init__(lr=lr, weight_decay=weight_decay, lr_schedule=lr_schedule)
        if input_dim <= 0:
            raise ValueError(f"model.net.input_dim must be positive, got {input_dim}")
        if l2 < 0:
            raise ValueError(f"model.net.l2 must be ≥ 0, got {l2}")
        eval_splits = tuple(eval_splits)
        if threshold_split not in eval_splits:
            raise ValueError(
                f"model.net.threshold_split={threshold_split!r} must be one of "
                f"model.net.eval_splits={list(eval_splits)}"
            )
        self.save_hyperparameters()
        layers: list[nn.Module] = []
        width = int(input_dim)
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.l2 = float(l2)
        self.eval_splits = eval_splits
        self.threshold_split = threshold_split
        self._collected: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Probability of the favourable label (used by on-policy rules such as preferential sampling)."""
        return torch.sigmoid(self(x))

    # -- training ---------------------------------------------------------------------------
    def training_loss(self, batch: Batch) -> torch.Tensor:
        if "y" not in batch:
            raise KeyError(f"the classifier needs labels 'y' in the accepted batch, which has {sorted(batch)}")
        loss = nn.functional.binary_cross_entropy_with_logits(self(batch["x"]), batch["y"].float())
        if self.l2 > 0:
            weights = sum((m.weight**2).sum() for m in self.net if isinstance(m, nn.Linear))
            loss = loss + 0.5 * self.l2 * weights
        return loss

    def on_train_epoch_start(self) -> None:
        # The data module has just rebuilt the accepted set: log its labels' parity difference.
        accepted = getattr(getattr(self.trainer, "datamodule", None), "last_accepted", None)
        if accepted and "s" in accepted and "y" in accepted:
            s, y = accepted["s"].long(), accepted["y"].double()
            if bool((s == 0).any()) and bool((s == 1).any()):
                spd = y[s == 0].mean() - y[s == 1].mean()
                self.log("train/accepted_spd", float(spd), on_step=False, on_epoch=True, batch_size=1)

    # -- evaluation -------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._collected = {}

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if "s" not in batch:
            raise KeyError(
                "fairness evaluation needs the sensitive attribute 's' in every evaluation batch, which has "
                f"{sorted(batch)}"
            )
        self._collected.setdefault(dataloader_idx, []).append((self.predict_proba(batch["x"]), batch["y"], batch["s"]))

    def on_validation_epoch_end(self) -> None:
        if not self._collected:
            return
        if len(self._collected) != len(self.eval_splits):
            raise ValueError(
                f"the task gave {len(self._collected)} evaluation sets but model.net.eval_splits names "
                f"{len(self.eval_splits)} ({list(self.eval_splits)}); make them agree"
            )
        data = {
            self.eval_splits[i]: tuple(torch.cat([part[k] for part in parts]) for k in range(3))
            for i, parts in sorted(self._collected.items())
        }
        scores, y, _ = data[self.threshold_split]
        threshold = best_threshold(scores, y)
        for split, (scores, y, s) in data.items():
            report = classification_report(scores, y, s, threshold)
            report["threshold"] = threshold
            self.log_dict({f"{split}/{k}": float(v) for k, v in report.items()}, batch_size=1, add_dataloader_idx=False)


class LogisticRegression(BinaryTabularClassifier):
    """``model=logistic``: one linear layer and a sigmoid."""

    def __init__(self, input_dim: int, **kwargs):
        super().__init__(input_dim, hidden=(), **kwargs)


class MLPTabularClassifier(BinaryTabularClassifier):
    """``model=mlp_tabular``: ReLU MLP with one output logit."""

    def __init__(self, input_dim: int, hidden: tuple[int, ...] = (64, 64), **kwargs):
        if not hidden:
            raise ValueError(
                "model=mlp_tabular needs at least one hidden layer in model.net.hidden (use model=logistic for none)"
            )
        super().__init__(input_dim, hidden=tuple(hidden), **kwargs)
