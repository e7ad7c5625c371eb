"""The task interface the data module and the training loop rely on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rsft.batch import Batch


class Task:
    """Base class. A task labels accepted candidates, provides evaluation sets, and plots a run."""

    name = "task"

    def annotate(self, batch: Batch) -> Batch:
        """Add task fields (e.g. labels) to accepted candidates; identity by default."""
        return batch

    def validation_sets(self, device: torch.device) -> dict[str, Batch]:
        """Named evaluation sets (each a batch), built deterministically from the task's own seed."""
        return {}

    def records(self) -> dict[str, Any]:
        """Files for the run dir, written when the run starts (name → JSON-able content): what the task inferred
        from a user's data (column types, groups, rows dropped, the reference group), so every choice made from the
        data is on record beside the run. None by default."""
        return {}

    def plot(self, path: Path, accepted: Batch | None, model: Any) -> Path | None:
        """Write a PNG summarising the run to ``path``; return it, or None when there is nothing to plot."""
        return None
