"""A GAN (MLP generator and discriminator) whose generator, once trained, is a fixed proposal.

Discriminator rejection sampling (DRS, Azadi et al. 2019) post-processes a trained GAN: the
generator proposes, and a candidate is kept with a probability computed from the discriminator's
logit (``acceptance=drs``). What that needs from the model:

- ``pretrain``: the GAN is trained adversarially on real samples (the non-saturating loss of
  Goodfellow et al., so that the optimal discriminator's logit is log p_data/p_g; optionally with the R1
  gradient penalty of Mescheder et al. 2018 on the discriminator), then the generator
  is frozen and the discriminator alone is trained further on real vs generated samples for the
  last ``calibration_fraction`` of the pre-training steps (DRS, §3: the discriminator is calibrated after the
  generator is fixed, so its logit estimates the density ratio of *this* generator);
- ``generate(n, generator)``: generator samples (``proposal=generator`` draws them);
- ``discriminator_logit(x)``: D̃(x), what the DRS rule reads.

During rsft's epochs the GAN stays fixed: the epochs only run the sampler (proposal + acceptance),
so ``training_step`` trains nothing (manual optimisation, no optimiser step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits as bce_logits

from rsft.batch import Batch, is_skipped_round
from rsft.metrics.distribution import EnergyDistance
from rsft.models.base import FineTunedModel


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers of the given sizes with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class GANModel(FineTunedModel):
    """MLP GAN on R^dim; ``scale`` lets the networks work on x / scale (the grid spans about ±4)."""

    def __init__(
        self,
        dim: int,
        latent_dim: int = 2,
        hidden: Sequence[int] = (128, 128, 128),
        scale: float = 1.0,
        lr: float = 2e-4,
        betas: Sequence[float] = (0.5, 0.999),
        calibration_fraction: float = 0.2,
        r1_penalty: float = 0.0,
        lr_floor: float = 0.05,
        eval_samples: int = 2000,
        eval_seed: int = 2024,
    ):
        super().__init__(lr=lr)
        if dim <= 0 or latent_dim <= 0:
            raise ValueError(f"model.net.dim and model.net.latent_dim must be positive, got {dim}, {latent_dim}")
        if not scale > 0:
            raise ValueError(f"model.net.scale must be positive, got {scale}")
        if not 0.0 <= calibration_fraction < 1.0:
            raise ValueError(f"model.net.calibration_fraction must be in [0, 1), got {calibration_fraction}")
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"model.net.betas must be two numbers in [0, 1), got {list(betas)}")
        if not (r1_penalty >= 0.0 and math.isfinite(r1_penalty)):
            raise ValueError(f"model.net.r1_penalty must be a finite number ≥ 0 (0: no penalty), got {r1_penalty!r}")
        if not 0.0 < lr_floor <= 1.0:
            raise ValueError(
                f"model.net.lr_floor must be in (0, 1] (the cosine schedule's last rate, as a fraction of lr), "
                f"got {lr_floor!r}"
            )
        self.save_hyperparameters()
        self.automatic_optimization = False  # the epochs train nothing; pre-training has its own loop
        self.dim, self.latent_dim, self.scale = int(dim), int(latent_dim), float(scale)
        self.betas = (float(betas[0]), float(betas[1]))
        self.calibration_fraction = float(calibration_fraction)
        self.r1_penalty, self.lr_floor = float(r1_penalty), float(lr_floor)
        self.generator_net = mlp([self.latent_dim, *hidden, self.dim])
        self.discriminator_net = mlp([self.dim, *hidden, 1])
        self.eval_samples, self.eval_seed = int(eval_samples), int(eval_seed)
        self.energy = EnergyDistance()
        self._exact: list[torch.Tensor] = []

    # -- the two networks -----------------------------------------------------------------
    def _generate(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn((n, self.latent_dim), generator=generator, device=generator.device)
        return self.generator_net(z.to(self.device)) * self.scale

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` generator samples, with the latent noise drawn from ``generator``."""
        return self._generate(n, generator)

    def discriminator_logit(self, x: torch.Tensor) -> torch.Tensor:
        """D̃(x): the discriminator's logit (D = σ(D̃) is its probability that x is real)."""
        return self.discriminator_net(x / self.scale).squeeze(-1)

    # -- pre-training: adversarial, then discriminator calibration ------------------------
    def _discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor, r1_penalty: float = 0.0) -> torch.Tensor:
        """The discriminator's cross-entropy, plus (γ/2)·E_real ||∇ₓ D̃(x)||² when ``r1_penalty`` γ > 0: the
        penalty keeps D̃ flat on the data, which stops the generator's oscillation between modes and lets a
        high learning rate sharpen every mode without dropping any (experiments/README.md, drs_table1)."""
        if r1_penalty:
            real = real.detach().requires_grad_(True)
        logits_real, logits_fake = self.discriminator_logit(real), self.discriminator_logit(fake)
        loss = bce_logits(logits_real, torch.ones_like(logits_real)) + bce_logits(
            logits_fake, torch.zeros_like(logits_fake)
        )
        if r1_penalty:
            (grad,) = torch.autograd.grad(logits_real.sum(), real, create_graph=True)
            loss = loss + 0.5 * r1_penalty * grad.pow(2).sum(dim=1).mean()
        return loss

    def pretrain(
        self,
        draw: Callable[[int, torch.Generator], Batch],
        steps: int,
        batch_size: int,
        generator: torch.Generator,
        lr: float | None = None,
        lr_schedule: str = "constant",
    ) -> list[float]:
        """``steps`` pre-training steps on real batches from ``draw``: adversarial ones, then (the last
        ``calibration_fraction`` of them) the discriminator alone with the generator fixed. Returns the
        discriminator loss of every step.

        ``lr_schedule="cosine"`` decays both learning rates to ``lr_floor`` × lr over the adversarial steps
        (the calibration steps stay at the final rate): a high rate first spreads the generator over the
        modes, the low one at the end sharpens each mode without collapsing onto a few
        (experiments/README.md, drs_table1). ``r1_penalty`` applies to the adversarial steps only: the
        calibration steps train the plain cross-entropy, whose optimum is the density ratio DRS reads."""
        lr = self.pretrain_lr(steps, batch_size, lr, lr_schedule, ("constant", "cosine"))
        opt_d = torch.optim.Adam(self.discriminator_net.parameters(), lr=lr, betas=self.betas)
        opt_g = torch.optim.Adam(self.generator_net.parameters(), lr=lr, betas=self.betas)
        losses: list[float] = []
        self.train()
        adversarial = steps - round(steps * self.calibration_fraction)
        schedules = (
            [
                torch.optim.lr_scheduler.CosineAnnealingLR(
                    opt, T_max=max(adversarial - 1, 1), eta_min=lr * self.lr_floor
                )
                for opt in (opt_d, opt_g)
            ]
            if lr_schedule == "cosine"
            else []
        )
        for step in range(steps):
            real = draw(batch_size, generator)["x"].to(self.device)
            fake = self._generate(batch_size, generator)
            loss_d = self._discriminator_loss(real, fake.detach(), self.r1_penalty if step < adversarial else 0.0)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            losses.append(float(loss_d.detach()))
            if step < adversarial:  # adversarial phase: the generator's non-saturating step
                logits = self.discriminator_logit(fake)
                loss_g = bce_logits(logits, torch.ones_like(logits))
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                for schedule in schedules:
                    schedule.step()
        self.generator_net.requires_grad_(False)  # from here on the generator is a fixed proposal
        return losses

    # -- rsft epochs: the GAN is fixed ----------------------------------------------------
    def training_loss(self, batch: Batch) -> torch.Tensor:
        # What the generator's samples cost under the calibrated discriminator (not minimised: the
        # GAN is fixed during the epochs; logged so a run shows what D thinks of the accepted set).
        logits = self.discriminator_logit(batch["x"])
        return bce_logits(logits, torch.ones_like(logits))

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        if is_skipped_round(batch):
            return
        with torch.no_grad():
            loss = self.training_loss(batch)
        self.log("train/accepted_d_loss", loss, on_step=False, on_epoch=True, batch_size=batch["x"].shape[0])

    def configure_optimizers(self):
        # Lightning needs one; nothing steps it during the epochs (see the module docstring).
        return torch.optim.Adam(self.discriminator_net.parameters(), lr=self.lr, betas=self.betas)

    # -- evaluation on exact target samples -----------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._exact = []

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        kept = sum(t.shape[0] for t in self._exact)
        if kept < self.eval_samples:
            self._exact.append(batch["x"][: self.eval_samples - kept])

    def on_validation_epoch_end(self) -> None:
        if not self._exact:
            return
        exact = torch.cat(self._exact)
        generated = self.generate(exact.shape[0], torch.Generator(self.device).manual_seed(self.eval_seed))
        self.energy.reset()
        self.energy.update(generated, exact)
        self.log("val/energy_distance", self.energy.compute(), prog_bar=True)
