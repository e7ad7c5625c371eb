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


def bimodal(logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.distributions.Distribution:
    """Independent coordinates, each a two-component Gaussian mixture (parameters of shape (dim, 2))."""
    D = torch.distributions
    return D.Independent(D.MixtureSameFamily(D.Categorical(logits=logits), D.Normal(loc, scale)), 1)


class BimodalBase(zuko.lazy.LazyDistribution):
    """A learnable base whose coordinates are independent two-component Gaussian mixtures.

    Affine couplings can only shift and scale a coordinate given the others: from a Gaussian base they cannot
    make a coordinate bimodal without another coordinate carrying the mode, so a product of separated modes
    (the corners' 2³, the many-well's 2^(d/2)) comes out bridged or merged. With this base the flow starts
    from such a product; the components start at ±0.1 (almost one Gaussian) and separate where the data asks.
    """

    def __init__(self, features: int):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.zeros(features, 2))
        self.loc = torch.nn.Parameter(torch.tensor([-1.0, 1.0]).repeat(features, 1))
        self.log_scale = torch.nn.Parameter(torch.full((features, 2), math.log(0.5)))

    def forward(self, c: torch.Tensor | None = None) -> torch.distributions.Distribution:
        return bimodal(self.logits, self.loc, self.log_scale.exp())


