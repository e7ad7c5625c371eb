"""Density targets for ``task=density``.

Each target has ``log_prob(x)`` (normalised), ``sample(n, generator)`` drawing exact samples for
evaluation, ``to(device)``, ``dim`` and a ``name``. A user's own target only needs ``log_prob``
(unnormalised is fine); exact samples are then simply unavailable for evaluation.
"""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)


def _normal_log_prob(z: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """Sum over the last dim of log N(z; 0, scale²)."""
    scale = torch.as_tensor(scale, dtype=z.dtype, device=z.device)
    # The normalising constant is summed once, not once per sample: two passes over z instead of five.
    log_norm = torch.log(scale).expand(z.shape[-1]).sum() + 0.5 * LOG_2PI * z.shape[-1]
    return (z / scale).square_().sum(-1).mul_(-0.5).sub_(log_norm)


class Target:
    """Base class: a normalised density over R^dim with exact samples."""

    name = "target"
    normalised = True

    def __init__(self, dim: int):
        self.dim = int(dim)
        self.device = torch.device("cpu")

    @property
    def event_shape(self) -> torch.Size:
        return torch.Size([self.dim])

    def to(self, device: torch.device | str) -> Target:
        moved = self.__class__.__new__(self.__class__)
        moved.__dict__ = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in self.__dict__.items()}
        moved.device = torch.device(device)
        return moved

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"{self.name} target is a density on R^{self.dim} but got candidates of shape "
                f"{tuple(x.shape)}: the proposal's dimension must equal task.dim={self.dim}"
            )


class GaussianMixture(Target):
    """Equal-weight mixture of isotropic Gaussians with a shared standard deviation."""

    def __init__(self, means: torch.Tensor, std: float, name: str = "gaussian_mixture"):
        super().__init__(means.shape[1])
        if not std > 0:
            raise ValueError(f"mixture component std must be positive, got {std}")
        self.means = means.to(torch.float32)
        self.std = float(std)
        self.name = name

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        means = self.means.to(x.dtype)
        # Squared distances (n, K) accumulated one coordinate at a time: no (n, K, d) temporary and
        # a few passes over (n, K) instead of several over (n, K, d).
        sq = (x[:, :1] - means[:, 0]).square_()
        for j in range(1, self.dim):
            sq += (x[:, j : j + 1] - means[:, j]).square_()
        log_norm = self.dim * (math.log(self.std) + 0.5 * LOG_2PI) + math.log(means.shape[0])
        return torch.logsumexp(sq.mul_(-0.5 / self.std**2), dim=1) - log_norm

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        k = torch.randint(0, self.means.shape[0], (n,), generator=generator, device=self.device)
        noise = torch.randn((n, self.dim), generator=generator, device=self.device)
        return self.means[k] + self.std * noise


def grid25(spacing: float = 2.0, std: float = 0.05) -> GaussianMixture:
    """25 Gaussians on a 5×5 grid {−2, −1, 0, 1, 2}·spacing (the DRS / GAN mode-collapse benchmark)."""
    ticks = (torch.arange(5, dtype=torch.float32) - 2) * spacing
    means = torch.cartesian_prod(ticks, ticks)
    return GaussianMixture(means, std, name="grid25")


def ring8(radius: float = 2.0, std: float = 0.02) -> GaussianMixture:
    """8 Gaussians evenly spaced on a circle."""
    angles = torch.arange(8, dtype=torch.float32) * (2 * math.pi / 8)
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return GaussianMixture(means, std, name="ring8")


def corners(dim: int = 8, corner_dims: int = 3, separation: float = 5.0, std: float = 1.0) -> GaussianMixture:
    """2^corner_dims unit Gaussians at the corners (±separation, …) of the first ``corner_dims`` coordinates.

    Well-separated modes in d dimensions (REFERENCES §7): the best fixed N(0, s²I) accepts about
    K·s^(−d)·exp(−‖μ‖²/2s²) (under 1e-4 at the defaults), while a wide defensive Gaussian (s > std)
    keeps p/q bounded. Exact marginals: coordinate i < corner_dims is ½N(−sep, std²) + ½N(sep, std²),
    the others N(0, std²).
    """
    if not 1 <= corner_dims <= dim:
        raise ValueError(f"corners needs 1 ≤ task.target.corner_dims ≤ task.dim, got {corner_dims} and {dim}")
    if not separation > 0:
        raise ValueError(f"corners needs task.target.separation > 0, got {separation}")
    signs = torch.cartesian_prod(*[torch.tensor([-1.0, 1.0])] * corner_dims).reshape(-1, corner_dims)
    means = torch.zeros(signs.shape[0], dim)
    means[:, :corner_dims] = separation * signs
    return GaussianMixture(means, std, name="corners")


class Banana(Target):
    """Twisted Gaussian: z ~ N(0, diag(σ₁², 1, …, 1)), x₂ = z₂ + b(z₁² − σ₁²); volume preserving."""

    name = "banana"

    def __init__(self, dim: int = 2, curvature: float = 0.1, scale1: float = 3.0):
        if dim < 2:
            raise ValueError(f"banana needs task.dim ≥ 2, got {dim}")
        super().__init__(dim)
        self.b = float(curvature)
        self.s1 = float(scale1)

    def _untwist(self, x: torch.Tensor) -> torch.Tensor:
        z = x.clone()
        z[:, 1] = x[:, 1] - self.b * (x[:, 0] ** 2 - self.s1**2)
        return z

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        z = self._untwist(x)
        scales = torch.ones(self.dim, dtype=x.dtype, device=x.device)
        scales[0] = self.s1
        return _normal_log_prob(z, scales)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn((n, self.dim), generator=generator, device=self.device)
        z[:, 0] *= self.s1
        x = z.clone()
        x[:, 1] = z[:, 1] + self.b * (z[:, 0] ** 2 - self.s1**2)
        return x


