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

    ``model_base_df`` (a number of degrees of freedom, e.g. 5) proposes from the model pushed from a
    Student-t base instead (a flow: ``base_df``), or from a mixture of its Gaussian base and that Student-t
    with weight ``model_base_df_weight``: polynomial tails in every direction. In high dimensions the
    defensive part no longer bounds p / q where the model falls short (its density in the many coordinates
    where p is narrow is tens of nats below p's), and this does.
    """

    on_policy = True

    def __init__(
        self,
        defensive: D.Distribution | None = None,
        defensive_weight: float = 0.1,
        model_base_scale: float = 1.0,
        model_base_df: float | None = None,
        model_base_df_weight: float = 1.0,
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
        if model_base_df is not None and not (math.isfinite(model_base_df) and model_base_df > 0):
            raise ValueError(
                f"proposal.model_base_df must be a positive number of degrees of freedom (e.g. 5: the model pushed "
                f"from a Student-t base) or null (its Gaussian base), got {model_base_df!r}"
            )
        self.defensive = defensive
        self.defensive_weight = float(defensive_weight)
        self.model_base_scale = float(model_base_scale)
        if not 0.0 < model_base_df_weight <= 1.0:
            raise ValueError(
                "proposal.model_base_df_weight must be in (0, 1] (the Student-t share of the model's base; 1: all of "
                f"it), got {model_base_df_weight!r}"
            )
        self.model_base_df = None if model_base_df is None else float(model_base_df)
        self.model_base_df_weight = float(model_base_df_weight)
        self.model = None

    def to(self, device: torch.device | str) -> ModelProposal:
        moved = ModelProposal(
            None if self.defensive is None else move_distribution(self.defensive, device),
            self.defensive_weight,
            self.model_base_scale,
            self.model_base_df,
            self.model_base_df_weight,
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
        for key, value in self._base_options().items():
            if not all(
                key in inspect.signature(getattr(model, name)).parameters
                for name in ("sample_with_log_prob", "log_prob")
            ):
                raise TypeError(
                    f"proposal.model_{key}={value} changes the model's base distribution, but {type(model).__name__} "
                    f"cannot (its sample_with_log_prob / log_prob take no {key}); leave proposal.model_{key} at its "
                    "default or use model=flow"
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
        widen = self._base_options()
        if w == 0.0:
            x, log_q = self.model.sample_with_log_prob(n, generator, **widen)
            return {"x": x, "log_q": log_q}
        # Which rows come from the defensive component: a fixed-size split keeps shapes static.
        from_defensive = torch.rand(n, generator=generator, device=generator.device) < w
        n_def = int(from_defensive.sum())
        x_model, log_q_model = self.model.sample_with_log_prob(n - n_def, generator, **widen)
        with seeded_global_rng(generator):
            x_def = self.defensive.sample((n_def,)).to(x_model.dtype)
        x = torch.empty((n, *x_model.shape[1:]), dtype=x_model.dtype, device=x_model.device)
        x[~from_defensive] = x_model
        x[from_defensive] = x_def
        # The model's rows come with their model density from sampling: only the defensive rows need the
        # model's (inverse) pass, about a third of the flow's cost per proposal saved.
        log_q = torch.empty(n, dtype=log_q_model.dtype, device=x_model.device)
        log_q[~from_defensive] = torch.logaddexp(
            math.log1p(-w) + log_q_model, math.log(w) + self.defensive.log_prob(x_model).to(log_q_model.dtype)
        )
        log_q[from_defensive] = self.log_prob(x_def).to(log_q_model.dtype)
        return {"x": x, "log_q": log_q}

    def _base_options(self) -> dict[str, float]:
        """The keyword arguments that make the model propose from its widened or heavy-tailed base."""
        options = {} if self.model_base_scale == 1.0 else {"base_scale": self.model_base_scale}
        if self.model_base_df is not None:
            options["base_df"] = self.model_base_df
            if self.model_base_df_weight != 1.0:
                options["base_df_weight"] = self.model_base_df_weight
        return options

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log q(x) of the proposal as it draws: (1 − w)·(the widened) model + w·defensive."""
        if self.model is None:
            raise RuntimeError("ModelProposal.log_prob called before bind(model)")
        widen = self._base_options()
        if self.defensive_weight == 0.0:
            return self.model.log_prob(x, **widen)
        return torch.logaddexp(
            math.log1p(-self.defensive_weight) + self.model.log_prob(x, **widen),
            math.log(self.defensive_weight) + self.defensive.log_prob(x),
        )
