"""``task=density``: sample a target density exactly and fine-tune a generative model on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rsft.batch import Batch
from rsft.targets import make_target
from rsft.tasks.base import Task


class DensityTask(Task):
    """Evaluation: ``num_eval`` exact samples of the target (when it can draw them)."""

    name = "density"

    def __init__(self, target: Any, dim: int | None = None, num_eval: int = 4000, eval_seed: int = 1234):
        if isinstance(target, str):
            target = make_target(target, dim)
        if not hasattr(target, "log_prob"):
            raise TypeError(f"task.target must have a log_prob method, got {type(target).__name__}")
        target_dim = getattr(target, "dim", None)
        if dim is not None and target_dim is not None and target_dim != dim:
            raise ValueError(
                f"task.dim={dim} but the target {getattr(target, 'name', '')} is {target_dim}-D; "
                f"set task.dim={target_dim}"
            )
        self.dim = dim if dim is not None else target_dim
        if num_eval <= 0:
            raise ValueError(f"task.num_eval must be positive, got {num_eval}")
        self.target = target
        self.num_eval = int(num_eval)
        self.eval_seed = int(eval_seed)

    def validation_sets(self, device: torch.device) -> dict[str, Batch]:
        if not hasattr(self.target, "sample"):
            return {}  # a user target without exact samples: no sample-based evaluation
        target = self.target.to(device) if hasattr(self.target, "to") else self.target
        generator = torch.Generator(device).manual_seed(self.eval_seed)
        return {"exact": {"x": target.sample(self.num_eval, generator)}}

    def plot(self, path: Path, accepted: Batch | None, model: Any) -> Path | None:
        from rsft.tasks.plotting import plot_density_run

        dim = getattr(self.target, "dim", None)
        if dim != 2 and (accepted is None or accepted["x"].shape[1] < 2):
            return None
        return plot_density_run(path, self.target, accepted, model)
