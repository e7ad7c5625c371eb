"""``proposal=model``: the model being fine-tuned proposes for itself (on-policy), mixed with a defensive
distribution so that an envelope p ≤ M q stays valid where the model puts little mass."""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import distributions as D

from rsft.batch import Batch, require_methods
from rsft.distributions import move_distribution, seeded_global_rng
from rsft.proposals.base import Proposal
from rsft.proposals.distribution import DistributionProposal


class ModelProposal(Proposal):
    """On-policy proposal: the model being fine-tuned proposes for itself.

    The model must implement ``sample_with_log_prob(n, generator) -> (x, log_prob)``. To keep an
    envelope p ≤ M q valid wherever the model puts little mass, the model is mixed with a wide
    *defensive* distribution: q = (1 − w)·q_model + w·q_defensive (``defensive_weight`` = w). With
    w = 0 the proposal is the bare model (only safe when its tails are known to dominate the target's).

    ``model_base_scale`` > 1 proposes from a *widened* model (a flow's base distribution scaled up; the model
    must take ``base_scale`` in ``sample_with_log_prob`` and ``log_prob``): the learned shape with heavier
    tails, so p / q stays bounded where the model slightly under-covers p, between the model's own
    narrow tails and the defensive part's far ones. The model is still trained and evaluated unwidened.
    """

    on_policy = True

    def __init__(
        self, defensive: D.Distribution | None = None, defensive_weight: float = 0.1, model_base_scale: float = 1.0
    ):
        if not 0.0 <= defensive_weight < 1.0:
            raise ValueError(f"proposal.defensive_weight must be in [0, 1), got {defensive_weight}")
        if defensive_weight > 0 and defensive is None:
            raise ValueError("proposal.defensive_weight > 0 needs a proposal.defensive distribution")
        if not (math.isfinite(model_base_scale) and model_base_scale >= 1.0):
            raise ValueError(
                f"proposal.model_base_scale must be a finite number ≥ 1 (1: the model as trained; 1.2: its base "
                f"widened by 20 %), got {model_base_scale!r}"
            )
        self.defensive = defensive
        self.defensive_weight = float(defensive_weight)
        self.model_base_scale = float(model_base_scale)
        self.model = None

    def to(self, device: torch.device | str) -> ModelProposal:
        moved = ModelProposal(
            None if self.defensive is None else move_distribution(self.defensive, device),
            self.defensive_weight,
            self.model_base_scale,
        )
        moved.model = self.model
        return moved

    def bind(self, model: Any) -> None:
        require_methods(
            model,
            ("sample_with_log_prob",),
            who="proposal=model",
            fix="choose a generative model that samples with log-densities (e.g. model=flow)",
        )
        if self.model_base_scale != 1.0 and not all(
            "base_scale" in inspect.signature(getattr(model, name)).parameters
            for name in ("sample_with_log_prob", "log_prob")
        ):
            raise TypeError(
                f"proposal.model_base_scale={self.model_base_scale} widens the model's proposals, but "
                f"{type(model).__name__} cannot widen itself (its sample_with_log_prob / log_prob take no "
                "base_scale); set proposal.model_base_scale=1 or use model=flow"
            )
        self.model = model

    def pretraining_source(self, model: Any = None) -> Proposal:
        """Pre-training runs before the model can propose: it trains on the defensive distribution."""
        if self.defensive is None:
            raise ValueError(
                "model.pretrain.steps > 0 with an on-policy proposal needs proposal.defensive to pre-train on; "
                "set model.pretrain.steps=0 or give a defensive distribution"
            )
        return DistributionProposal(self.defensive)

    @property
    def event_shape(self) -> torch.Size | None:
        return None if self.defensive is None else self.defensive.event_shape

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> Batch:
        if self.model is None:
            raise RuntimeError(
                "ModelProposal.sample called before bind(model): the data module binds the model being trained"
            )
        w = self.defensive_weight
        widen = {} if self.model_base_scale == 1.0 else {"base_scale": self.model_base_scale}
        if w == 0.0:
            x, log_q = self.model.sample_with_log_prob(n, generator, **widen)
            return {"x": x, "log_q": log_q}
        # Which rows come from the defensive component: a fixed-size split keeps shapes static.
        from_defensive = torch.rand(n, generator=generator, device=generator.device) < w
        n_def = int(from_defensive.sum())
        x_model, _ = self.model.sample_with_log_prob(n - n_def, generator, **widen)
        with seeded_global_rng(generator):
            x_def = self.defensive.sample((n_def,))
        x = torch.empty((n, *x_model.shape[1:]), dtype=x_model.dtype, device=x_model.device)
        x[~from_defensive] = x_model
        x[from_defensive] = x_def.to(x_model.dtype)
        log_q = torch.logaddexp(
            math.log1p(-w) + self.model.log_prob(x, **widen),
            math.log(w) + self.defensive.log_prob(x),
        )
        return {"x": x, "log_q": log_q}
