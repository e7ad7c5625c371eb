"""``proposal=generator``: candidates drawn from a GAN's (fixed) generator.

A generator has no log-density, so its batches carry ``x`` only: rules that need ``log_q``
(``density_ratio``) cannot judge them, rules that read the discriminator (``drs``) or ignore the
density (``all``, ``region``) can. The GAN is pre-trained on real samples of the task's target
(``real``), which is what :meth:`pretraining_source` hands the training loop.
"""

from __future__ import annotations

from typing import Any

import torch

from rsft.batch import Batch, require_methods
from rsft.proposals.base import Proposal


class TargetSamples(Proposal):
    """Exact samples of a target (the GAN's real data): ``{"x": target.sample(n)}``."""

    def __init__(self, target: Any):
        if not hasattr(target, "sample"):
            raise TypeError(
                f"proposal.real must be able to draw exact samples (a sample(n, generator) method), got "
                f"{type(target).__name__}: use a built-in task.target such as grid25"
            )
        self.target = target

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        target = self.target.to(generator.device) if hasattr(self.target, "to") else self.target
        return {"x": target.sample(n, generator)}


class GeneratorProposal(Proposal):
    """Draws from the bound model's ``generate(n, generator)`` (a GAN generator, fixed after pre-training)."""

    # The samples come from the model the run holds (bound every round), as for proposal=model.
    on_policy = True

    def __init__(self, real: Any):
        self.real = TargetSamples(real)
        self.model = None

    def bind(self, model: Any) -> None:
        require_methods(model, ("generate",), who="proposal=generator", fix="use model=gan")
        self.model = model

    def pretraining_source(self, model: Any = None) -> Proposal:
        """The GAN is trained on real samples of the target, not on its own output."""
        return self.real

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        if self.model is None:
            raise RuntimeError(
                "GeneratorProposal.sample called before bind(model): the data module binds the run's model"
            )
        return {"x": self.model.generate(n, generator)}
