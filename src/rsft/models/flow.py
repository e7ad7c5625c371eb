"""A normalizing flow (zuko) fine-tuned by maximum likelihood on accepted samples.

The flow can also be its own proposal (``proposal=model``): it draws samples together with their
exact log-densities, which is what a density-ratio acceptance needs.
"""

from __future__ import annotations

import math

import torch
import zuko
from torchmetrics import MeanMetric

from rsft.batch import Batch
from rsft.distributions import seeded_global_rng
from rsft.metrics.distribution import EnergyDistance
from rsft.models.base import FineTunedModel

FLOWS = {"nsf": zuko.flows.NSF, "maf": zuko.flows.MAF, "realnvp": zuko.flows.RealNVP}


class FlowModel(FineTunedModel):
    """Flow on R^dim modelling x / scale (``scale`` puts wide targets in the flow's working range)."""

    def __init__(
        self,
        dim: int,
        kind: str = "nsf",
        transforms: int = 4,
        hidden: tuple[int, ...] = (64, 64),
        bins: int = 8,
        scale: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: str = "constant",
        eval_samples: int = 2000,
        eval_seed: int = 2024,
    ):
        super().__init__(lr=lr, weight_decay=weight_decay, lr_schedule=lr_schedule)
        if kind not in FLOWS:
            raise ValueError(f"unknown flow model.kind={kind!r}; choose one of {sorted(FLOWS)}")
        if dim <= 0:
            raise ValueError(f"model.dim must be positive, got {dim}")
        if not scale > 0:
            raise ValueError(f"model.scale must be positive, got {scale}")
        if bins < 2:
            raise ValueError(f"model.net.bins must be at least 2 (spline bins per coordinate, nsf only), got {bins}")
        self.save_hyperparameters()
        self.dim = int(dim)
        self.scale = float(scale)
        # Spline bins (nsf only): a sharp multi-modal target needs enough knots per coordinate to
        # separate its modes (8 bins over the spline's [-5, 5] smear the 25-grid's 5 modes per axis).
        extra = {"bins": int(bins)} if kind == "nsf" else {}
        self.flow = FLOWS[kind](features=self.dim, transforms=transforms, hidden_features=list(hidden), **extra)
        self.eval_samples = int(eval_samples)
        self.eval_seed = int(eval_seed)
        self.val_nll = MeanMetric()
        self.energy = EnergyDistance()
        self._exact: list[torch.Tensor] = []

    # -- density and sampling -------------------------------------------------------------
    def log_prob(self, x: torch.Tensor, base_scale: float = 1.0) -> torch.Tensor:
        """log q(x); with ``base_scale`` ≠ 1 that of the *widened* flow (its base distribution's scale × base_scale)."""
        if x.shape[-1] != self.dim:  # otherwise a bare matmul shape error from deep inside the flow
            raise ValueError(
                f"model.net.dim={self.dim} but the samples are {x.shape[-1]}-D; set model.net.dim to task.dim"
            )
        return self._flow(base_scale).log_prob(x / self.scale) - self.dim * math.log(self.scale)

    @torch.no_grad()
    def sample_with_log_prob(
        self, n: int, generator: torch.Generator, base_scale: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n samples and their exact log-densities; ``base_scale`` > 1 draws from the widened flow."""
        if n == 0:
            empty = torch.empty((0, self.dim), device=self.device)
            return empty, empty[:, 0]
        with seeded_global_rng(generator):
            z, log_pz = self._flow(base_scale).rsample_and_log_prob((n,))
        return z * self.scale, log_pz - self.dim * math.log(self.scale)

    def _flow(self, base_scale: float) -> zuko.distributions.NormalizingFlow:
        """The flow's distribution; ``base_scale`` ≠ 1 widens its base N(μ, σ²) to N(μ, (base_scale·σ)²).

        The same transform pushes a wider base forward, so the proposal keeps the learned shape with tails
        heavier than what was learned: where the flow under-covers the target, p / q stays bounded
        (``proposal.model_base_scale``). Training and evaluation always use base_scale = 1.
        """
        flow = self.flow()
        if base_scale == 1.0:
            return flow
        base = flow.base
        if not isinstance(base, zuko.distributions.DiagNormal):
            raise TypeError(f"base_scale needs a flow with a diagonal Gaussian base, not {type(base).__name__}")
        wide = zuko.distributions.DiagNormal(base.mean, base.stddev * base_scale)
        return zuko.distributions.NormalizingFlow(flow.transform, wide)

    # -- training -------------------------------------------------------------------------
    def training_loss(self, batch: Batch) -> torch.Tensor:
        return -self.log_prob(batch["x"]).mean()

    # -- evaluation on exact target samples -----------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self.val_nll.reset()
        self._exact = []

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        x = batch["x"]
        self.val_nll.update(-self.log_prob(x))
        kept = sum(t.shape[0] for t in self._exact)
        if kept < self.eval_samples:
            self._exact.append(x[: self.eval_samples - kept])

    def on_validation_epoch_end(self) -> None:
        if not self._exact:
            return
        self.log("val/nll", self.val_nll.compute(), prog_bar=True)
        exact = torch.cat(self._exact)
        # A fixed generator: the same model gives the same figure, and training randomness is untouched.
        generator = torch.Generator(self.device).manual_seed(self.eval_seed)
        model_x, _ = self.sample_with_log_prob(exact.shape[0], generator)
        self.energy.reset()
        self.energy.update(model_x, exact)
        self.log("val/energy_distance", self.energy.compute(), prog_bar=True)