def twisted_gaussian(dim: int = 8, twist: float = 0.1, scale1: float = 10.0) -> Banana:
    """Haario, Saksman & Tamminen's (1999) twisted Gaussian f ∘ φ_b, f = N(0, diag(100, 1, …, 1)),
    φ_b(x) = (x₁, x₂ + b·x₁² − 100·b, x₃, …); b = 0.1 is their "strongly twisted" case (REFERENCES §7).

    The banana with curvature −b: x₂ = z₂ − b(z₁² − 100). φ_b has unit Jacobian, so exact samples map
    to N(0, diag(100, 1, …, 1)) under φ_b (``Banana._untwist``): one exact marginal per coordinate.
    """
    return Banana(dim=dim, curvature=-float(twist), scale1=scale1)


class Funnel(Target):
    """Neal's funnel in R^dim: v ~ N(0, 3²), x_i | v ~ N(0, e^v) for i = 2..dim."""

    name = "funnel"

    def __init__(self, dim: int = 10, v_scale: float = 3.0):
        if dim < 2:
            raise ValueError(f"funnel needs task.dim ≥ 2, got {dim}")
        super().__init__(dim)
        self.v_scale = float(v_scale)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        v = x[:, 0]
        lp_v = -0.5 * (v / self.v_scale) ** 2 - math.log(self.v_scale) - 0.5 * LOG_2PI
        rest = x[:, 1:]
        # x_i ~ N(0, exp(v)): log-density −x²/(2e^v) − v/2 − log√(2π)
        lp_rest = (-0.5 * rest**2 * torch.exp(-v).unsqueeze(1) - 0.5 * v.unsqueeze(1) - 0.5 * LOG_2PI).sum(1)
        return lp_v + lp_rest

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        v = self.v_scale * torch.randn(n, generator=generator, device=self.device)
        rest = torch.randn((n, self.dim - 1), generator=generator, device=self.device) * torch.exp(v / 2).unsqueeze(1)
        return torch.cat([v.unsqueeze(1), rest], dim=1)


class TwoMoons(Target):
    """Two interleaved half circles blurred by isotropic Gaussian noise.

    Generative form: side s ∈ {0, 1} and angle θ ~ U(0, π) uniformly, centre
    c = (cos θ, sin θ) for s = 0 and (1 − cos θ, 0.5 − sin θ) for s = 1, x = c + σ·ε. The density
    integrates the Gaussian over θ by a 128-point midpoint rule per moon (arc spacing 0.025, well
    below σ = 0.1).
    """

    name = "two_moons"

    def __init__(self, noise: float = 0.1, quadrature: int = 128):
        super().__init__(2)
        if not noise > 0:
            raise ValueError(f"two_moons noise must be positive, got {noise}")
        self.noise = float(noise)
        theta = (torch.arange(quadrature, dtype=torch.float32) + 0.5) * (math.pi / quadrature)
        upper = torch.stack([torch.cos(theta), torch.sin(theta)], 1)
        lower = torch.stack([1 - torch.cos(theta), 0.5 - torch.sin(theta)], 1)
        self.centres = torch.cat([upper, lower])  # (2Q, 2), each with weight 1/(2Q)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        diff = x.unsqueeze(1) - self.centres.to(x.dtype)
        comp = _normal_log_prob(diff, self.noise)
        return torch.logsumexp(comp, 1) - math.log(self.centres.shape[0])

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        theta = math.pi * torch.rand(n, generator=generator, device=self.device)
        side = torch.rand(n, generator=generator, device=self.device) < 0.5
        c = torch.stack([torch.cos(theta), torch.sin(theta)], 1)
        c = torch.where(side.unsqueeze(1), torch.stack([1 - c[:, 0], 0.5 - c[:, 1]], 1), c)
        return c + self.noise * torch.randn((n, 2), generator=generator, device=self.device)


class StandardNormal(Target):
    """N(0, I_dim) — handy for tests and for N-D sanity checks."""

    name = "normal"

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return _normal_log_prob(x, 1.0)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn((n, self.dim), generator=generator, device=self.device)


TARGETS = {
    "grid25": grid25,
    "ring8": ring8,
    "banana": Banana,
    "twisted_gaussian": twisted_gaussian,
    "corners": corners,
    "funnel": Funnel,
    "two_moons": TwoMoons,
    "normal": StandardNormal,
}
#: Targets that only exist in 2-D (their builders take no ``dim``).
FIXED_DIM = {"grid25": 2, "ring8": 2, "two_moons": 2}


def make_target(name: str, dim: int | None = None, **params: float) -> Target:
    """Build a built-in target by name; ``params`` go to its builder (e.g. ``std`` for grid25)."""
    if name not in TARGETS:
        raise ValueError(f"unknown density target {name!r} (task.target); choose one of {sorted(TARGETS)}")
    if name in FIXED_DIM:
        if dim is not None and dim != FIXED_DIM[name]:
            raise ValueError(f"target {name} is {FIXED_DIM[name]}-D but task.dim={dim}; set task.dim={FIXED_DIM[name]}")
        builder_args = dict(params)
    else:
        builder_args = {"dim": 2 if dim is None else int(dim), **params}
    try:
        return TARGETS[name](**builder_args)
    except TypeError as err:
        raise ValueError(f"bad parameters {sorted(params)} for target {name!r} (task.target_params): {err}") from err
