"""Callbacks that stop a run at an exact point, for the fault-injection tests (the tests put tests/ on PYTHONPATH
and add one with ``+callbacks.<name>._target_=fault_callbacks.<Class>``)."""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl


class KillAfterLastCheckpoint(pl.Callback):
    """SIGKILL the process when training ends: after the last epoch's checkpoint (written at that epoch's end), before
    ``train()`` writes ``metrics.json``, the plot, the fairness report and the finished run record."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        os.kill(os.getpid(), signal.SIGKILL)
