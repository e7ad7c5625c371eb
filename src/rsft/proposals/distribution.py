"""``proposal=gaussian | student_t | uniform``: candidates from a ``torch.distributions`` distribution."""

from __future__ import annotations

import torch
from torch import distributions as D

from rsft.batch import Batch
from rsft.distributions import move_distribution, seeded_global_rng
from rsft.proposals.base import Proposal


class DistributionProposal(Proposal):
    """Candidates from any ``torch.distributions.Distribution``: the batch carries ``x`` and ``log_q``."""

    def __init__(self, dist: D.Distribution):
        if not isinstance(dist, D.Distribution):
            raise TypeError(f"DistributionProposal needs a torch.distributions.Distribution, got {type(dist).__name__}")
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
    return D.Independent(
        D.StudentT(torch.full((dim,), float(df)), torch.zeros(dim), torch.full((dim,), float(scale))), 1
    )


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
