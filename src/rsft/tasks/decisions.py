"""``task=decisions``: fair decisions (credit: Adult, German, COMPAS; medicine: heart disease; or the user's own
table) — fine-tune a classifier on fairly resampled training rows.

The task owns the data split (``task.data``: dataset or file, sensitive attribute(s), reference group, split
seed, optional path), which the proposal, the fairness acceptances, the model and the fairness report
receive through config slots (``"@task.data"``). Evaluation sets: the validation split (``val``, where the
decision threshold is chosen) and the test split (``test``), each with features ``x``, label ``y`` and
group ``s``. What the split decided from the data (groups, reference, column types, rows dropped) is written
to the run dir as ``data_choices.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rsft.batch import Batch
from rsft.tasks.base import Task
from rsft.tasks.decision_data import DecisionSplit


class DecisionTask(Task):
    name = "decisions"

    def __init__(self, data: DecisionSplit):
        if not isinstance(data, DecisionSplit):
            raise TypeError(
                "task.data must build a DecisionSplit (rsft.tasks.decision_data.load_decision_split), "
                f"got {type(data).__name__}"
            )
        self.data = data
        self.input_dim = data.input_dim  # the models' input size (model.net.input_dim: "@task.input_dim")

    def validation_sets(self, device: torch.device) -> dict[str, Batch]:
        return {
            name: {k: v.to(device) for k, v in getattr(self.data, split).items()}
            for name, split in (("val", "valid"), ("test", "test"))
        }

    def records(self) -> dict[str, Any]:
        return {"data_choices.json": self.data.records}

    def plot(self, path: Path, accepted: Batch | None, model: Any) -> Path | None:
        return None
