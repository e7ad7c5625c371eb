"""``task=sectors``: the seed document's set-up made meaningful.

Candidates x ~ N(0, I_d) are labelled by a fixed function of x: the angular sector (out of
``num_sectors``) of their first two coordinates, twisted into a spiral by their radius. A classifier
pre-trained on the broad proposal is fine-tuned on the candidates a region acceptance keeps (‖x‖ < r); the
question is how its in-region accuracy changes. The in-region evaluation set is drawn exactly (rejection from
the same Gaussian).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from rsft.acceptance.density import Ball, Region
from rsft.batch import Batch
from rsft.proposals.distribution import DistributionProposal, isotropic_normal
from rsft.sampling import rejection_sample
from rsft.tasks.base import Task


class SectorTask(Task):
    name = "sectors"

    def __init__(
        self,
        dim: int,
        radius: float,
        num_sectors: int = 10,
        twist: float = 2.0,
        num_eval: int = 4000,
        eval_seed: int = 4321,
        eval_max_proposals: int = 50_000_000,
    ):
        if dim < 2:
            raise ValueError(f"task.dim must be ≥ 2 for angular sectors, got {dim}")
        if num_sectors < 2:
            raise ValueError(f"task.num_sectors must be ≥ 2, got {num_sectors}")
        self.dim = int(dim)
        self.ball = Ball(radius)
        self.num_sectors = int(num_sectors)
        self.twist = float(twist)
        self.num_eval = int(num_eval)
        self.eval_seed = int(eval_seed)
        self.eval_max_proposals = int(eval_max_proposals)
        self._check_feasible()

    def _check_feasible(self) -> None:
        """Fail at construction, before any training, when the region is out of reach."""
        rate = self.region_probability()
        expected = self.num_eval / rate if rate > 0 else math.inf
        if expected > self.eval_max_proposals:
            raise ValueError(
                f"task=sectors: the region ‖x‖ < {self.ball.radius} has probability {rate:.3g} under "
                f"N(0, I_{self.dim}), so {self.num_eval:,} in-region evaluation samples need about "
                f"{expected:.3g} proposals, more than task.eval_max_proposals={self.eval_max_proposals:,}; "
                "no sampler can accept from it in reasonable time. Lower task.dim or raise acceptance.predicate.radius"
            )

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        """Sector of the angle of (x1, x2), twisted by its radius ρ: θ + twist·ρ (a spiral)."""
        rho = x[:, :2].norm(dim=1)
        angle = torch.remainder(torch.atan2(x[:, 1], x[:, 0]) + self.twist * rho, 2 * math.pi)
        return (angle / (2 * math.pi / self.num_sectors)).long().clamp(max=self.num_sectors - 1)

    def annotate(self, batch: Batch) -> Batch:
        return {**batch, "y": self.labels(batch["x"])}

    def region_probability(self) -> float:
        """P(‖x‖ < r) for x ~ N(0, I_d): the acceptance rate any sampler of this region must live with."""
        return math.exp(self.ball.log_probability_under_standard_normal(self.dim))

    def validation_sets(self, device: torch.device) -> dict[str, Batch]:
        proposal = DistributionProposal(isotropic_normal(self.dim))
        generator = torch.Generator(device).manual_seed(self.eval_seed)
        region = rejection_sample(
            proposal,
            Region(self.ball),
            num_accepted=self.num_eval,
            generator=generator,
            max_proposals=self.eval_max_proposals,
        ).batch
        broad = proposal.to(device).sample(self.num_eval, generator)
        return {
            "in_region": self.annotate({"x": region["x"]}),
            "broad": self.annotate({"x": broad["x"]}),
        }

    def plot(self, path: Path, accepted: Batch | None, model: Any) -> Path | None:
        from rsft.tasks.plotting import plot_sectors_run

        return plot_sectors_run(path, self, accepted, model)
