"""An MLP classifier fine-tuned on accepted (x, y) candidates."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from rsft.batch import Batch, field
from rsft.models.base import FineTunedModel


class MLPClassifier(FineTunedModel):
    """Softmax classifier on ``batch["x"]`` (flattened) with integer labels ``batch["y"]``.

    Validation batches may carry a ``split`` name per dataloader: accuracy is logged as
    ``val/<split>_accuracy`` for each (e.g. in-region and broad).
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        hidden: tuple[int, ...] = (128, 128),
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: str = "constant",
        val_splits: tuple[str, ...] = ("val",),
    ):
        super().__init__(lr=lr, weight_decay=weight_decay, lr_schedule=lr_schedule)
        if input_dim <= 0 or num_classes < 2:
            raise ValueError(f"model needs input_dim > 0 and num_classes ≥ 2, got {input_dim}, {num_classes}")
        self.save_hyperparameters()
        layers: list[nn.Module] = []
        width = input_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)
        self.val_splits = list(val_splits)
        self.accuracy = nn.ModuleList(MulticlassAccuracy(num_classes, average="micro") for _ in self.val_splits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))

    def training_loss(self, batch: Batch) -> torch.Tensor:
        field(batch, "y", "the classifier's training step", "use a task that labels its candidates")
        return nn.functional.cross_entropy(self(batch["x"]), batch["y"])

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        metric = self.accuracy[dataloader_idx]
        metric.update(self(batch["x"]).argmax(1), batch["y"])
        self.log(f"val/{self.val_splits[dataloader_idx]}_accuracy", metric, add_dataloader_idx=False, prog_bar=True)
