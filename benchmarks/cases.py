"""The benchmark problems: one target, one proposal and one envelope each, in torch and in NumPy.

Every case fixes log M (exactly where it is known in closed form, otherwise from a dense search of
log p − log q around the target's modes), so all contenders run the *same* sampler with the same
acceptance rate. The NumPy versions are what a careful user would write by hand: float64 (NumPy's
default), closed-form log-densities, whole-array operations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import distributions as D

from rsft.proposals.distribution import isotropic_normal, isotropic_student_t
from rsft.targets import StandardNormal, grid25

LOG_2PI = math.log(2 * math.pi)


@dataclass
class Case:
    """One rejection-sampling problem, described for every contender."""

    name: str
    label: str
    proposal: D.Distribution  # torch proposal q
    target: object  # torch target p: anything with log_prob
    log_M: float  # envelope: log p − log q ≤ log M everywhere
    np_sample: Callable[[np.random.Generator, int], np.ndarray]  # n draws from q
    np_log_q: Callable[[np.ndarray], np.ndarray]
    np_log_p: Callable[[np.ndarray], np.ndarray]

    @property
    def acceptance_rate(self) -> float:
        """Z / M with a normalised target (every case's target is normalised)."""
        return math.exp(-self.log_M)


def _np_normal_log_prob(x: np.ndarray, scale: float) -> np.ndarray:
    d = x.shape[1]
    return -0.5 / scale**2 * np.einsum("ij,ij->i", x, x) - d * (math.log(scale) + 0.5 * LOG_2PI)


def beta_case() -> Case:
    """Beta(2, 5) from Uniform(0, 1): M = the mode density 30·0.2·0.8⁴ = 2.4576 (rate 40.7 %)."""
    log_30 = math.log(30.0)
    return Case(
        name="beta",
        label="1-D Beta(2,5) <- Uniform(0,1)",
        proposal=D.Uniform(0.0, 1.0),
        target=D.Beta(2.0, 5.0),
        log_M=math.log(30 * 0.2 * 0.8**4),
        np_sample=lambda rng, n: rng.random(n),
        np_log_q=lambda x: np.zeros_like(x),
        np_log_p=lambda x: log_30 + np.log(x) + 4.0 * np.log1p(-x),
    )


def _grid_log_M(target, proposal_scale: float) -> float:
    """sup log p − log q for the 25-Gaussian grid: a fine search around every mean, in float64.

    The supremum sits within a few σ of a mode (q varies slowly there), so a 401² grid over ±4σ of
    each mean, refined once around the best point, pins it to ~1e-6 — far below any effect on the
    acceptance rate.
    """
    means = target.means.double()
    std = target.std

    def log_ratio(x: torch.Tensor) -> torch.Tensor:
        d2 = ((x.unsqueeze(1) - means) ** 2).sum(-1)
        log_p = torch.logsumexp(-0.5 * d2 / std**2, 1) - math.log(len(means)) - 2 * math.log(std) - LOG_2PI
        log_q = -0.5 * (x**2).sum(1) / proposal_scale**2 - 2 * math.log(proposal_scale) - LOG_2PI
        return log_p - log_q

    offsets = torch.linspace(-4 * std, 4 * std, 401, dtype=torch.float64)
    box = torch.cartesian_prod(offsets, offsets)
    best, where = -math.inf, None
    for mean in means:
        values = log_ratio(mean + box)
        i = int(values.argmax())
        if float(values[i]) > best:
            best, where = float(values[i]), mean + box[i]
    fine = where + box / 100
    return max(best, float(log_ratio(fine).max()))


def grid25_case(std: float = 0.5, proposal_scale: float = 3.0) -> Case:
    """rsft.targets.grid25 (spacing 2) from a wide N(0, scale² I): about 10 % acceptance."""
    target = grid25(spacing=2.0, std=std)
    means = target.means.numpy().astype(np.float64)
    log_norm = -math.log(len(means)) - 2 * math.log(std) - LOG_2PI

    def np_log_p(x: np.ndarray) -> np.ndarray:
        d2 = ((x[:, None, :] - means[None, :, :]) ** 2).sum(-1)  # (n, 25)
        comp = -0.5 / std**2 * d2
        top = comp.max(1)
        return top + np.log(np.exp(comp - top[:, None]).sum(1)) + log_norm

    return Case(
        name="grid25",
        label=f"2-D 25-Gaussian grid (std {std}) <- N(0, {proposal_scale}^2 I)",
        proposal=isotropic_normal(2, proposal_scale),
        target=target,
        log_M=_grid_log_M(target, proposal_scale),
        np_sample=lambda rng, n: proposal_scale * rng.standard_normal((n, 2)),
        np_log_q=lambda x: _np_normal_log_prob(x, proposal_scale),
        np_log_p=np_log_p,
    )


def normal_student_t_case(dim: int = 10, df: float = 5.0) -> Case:
    """N(0, I_dim) from independent Student-t(df) coordinates.

    Per coordinate, log φ(x) − log t_ν(x) peaks at x = ±1 (where ν + x² = ν + 1), so
    log M = dim · (−1/2 − log√(2π) − log t_ν(1)).
    """
    log_t_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    log_t_at_1 = log_t_norm - (df + 1) / 2 * math.log1p(1 / df)
    log_M = dim * (-0.5 - 0.5 * LOG_2PI - log_t_at_1)

    def np_log_q(x: np.ndarray) -> np.ndarray:
        return dim * log_t_norm - (df + 1) / 2 * np.log1p(x * x / df).sum(1)

    return Case(
        name=f"normal{dim}_t",
        label=f"{dim}-D N(0, I) <- Student-t(df={df:g})",
        proposal=isotropic_student_t(dim, df, 1.0),
        target=StandardNormal(dim),
        log_M=log_M,
        np_sample=lambda rng, n: rng.standard_t(df, (n, dim)),
        np_log_q=np_log_q,
        np_log_p=lambda x: _np_normal_log_prob(x, 1.0),
    )


def normal_from_wider_normal_case(dim: int = 10, acceptance: float = 0.01) -> Case:
    """N(0, I_dim) from N(0, s² I_dim) with s = acceptance^(−1/dim): M = s^dim, rate exactly ``acceptance``."""
    scale = acceptance ** (-1.0 / dim)
    return Case(
        name=f"normal{dim}_{acceptance:.0%}".replace("%", "pct"),
        label=f"{dim}-D N(0, I) <- N(0, {scale:.3f}^2 I)",
        proposal=isotropic_normal(dim, scale),
        target=StandardNormal(dim),
        log_M=-math.log(acceptance),
        np_sample=lambda rng, n: scale * rng.standard_normal((n, dim)),
        np_log_q=lambda x: _np_normal_log_prob(x, scale),
        np_log_p=lambda x: _np_normal_log_prob(x, 1.0),
    )


#: name → builder. ``normal10_1pct`` is the ≈ 1 % acceptance case; ``grid25`` the ≈ 10 % one.
CASES: dict[str, Callable[[], Case]] = {
    "beta": beta_case,
    "grid25": grid25_case,
    "normal10_t": normal_student_t_case,
    "normal10_1pct": normal_from_wider_normal_case,
}
