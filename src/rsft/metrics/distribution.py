"""Sample-based distribution metrics (torchmetrics ``Metric`` subclasses)."""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Energy distance 2E‖X−Y‖ − E‖X−X'‖ − E‖Y−Y'‖ (V-statistic; 0 iff the laws agree).

    ``x`` is (n, d), ``y`` is (m, d). Cost O((n + m)²) memory per call: keep n, m ≲ 10⁴.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"energy_distance needs (n, d) and (m, d) samples, got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.double(), y.double()
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).mean()
    yy = torch.cdist(y, y).mean()
    return 2 * xy - xx - yy


class EnergyDistance(Metric):
    """Accumulates two sample sets (``update(x, y)``) and returns their energy distance."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("xs", default=[], dist_reduce_fx="cat")
        self.add_state("ys", default=[], dist_reduce_fx="cat")

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.xs.append(x.detach())
        self.ys.append(y.detach())

    def compute(self) -> torch.Tensor:
        return energy_distance(dim_zero_cat(self.xs), dim_zero_cat(self.ys)).float()
