"""Binary classifiers for tabular decisions (credit, medical diagnosis): logistic regression and an MLP.

Both output one logit for the favourable label. Evaluation follows AIF360's demo: the decision
threshold is the one (of 0.01 … 0.99) with the best balanced accuracy on the split named
``threshold_split``; every evaluation split is then scored at that threshold with the metrics of
:mod:`rsft.metrics.fairness`, logged as ``<split>/<metric>`` (plus ``<split>/threshold``).
The groups (``groups``: their names in metric keys, by group id s; ``reference``: the reference group's id)
come from the task's split (``"@task.data.group_keys"``, ``"@task.data.reference"``); by default two groups,
s = 1 the reference (AIF360's privileged group). During fine-tuning the label parity of the epoch's
accepted set is logged: ``train/accepted_max_abs_spd`` (max over groups of |P(y=1 | g) − P(y=1 | reference)|)
and, with two groups, ``train/accepted_spd`` (the other group minus the reference).

``cell_weights`` (a K×2 table [group][y]) weights each row's loss by its (group, label) cell: with the
reweighing weights W(g, y) this is the exact weighted fit of AIF360's ``Reweighing`` (``model=logistic_weighted``),
the baseline reweighing-by-rejection is compared with; for K groups it is the same fit with 2K cell weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rsft.batch import Batch, field
from rsft.metrics.fairness import best_threshold, classification_report
from rsft.models.base import FineTunedModel

#: What a tabular decision model needs upstream.
NEEDS_DECISIONS = "use proposal=dataset with task=decisions"


class TabularDecisionModel(FineTunedModel):
    """The evaluation every tabular decision model shares: scores on the evaluation splits, the decision
    threshold chosen on ``threshold_split``, fairness metrics per split. Subclasses give :meth:`scores`."""

    def __init__(
        self,
        eval_splits: Sequence[str] = ("val", "test"),
        threshold_split: str = "val",
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        lr_schedule: str = "constant",
        groups: Sequence[str] | None = None,
        reference: int = 1,
    ):
        super().__init__(lr=lr, weight_decay=weight_decay, lr_schedule=lr_schedule)
        eval_splits = tuple(eval_splits)
        if threshold_split not in eval_splits:
            raise ValueError(
                f"model.net.threshold_split={threshold_split!r} must be one of "
                f"model.net.eval_splits={list(eval_splits)}"
            )
        self.group_keys = tuple(str(g) for g in groups) if groups else ("0", "1")
        if len(self.group_keys) < 2 or not 0 <= int(reference) < len(self.group_keys):
            raise ValueError(
                f"model.net.reference={reference!r} must be the id of one of the model.net.groups "
                f"{list(self.group_keys)} (at least two)"
            )
        self.reference = int(reference)
        self.eval_splits = eval_splits
        self.threshold_split = threshold_split
        self._collected: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
        self._accepted_parity: dict[str, float] = {}  # of the round just sampled (on_round), logged at epoch start

    def scores(self, batch: Batch) -> torch.Tensor:  # pragma: no cover - interface
        """Score of the favourable decision per row (decide favourable when score > threshold)."""
        raise NotImplementedError

    def on_round(self, epoch: int, stats: dict[str, float], accepted: Batch) -> None:
        """The data module has just rebuilt the accepted set: keep its labels' parity differences to log."""
        self._accepted_parity = {}
        if not accepted or "s" not in accepted or "y" not in accepted:
            return
        s, y = accepted["s"].long(), accepted["y"].double()
        if not bool((s == self.reference).any()):
            return
        reference_rate = y[s == self.reference].mean()
        spd = {g: float(y[s == g].mean() - reference_rate) for g in range(len(self.group_keys)) if bool((s == g).any())}
        spd.pop(self.reference)
        if spd:
            self._accepted_parity["train/accepted_max_abs_spd"] = max(abs(v) for v in spd.values())
        if len(self.group_keys) == 2 and (1 - self.reference) in spd:
            self._accepted_parity["train/accepted_spd"] = spd[1 - self.reference]

    def on_train_epoch_start(self) -> None:
        for name, value in self._accepted_parity.items():
            self.log(name, value, on_step=False, on_epoch=True, batch_size=1)

    # -- evaluation -------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._collected = {}

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        s = field(batch, "s", "fairness evaluation (every evaluation batch)", NEEDS_DECISIONS)
        self._collected.setdefault(dataloader_idx, []).append((self.scores(batch), batch["y"], s))

    def evaluation_data(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The last validation round's (scores, y, s) per evaluation split."""
        if len(self._collected) != len(self.eval_splits):
            raise ValueError(
                f"the task gave {len(self._collected)} evaluation sets but model.net.eval_splits names "
                f"{len(self.eval_splits)} ({list(self.eval_splits)}); make them agree"
            )
        return {
            self.eval_splits[i]: tuple(torch.cat([part[k] for part in parts]) for k in range(3))
            for i, parts in sorted(self._collected.items())
        }

    def decision_threshold(self) -> float:
        scores, y, _ = self.evaluation_data()[self.threshold_split]
        return best_threshold(scores, y)

    def on_validation_epoch_end(self) -> None:
        if not self._collected:
            return
        threshold = self.decision_threshold()
        for split, (scores, y, s) in self.evaluation_data().items():
            report = classification_report(scores, y, s, threshold, self.reference, self.group_keys)
            report["threshold"] = threshold
            self.log_dict({f"{split}/{k}": float(v) for k, v in report.items()}, batch_size=1, add_dataloader_idx=False)


class BinaryTabularClassifier(TabularDecisionModel):
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
        cell_weights: Sequence[Sequence[float]] | None = None,
        groups: Sequence[str] | None = None,
        reference: int = 1,
    ):
        super().__init__(
            eval_splits,
            threshold_split,
            lr=lr,
            weight_decay=weight_decay,
            lr_schedule=lr_schedule,
            groups=groups,
            reference=reference,
        )
        if input_dim <= 0:
            raise ValueError(f"model.net.input_dim must be positive, got {input_dim}")
        if l2 < 0:
            raise ValueError(f"model.net.l2 must be ≥ 0, got {l2}")
        self.save_hyperparameters()
        self.cell_weights = None if cell_weights is None else _check_cell_weights(cell_weights, len(self.group_keys))
        layers: list[nn.Module] = []
        width = int(input_dim)
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.l2 = float(l2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Probability of the favourable label (used by on-policy rules such as preferential sampling)."""
        return torch.sigmoid(self(x))

    def scores(self, batch: Batch) -> torch.Tensor:
        return self.predict_proba(batch["x"])

    # -- training ---------------------------------------------------------------------------
    def training_loss(self, batch: Batch) -> torch.Tensor:
        y = field(batch, "y", "a tabular classifier's training step", NEEDS_DECISIONS)
        losses = nn.functional.binary_cross_entropy_with_logits(self(batch["x"]), y.float(), reduction="none")
        if self.cell_weights is not None:
            field(batch, "s", "model.net.cell_weights (it weights rows by their (group, y) cell)", NEEDS_DECISIONS)
            # the mean of w·loss, not normalised by Σw: the weights average 1 over the training split, so this
            # is sklearn's sample_weight objective divided by n (what the l2 = 1/n convention assumes)
            losses = losses * self.cell_weights.to(losses.device)[batch["s"].long(), batch["y"].long()]
        loss = losses.mean()
        if self.l2 > 0:
            weights = sum((m.weight**2).sum() for m in self.net if isinstance(m, nn.Linear))
            loss = loss + 0.5 * self.l2 * weights
        return loss


def _check_cell_weights(cell_weights: Sequence[Sequence[float]], num_groups: int) -> torch.Tensor:
    weights = torch.as_tensor(cell_weights, dtype=torch.float32)
    if weights.shape != (num_groups, 2) or not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError(
            f"model.net.cell_weights must be a {num_groups}×2 table [[w(s=0,y=0), w(s=0,y=1)], [w(s=1,y=0), ...], ...] "
            f"of finite non-negative weights, one row per group of model.net.groups, got {cell_weights!r}"
        )
    return weights


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