class HeavyTailedBase(torch.distributions.Distribution):
    """(1 − w)·N(μ, σ²) + w·∏ Student-t_ν(μᵢ, σᵢ) over R^d: a diagonal Gaussian with a heavy-tailed share w
    (w = 1: independent Student-t coordinates). Each draw comes whole from one of the two parts."""

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, gaussian: torch.distributions.Distribution, df: float, weight: float = 1.0):
        if not (math.isfinite(df) and df > 0):
            raise ValueError(f"the Student-t base needs df > 0, got {df}")
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"the Student-t base's weight must be in (0, 1], got {weight}")
        self.gaussian, self.weight = gaussian, float(weight)
        loc, scale = gaussian.mean, gaussian.stddev
        self.student = torch.distributions.Independent(
            torch.distributions.StudentT(torch.full_like(scale, df), loc, scale), 1
        )
        super().__init__(batch_shape=gaussian.batch_shape, event_shape=gaussian.event_shape, validate_args=False)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        heavy = self.student.sample(sample_shape)
        if self.weight == 1.0:
            return heavy
        pick = torch.rand(heavy.shape[: heavy.dim() - 1], device=heavy.device) < self.weight
        return torch.where(pick.unsqueeze(-1), heavy, self.gaussian.sample(sample_shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        log_t = self.student.log_prob(value)
        if self.weight == 1.0:
            return log_t
        return torch.logaddexp(math.log1p(-self.weight) + self.gaussian.log_prob(value), math.log(self.weight) + log_t)


class FlowModel(FineTunedModel):
    """Flow on R^dim modelling x / scale (``scale`` puts wide targets in the flow's working range)."""

    def __init__(
        self,
        dim: int,
        kind: str = "nsf",
        transforms: int = 4,
        hidden: tuple[int, ...] = (64, 64),
        bins: int = 8,
        passes: int | None = None,
        global_dims: int = 0,
        bimodal_base: bool = False,
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
        if not 0 <= global_dims < dim:
            raise ValueError(
                f"model.net.global_dims must be in [0, dim) = [0, {dim}) (the leading coordinates that condition all "
                f"the others in a first coupling layer; 0: none), got {global_dims}"
            )
        if passes is not None and (kind == "realnvp" or passes < 2):
            raise ValueError(
                f"model.net.passes={passes!r}: set it only for kind=maf or nsf, to 2 (a coupling flow: one pass to "
                "sample) or more (null: fully autoregressive, one pass per coordinate)"
            )
        self.save_hyperparameters()
        self.dim = int(dim)
        self.scale = float(scale)
        # Spline bins (nsf only): a sharp multi-modal target needs enough knots per coordinate to
        # separate its modes (8 bins over the spline's [-5, 5] smear the 25-grid's 5 modes per axis).
        extra = {"bins": int(bins)} if kind == "nsf" else {}
        # passes = 2 makes maf / nsf a coupling flow: sampling in one pass instead of one per coordinate (zuko)
        if passes is not None:
            extra["passes"] = int(passes)
        flow = FLOWS[kind](features=self.dim, transforms=transforms, hidden_features=list(hidden), **extra)
        if global_dims:
            # Hierarchical targets (a funnel's v scales every x_i): one affine coupling, applied to x first,
            # transforms all the other coordinates conditioned on the first global_dims. No alternating mask
            # can do this: v and half of the x_i always sit on the same side of it.
            head = zuko.flows.GeneralCouplingTransform(
                features=self.dim, mask=torch.arange(self.dim) < global_dims, hidden_features=list(hidden)
            )
            flow = zuko.flows.Flow([head, *flow.transform.transforms], flow.base)
        if bimodal_base:
            flow = zuko.flows.Flow(list(flow.transform.transforms), BimodalBase(self.dim))
        self.flow = flow
        self.eval_samples = int(eval_samples)
        self.eval_seed = int(eval_seed)
        self.val_nll = MeanMetric()
        self.energy = EnergyDistance()
        self._exact: list[torch.Tensor] = []

    # -- density and sampling -------------------------------------------------------------
    def log_prob(
        self, x: torch.Tensor, base_scale: float = 1.0, base_df: float | None = None, base_df_weight: float = 1.0
    ) -> torch.Tensor:
        """log q(x); with ``base_scale`` ≠ 1 or ``base_df`` that of the flow pushed from a widened or
        heavy-tailed base (see :meth:`_flow`)."""
        if x.shape[-1] != self.dim:  # otherwise a bare matmul shape error from deep inside the flow
            raise ValueError(
                f"model.net.dim={self.dim} but the samples are {x.shape[-1]}-D; set model.net.dim to task.dim"
            )
        flow = self._flow(base_scale, base_df, base_df_weight)
        return flow.log_prob(x / self.scale) - self.dim * math.log(self.scale)

    @torch.no_grad()
    def sample_with_log_prob(
        self,
        n: int,
        generator: torch.Generator,
        base_scale: float = 1.0,
        base_df: float | None = None,
        base_df_weight: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n samples and their exact log-densities; ``base_scale`` > 1 or ``base_df`` draw from the flow pushed
        from a widened or heavy-tailed base."""
        if n == 0:
            empty = torch.empty((0, self.dim), device=self.device)
            return empty, empty[:, 0]
        with seeded_global_rng(generator):
            z, log_pz = self._flow(base_scale, base_df, base_df_weight).rsample_and_log_prob((n,))
        return z * self.scale, log_pz - self.dim * math.log(self.scale)

    def _flow(
        self, base_scale: float = 1.0, base_df: float | None = None, base_df_weight: float = 1.0
    ) -> zuko.distributions.NormalizingFlow:
        """The flow's distribution; ``base_scale`` ≠ 1 widens its base N(μ, σ²) to N(μ, (base_scale·σ)²), and
        ``base_df`` mixes in (weight ``base_df_weight``; 1: replaces it) independent Student-t coordinates with
        that many degrees of freedom, same location and scale.

        The same transform pushes the other base forward, so the proposal keeps the learned shape with tails
        heavier than what was learned: where the flow under-covers the target, p / q stays bounded
        (``proposal.model_base_scale``, ``proposal.model_base_df``). A Student-t base's tails are polynomial
        in every direction, also where the flow's conditioners extrapolate beyond their training data (the far
        arms of a banana); in the bulk it is below the Gaussian (0.04 nats per coordinate at the centre for
        5 degrees of freedom), which a weight below 1 mostly avoids. Training and evaluation always use the
        Gaussian base.
        """
        flow = self.flow()
        if base_scale == 1.0 and base_df is None:
            return flow
        base = flow.base
        if isinstance(base, zuko.distributions.DiagNormal):
            other = zuko.distributions.DiagNormal(base.mean, base.stddev * base_scale)
        elif isinstance(self.flow.base, BimodalBase):  # each component widened, the modes where they are
            mixture = base.base_dist
            parts = mixture.component_distribution
            other = bimodal(mixture.mixture_distribution.logits, parts.loc, parts.scale * base_scale)
        else:
            raise TypeError(
                f"base_scale / base_df need a flow with a diagonal Gaussian or bimodal base, not {type(base).__name__}"
            )
        if base_df is not None:
            other = HeavyTailedBase(other, float(base_df), float(base_df_weight))
        return zuko.distributions.NormalizingFlow(flow.transform, other)

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
