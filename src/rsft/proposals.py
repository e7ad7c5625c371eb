"""Proposals: things that draw a batch of candidates.

A proposal returns a *batch*: ``dict[str, Tensor]`` whose tensors share their leading size. Density
proposals put the candidate in ``x`` and its log-density in ``log_q``; other proposals (dataset rows,
language-model completions) carry whatever fields their acceptance rules and models need.

A proposal that needs the model being trained (on-policy) implements ``bind(model)``; the data module
calls it before every sampling round.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import distributions as D

from rsft.distributions import move_distribution, seeded_global_rng

Batch = dict[str, torch.Tensor]


class Proposal:
    """Base class. Subclasses implement :meth:`sample`; :meth:`to` and :meth:`bind` are optional."""

    #: True when the proposal draws from the model being fine-tuned (its samples change as it trains).
    on_policy: bool = False

    def sample(self, n: int, generator: torch.Generator) -> Batch:  # pragma: no cover - interface
        raise NotImplementedError

    def to(self, device: torch.device | str) -> Proposal:
        return self

    def bind(self, model: Any) -> None:
        """Give the proposal the current model (on-policy proposals use it; others ignore it)."""

    @property
    def event_shape(self) -> torch.Size | None:
        """Shape of one candidate ``x``, when the proposal has one."""
        return None


class DistributionProposal(Proposal):
    """Candidates from any ``torch.distributions.Distribution``: the batch carries ``x`` and ``log_q``."""

    def __init__(self, dist: D.Distribution):
        if not isinstance(dist, D.Distribution):
            raise TypeError(
                f"DistributionProposal needs a torch.distributions.Distribution, got {type(dist).__name__}"
            )
        if dist.batch_shape != torch.Size():
            raise ValueError(
                f"the proposal distribution has batch shape {tuple(dist.batch_shape)}; rsft needs one "
                "distribution over whole candidates: wrap it in torch.distributions.Independent(dist, "
                f"{len(dist.batch_shape)}) so those dimensions become the event shape"
            )
        self.dist = dist

    def to(self, device: torch.device | str) -> DistributionProposal:
        return DistributionProposal(move_distribution(self.dist, device))

    @property
    def event_shape(self) -> torch.Size:
        return self.dist.event_shape

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        with seeded_global_rng(generator):
            x = self.dist.sample((n,))
        return {"x": x, "log_q": self.dist.log_prob(x)}


def isotropic_normal(dim: int, scale: float = 1.0, loc: float = 0.0) -> D.Distribution:
    """N(loc, scale² I_dim) as one distribution over R^dim (the usual wide proposal)."""
    if dim <= 0:
        raise ValueError(f"dim must be a positive integer, got {dim} (set task.dim)")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale} (set proposal.dist.scale)")
    return D.Independent(D.Normal(torch.full((dim,), float(loc)), torch.full((dim,), float(scale))), 1)


def isotropic_student_t(dim: int, df: float = 3.0, scale: float = 1.0) -> D.Distribution:
    """Independent Student-t coordinates: a heavy-tailed proposal for light-tailed targets."""
    if dim <= 0:
        raise ValueError(f"dim must be a positive integer, got {dim} (set task.dim)")
    if not (df > 0 and scale > 0):
        raise ValueError(f"student_t needs df > 0 and scale > 0, got df={df}, scale={scale}")
    return D.Independent(D.StudentT(torch.full((dim,), float(df)), torch.zeros(dim), torch.full((dim,), float(scale))), 1)


def uniform_box(dim: int, low: float, high: float) -> D.Distribution:
    """Uniform on [low, high]^dim."""
    if not high > low:
        raise ValueError(f"uniform box needs high > low, got low={low}, high={high}")
    return D.Independent(D.Uniform(torch.full((dim,), float(low)), torch.full((dim,), float(high))), 1)


def gaussian(dim: int, scale: float = 1.0, loc: float = 0.0) -> DistributionProposal:
    """``proposal=gaussian``: N(loc, scale² I_dim)."""
    return DistributionProposal(isotropic_normal(dim, scale, loc))


def student_t(dim: int, df: float = 3.0, scale: float = 1.0) -> DistributionProposal:
    """``proposal=student_t``: independent Student-t coordinates."""
    return DistributionProposal(isotropic_student_t(dim, df, scale))


def uniform(dim: int, low: float, high: float) -> DistributionProposal:
    """``proposal=uniform``: uniform on a box."""
    return DistributionProposal(uniform_box(dim, low, high))


class ModelProposal(Proposal):
    """On-policy proposal: the model being fine-tuned proposes for itself.

    The model must implement ``sample_with_log_prob(n, generator) -> (x, log_prob)``. To keep an
    envelope p ≤ M q valid wherever the model puts little mass, the model is mixed with a wide
    *defensive* distribution: q = (1 − w)·q_model + w·q_defensive (``defensive_weight`` = w). With
    w = 0 the proposal is the bare model (only safe when its tails are known to dominate the target's).
    """

    on_policy = True

    def __init__(self, defensive: D.Distribution | None = None, defensive_weight: float = 0.1):
        if not 0.0 <= defensive_weight < 1.0:
            raise ValueError(
                f"proposal.defensive_weight must be in [0, 1), got {defensive_weight}"
            )
        if defensive_weight > 0 and defensive is None:
            raise ValueError("proposal.defensive_weight > 0 needs a proposal.defensive distribution")
        self.defensive = defensive
        self.defensive_weight = float(defensive_weight)
        self.model = None

    def to(self, device: torch.device | str) -> ModelProposal:
        moved = ModelProposal(
            None if self.defensive is None else move_distribution(self.defensive, device),
            self.defensive_weight,
        )
        moved.model = self.model
        return moved

    def bind(self, model: Any) -> None:
        if not hasattr(model, "sample_with_log_prob"):
            raise TypeError(
                f"proposal=model needs a model that can sample with log-densities; {type(model).__name__} "
                "has no sample_with_log_prob(n, generator): choose a generative model (e.g. model=flow)"
            )
        self.model = model

    @property
    def event_shape(self) -> torch.Size | None:
        return None if self.defensive is None else self.defensive.event_shape

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> Batch:
        if self.model is None:
            raise RuntimeError("ModelProposal.sample called before bind(model): the data module binds the model being trained")
        w = self.defensive_weight
        if w == 0.0:
            x, log_q = self.model.sample_with_log_prob(n, generator)
            return {"x": x, "log_q": log_q}
        # Which rows come from the defensive component: a fixed-size split keeps shapes static.
        from_defensive = torch.rand(n, generator=generator, device=generator.device) < w
        n_def = int(from_defensive.sum())
        x_model, _ = self.model.sample_with_log_prob(n - n_def, generator)
        with seeded_global_rng(generator):
            x_def = self.defensive.sample((n_def,))
        x = torch.empty((n, *x_model.shape[1:]), dtype=x_model.dtype, device=x_model.device)
        x[~from_defensive] = x_model
        x[from_defensive] = x_def.to(x_model.dtype)
        log_q = torch.logaddexp(
            math.log1p(-w) + self.model.log_prob(x),
            math.log(w) + self.defensive.log_prob(x),
        )
        return {"x": x, "log_q": log_q}
