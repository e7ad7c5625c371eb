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


def _normal_sf(z: float) -> float:
    """P(Z > z) for Z ~ N(0, 1), precise in the upper tail (erfc, not 1 − Φ)."""
    return 0.5 * math.erfc(z / math.sqrt(2))


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

    def gaussian_coordinates(self, x: torch.Tensor) -> torch.Tensor:
        """An exact bijection of x to N(0, I_dim) under this target (for goodness-of-fit checks), in float64.

        Defined for targets whose coordinates become independent under a known map (twisted Gaussian,
        funnel, many-well, normal); a mixture has dependent coordinates and overrides the two checks below.
        """
        raise NotImplementedError(f"{type(self).__name__} has no exact map to independent Gaussian coordinates")

    def marginal_uniforms(self, x: torch.Tensor) -> torch.Tensor:
        """(n, dim) float64: each coordinate through its exact marginal CDF (after the target's map), each
        column U(0, 1) under exact samples: the per-coordinate goodness-of-fit check."""
        return torch.special.ndtr(self.gaussian_coordinates(x))

    def projection_uniforms(self, x: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """(n, k) float64: the Gaussian coordinates projected on k unit ``directions`` (k, dim) and put through
        Φ; each column U(0, 1) under exact samples. Checks the joint law, which per-coordinate tests miss
        (e.g. a sampler that keeps only half of a product's modes has the right marginals)."""
        return torch.special.ndtr(self.gaussian_coordinates(x) @ directions.double().T)

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

    def marginal_uniforms(self, x: torch.Tensor) -> torch.Tensor:
        """Coordinate j through its exact marginal CDF, the mixture of N(μ_kj, σ²) over the components k."""
        return self._mixture_cdf(x.double(), self.means.double())

    def projection_uniforms(self, x: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """x · u through its exact CDF, the mixture of N(μ_k · u, σ²) (unit u: the shared σ is unchanged)."""
        directions = directions.double().T
        return self._mixture_cdf(x.double() @ directions, self.means.double() @ directions)

    def _mixture_cdf(self, y: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """(n, m): column j of y through the CDF of the equal-weight mixture of N(centres[k, j], σ²)."""
        return torch.stack(
            [torch.special.ndtr((y[:, j : j + 1] - centres[:, j]) / self.std).mean(1) for j in range(y.shape[1])], 1
        )


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

    def gaussian_coordinates(self, x: torch.Tensor) -> torch.Tensor:
        """z = the untwisted x (unit Jacobian), its first coordinate divided by σ₁: N(0, I) under p."""
        z = self._untwist(x.double())
        z[:, 0] /= self.s1
        return z

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
    """Neal's funnel in R^dim: v ~ N(0, σ_v²) (σ_v = ``v_scale`` = 3), x_i | v ~ N(0, e^v) for i = 2..dim.

    ``v_min`` truncates the neck: v ≥ v_min, renormalised (REFERENCES §7: as v → −∞ the conditional
    scale e^(v/2) vanishes and p / q is unbounded in practice for any fixed proposal, so an exact
    rejection sampler needs v bounded below). :meth:`truncated_mass` is the mass removed, P(v < v_min)
    under the untruncated funnel, computed exactly; exact samples draw v by inverse CDF.
    """

    name = "funnel"

    def __init__(self, dim: int = 10, v_scale: float = 3.0, v_min: float | None = None):
        if dim < 2:
            raise ValueError(f"funnel needs task.dim ≥ 2, got {dim}")
        if not v_scale > 0:
            raise ValueError(f"funnel needs task.target.v_scale > 0, got {v_scale}")
        if v_min is not None and not math.isfinite(v_min):
            raise ValueError(f"funnel needs a finite task.target.v_min (or null: untruncated), got {v_min}")
        super().__init__(dim)
        self.v_scale = float(v_scale)
        self.v_min = None if v_min is None else float(v_min)
        # log P(v ≥ v_min): the truncated density is the funnel's divided by it
        self.log_kept = 0.0 if self.v_min is None else math.log(_normal_sf(self.v_min / self.v_scale))

    def truncated_mass(self) -> float:
        """P(v < v_min) under the untruncated funnel (0 without truncation): the probability mass removed."""
        return 0.0 if self.v_min is None else _normal_sf(-self.v_min / self.v_scale)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        v = x[:, 0]
        lp_v = -0.5 * (v / self.v_scale) ** 2 - math.log(self.v_scale) - 0.5 * LOG_2PI - self.log_kept
        rest = x[:, 1:]
        # x_i ~ N(0, exp(v)): log-density −x²/(2e^v) − v/2 − log√(2π)
        lp_rest = (-0.5 * rest**2 * torch.exp(-v).unsqueeze(1) - 0.5 * v.unsqueeze(1) - 0.5 * LOG_2PI).sum(1)
        log_p = lp_v + lp_rest
        if self.v_min is not None:
            log_p = log_p.masked_fill(v < self.v_min, -math.inf)
        return log_p

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.v_min is None:
            v = self.v_scale * torch.randn(n, generator=generator, device=self.device)
        else:  # inverse CDF of the truncated normal, from the upper tail: P(V > v) = u · P(V ≥ v_min)
            u = torch.rand(n, generator=generator, device=self.device, dtype=torch.float64)
            v = (-self.v_scale * torch.special.ndtri(u * math.exp(self.log_kept))).clamp_(min=self.v_min).float()
        rest = torch.randn((n, self.dim - 1), generator=generator, device=self.device) * torch.exp(v / 2).unsqueeze(1)
        return torch.cat([v.unsqueeze(1), rest], dim=1)

    def gaussian_coordinates(self, x: torch.Tensor) -> torch.Tensor:
        """(v mapped through its normal or truncated-normal CDF to N(0, 1), x_i · e^(−v/2)): N(0, I) under p."""
        x = x.double()
        v = x[:, :1]
        if self.v_min is None:
            w0 = v / self.v_scale
        else:  # the truncated normal's CDF, from whichever tail keeps its precision, then the normal quantile
            lower_v, lower_min = torch.special.ndtr(v / self.v_scale), _normal_sf(-self.v_min / self.v_scale)
            kept = math.exp(self.log_kept)
            lower = ((lower_v - lower_min) / kept).clamp(min=1e-300)
            upper = (torch.special.ndtr(-v / self.v_scale) / kept).clamp(min=1e-300)
            w0 = torch.where(lower < 0.5, torch.special.ndtri(lower), -torch.special.ndtri(upper))
        return torch.cat([w0, x[:, 1:] * torch.exp(-v / 2)], dim=1)


def double_well_log_density(x: torch.Tensor, tilt: float = 0.5) -> torch.Tensor:
    """Unnormalised log density of the many-well's first coordinate: −x⁴ + 6x² + tilt·x (REFERENCES §11: 0.5)."""
    x2 = x * x
    return -x2 * x2 + 6.0 * x2 + tilt * x


class ManyWell(Target):
    """Many-well (FAB, Midgley et al. 2023; REFERENCES §11): dim/2 independent pairs (x₁, x₂), coordinates
    (2k, 2k + 1), with log density −x₁⁴ + 6x₁² + 0.5x₁ − x₂²/2: a double well in x₁ (wells near ±1.7, the
    right one about 5.6 times heavier) and a standard normal in x₂; 2^(dim/2) modes. ``tilt`` is the linear
    term's coefficient (0.5; another value is another target, e.g. for a test's wrong sampler).

    The normaliser of the double well is a numerical integral (Simpson's rule with ``CELL``-wide cells on
    [−``HALF_WIDTH``, ``HALF_WIDTH``]; outside it −x⁴ + 6x² + 0.5x ≤ −x⁴/2 ≤ −312, a mass below e^(−300) of
    the whole, zero in float64). Exact samples of x₁: rejection from a piecewise-constant envelope on the
    same cells. On a cell [a, b] with |f′| ≤ G, f(x) ≤ (f(a) + f(b))/2 + G(b − a)/2 (from f(x) ≤ f(a) + G(x − a)
    and f(x) ≤ f(b) + G(b − x)), and G = 4L³ + 12L + |t| bounds |f′(x)| = |−4x³ + 12x + t| on [−L, L]:
    a true envelope, so the draws are exact (about 98 % accepted). The marginal CDF of x₁ (for goodness
    of fit) is the cumulative trapezoid integral on the cells, interpolated linearly.
    """

    name = "many_well"
    HALF_WIDTH = 5.0
    CELL = 1e-4

    def __init__(self, dim: int = 32, tilt: float = 0.5):
        if dim < 2 or dim % 2:
            raise ValueError(f"many_well needs an even task.dim ≥ 2 (dim/2 pairs of coordinates), got {dim}")
        if not (math.isfinite(tilt) and abs(tilt) <= 1.0):
            raise ValueError(f"many_well needs |task.target.tilt| ≤ 1 (the wells' asymmetry; FAB: 0.5), got {tilt}")
        super().__init__(dim)
        self.tilt = float(tilt)
        half, cells = self.HALF_WIDTH, round(2 * self.HALF_WIDTH / self.CELL)
        self.grid = torch.linspace(-half, half, cells + 1, dtype=torch.float64)
        f = double_well_log_density(self.grid, self.tilt)
        top = float(f.max())
        g = (f - top).exp()
        h = float(self.grid[1] - self.grid[0])
        simpson = h / 3 * (g[0] + g[-1] + 4 * g[1:-1:2].sum() + 2 * g[2:-1:2].sum())
        self.log_norm_well = top + math.log(float(simpson))  # log ∫ exp(−x⁴ + 6x² + 0.5x) dx
        # the CDF at the grid points, from the left and from the right (each precise in its own tail)
        steps = torch.cat([torch.zeros(1, dtype=torch.float64), (g[1:] + g[:-1]) * (h / 2)])
        cum = steps.cumsum(0)
        self.cdf_left = cum / cum[-1]
        self.cdf_right = (cum[-1] - cum) / cum[-1]
        # the envelope: one log-bound per cell, and the cells' cumulative weights to draw a cell from
        slope = 4 * half**3 + 12 * half + abs(self.tilt)
        self.cell_log_bound = (f[1:] + f[:-1]) / 2 + slope * h / 2
        weights = (self.cell_log_bound - self.cell_log_bound.max()).exp()
        self.cell_cum = weights.cumsum(0) / weights.sum()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        wells, normals = x[:, 0::2], x[:, 1::2]
        pairs = self.dim // 2
        log_norm = pairs * (self.log_norm_well + 0.5 * LOG_2PI)
        return double_well_log_density(wells, self.tilt).sum(1) - 0.5 * normals.square().sum(1) - log_norm

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        x = torch.randn((n, self.dim), generator=generator, device=self.device)
        x[:, 0::2] = self.sample_well(n * (self.dim // 2), generator).reshape(n, -1).to(x.dtype)
        return x

    def sample_well(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n exact draws of the double well's x₁ (float64), by rejection from the cell envelope."""
        kept: list[torch.Tensor] = []
        held = 0
        h = float(self.grid[1] - self.grid[0])
        while held < n:
            m = int((n - held) * 1.05) + 16
            u = torch.rand((3, m), generator=generator, device=self.device, dtype=torch.float64)
            cell = torch.searchsorted(self.cell_cum, u[0]).clamp_(max=self.cell_cum.numel() - 1)
            x = self.grid[cell] + h * u[1]
            accept = u[2].log() < double_well_log_density(x, self.tilt) - self.cell_log_bound[cell]
            kept.append(x[accept])
            held += int(accept.sum())
        return torch.cat(kept)[:n]

    def well_cdf(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P(X₁ ≤ x), P(X₁ > x)) for the double well, each from its own side of the grid (float64)."""
        x = x.double().clamp(self.grid[0], self.grid[-1])
        i = torch.searchsorted(self.grid, x).clamp_(1, self.grid.numel() - 1)
        t = (x - self.grid[i - 1]) / (self.grid[i] - self.grid[i - 1])
        left = self.cdf_left[i - 1] + t * (self.cdf_left[i] - self.cdf_left[i - 1])
        right = self.cdf_right[i - 1] + t * (self.cdf_right[i] - self.cdf_right[i - 1])
        return left, right

    def gaussian_coordinates(self, x: torch.Tensor) -> torch.Tensor:
        """x₁ through its CDF and the normal quantile (from whichever tail keeps its precision); x₂ as it is."""
        z = x.double().clone()
        left, right = self.well_cdf(z[:, 0::2])
        z[:, 0::2] = torch.where(
            left < 0.5, torch.special.ndtri(left.clamp(min=1e-300)), -torch.special.ndtri(right.clamp(min=1e-300))
        )
        return z


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

    def gaussian_coordinates(self, x: torch.Tensor) -> torch.Tensor:
        return x.double()


TARGETS = {
    "grid25": grid25,
    "ring8": ring8,
    "banana": Banana,
    "twisted_gaussian": twisted_gaussian,
    "corners": corners,
    "funnel": Funnel,
    "many_well": ManyWell,
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
