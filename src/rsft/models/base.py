"""What every fine-tuned model shares: a loss on a batch of accepted candidates, the optimiser,
pre-training on a proposal before fine-tuning, and loading an initial checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch

from rsft.batch import Batch, is_skipped_round
from rsft.models.checkpoint import load_weights_only


class FineTunedModel(pl.LightningModule):
    """Base LightningModule: subclasses implement :meth:`training_loss` and their validation."""

    def __init__(self, lr: float = 1e-3, weight_decay: float = 0.0, lr_schedule: str = "constant"):
        super().__init__()
        if not lr > 0:
            raise ValueError(f"model.net.lr must be positive, got {lr}")
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"model.net.lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.lr_schedule = lr_schedule

    def training_loss(self, batch: Batch) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        if is_skipped_round(batch):  # nothing was accepted this round (sampler.on_empty=skip): no step
            return None
        loss = self.training_loss(batch)
        # sync_dist: under multi-process training the logged epoch loss is the mean over ranks.
        self.log(
            "train/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            sync_dist=True,
            batch_size=len(next(iter(batch.values()))),
        )
        return loss

    def configure_optimizers(self):
        optimiser = torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if self.lr_schedule == "constant":
            return optimiser
        # Cosine decay over epochs (the accepted set is rebuilt per epoch, so steps per epoch may vary).
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs, eta_min=self.lr * 0.05)
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}

    def pretrain(
        self,
        draw: Callable[[int, torch.Generator], Batch],
        steps: int,
        batch_size: int,
        generator: torch.Generator,
        lr: float | None = None,
        lr_schedule: str = "constant",
    ) -> list[float]:
        """Plain maximum-likelihood / supervised training on batches from ``draw`` before fine-tuning.

        ``lr`` defaults to the model's; ``lr_schedule="cosine"`` decays it to 5 % over the steps (a
        settled starting point, so the first rounds measure fine-tuning rather than optimiser noise).
        Returns the loss of every step (the caller logs them).
        """
        lr = self.pretrain_lr(steps, batch_size, lr, lr_schedule, ("constant", "cosine"))
        optimiser = torch.optim.Adam(self.parameters(), lr=lr, weight_decay=self.weight_decay)
        schedule = (
            torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(steps - 1, 1), eta_min=lr * 0.05)
            if lr_schedule == "cosine"
            else None
        )
        losses = []
        self.train()
        for _ in range(steps):
            batch = draw(batch_size, generator)
            loss = self.training_loss(batch)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if schedule is not None:
                schedule.step()
            losses.append(float(loss.detach()))
        return losses

    def pretrain_lr(
        self, steps: int, batch_size: int, lr: float | None, lr_schedule: str, schedules: tuple[str, ...]
    ) -> float:
        """Check the ``model.pretrain`` settings; return the learning rate to pre-train at."""
        if steps < 0 or batch_size <= 0:
            raise ValueError(f"model.pretrain needs steps ≥ 0 and batch_size > 0, got {steps}, {batch_size}")
        lr = self.lr if lr is None else float(lr)
        if not lr > 0:
            raise ValueError(f"model.pretrain.lr must be positive (or null: model.net.lr), got {lr}")
        if lr_schedule not in schedules:
            choices = " or ".join(repr(x) for x in schedules)
            raise ValueError(
                f"model.pretrain.lr_schedule must be {choices} for {type(self).__name__}, got {lr_schedule!r}"
            )
        return lr

    def check_checkpoint(self, checkpoint: dict, where: str) -> None:
        """Refuse a resume checkpoint whose entries beside the weights this model could not use (``where`` names
        it in the error). Called before the run dir is touched; the default accepts any weights-only file."""

    def load_initial_weights(self, path: str | Path) -> None:
        """Start fine-tuning from a checkpoint's weights (a Lightning ``.ckpt`` or a state dict)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"model.init_checkpoint={str(path)!r} does not exist; give the path of a .ckpt file"
            )
        state = load_weights_only(path, f"model.init_checkpoint={str(path)!r}")
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        try:
            self.load_state_dict(state)
        except RuntimeError as err:
            first_line = str(err).splitlines()[0]
            raise ValueError(
                f"model.init_checkpoint={str(path)!r} was saved from a different model than "
                f"{type(self).__name__} with this configuration ({first_line}); use a checkpoint of the same "
                "model and hyper-parameters"
            ) from err
