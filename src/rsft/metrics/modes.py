"""Mode-coverage metrics of a sampler on a Gaussian-mixture target (DRS, Azadi et al. 2019, Table 1).

For samples x₁…x_n and a mixture with component means μ_k and a shared std σ:

- a sample is *high quality* when its distance to the nearest mean is within ``k_std``·σ (4 in
  the paper);
- ``hq_percent``: 100 × (high-quality samples) / n;
- ``recovered_modes``: components that are the nearest mean of at least one high-quality sample;
- ``hq_std``: the standard deviation of the high-quality samples around their own component mean,
  pooled over coordinates (the population std of the residuals x − μ_nearest, all coordinates
  together). A sampler that draws the mixture exactly gives σ (up to the 4σ truncation: 0.9995 σ
  in 2-D).

:class:`ModeCoverage` is the Lightning callback that logs these figures for a run, as ``modes/*``:
on the model's own samples (``samples=model``, for generative models such as a flow) or on the
epoch's accepted set (``samples=accepted``, for a fixed proposal filtered by an acceptance rule, such
as a GAN generator with DRS). It also logs ``modes/proposals_total``, the candidates the run has
drawn so far, so that a sampler's quality can be read next to what it cost.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch


def mode_coverage(x: torch.Tensor, means: torch.Tensor, std: float, k_std: float = 4.0) -> dict[str, float]:
    """``hq_percent``, ``recovered_modes`` and ``hq_std`` of samples ``x`` (n, d) (see the module doc)."""
    if x.dim() != 2 or means.dim() != 2 or x.shape[1] != means.shape[1]:
        raise ValueError(
            f"mode_coverage needs samples (n, d) and means (K, d), got {tuple(x.shape)} and {tuple(means.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError("mode_coverage needs at least one sample, got none")
    if not (std > 0 and k_std > 0):
        raise ValueError(f"mode_coverage needs std > 0 and k_std > 0, got std={std}, k_std={k_std}")
    x = x.double()
    means = means.to(device=x.device, dtype=torch.float64)
    # Exact differences, not the matrix-product shortcut: a sample exactly on the 4σ boundary counts.
    distance, nearest = torch.cdist(x, means, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1)
    high = distance <= k_std * std
    n_high = int(high.sum())
    residual = x[high] - means[nearest[high]]
    return {
        "hq_percent": 100.0 * n_high / x.shape[0],
        "recovered_modes": float(nearest[high].unique().numel()),
        "hq_std": float(residual.std(unbiased=False)) if n_high else float("nan"),
    }


def mixture_components(target: Any) -> tuple[torch.Tensor, float]:
    """The component means and shared std of a Gaussian-mixture target (``task.target``)."""
    means, std = getattr(target, "means", None), getattr(target, "std", None)
    if not torch.is_tensor(means) or not isinstance(std, float):
        raise TypeError(
            f"mode-coverage metrics need a Gaussian-mixture target with means and one std (e.g. "
            f"task.target.name=grid25), got {type(target).__name__}"
        )
    return means, std


class ModeCoverage(pl.Callback):
    """Logs ``modes/{hq_percent,recovered_modes,hq_std,proposals_total}`` every epoch.

    ``samples=model``: ``num_samples`` fresh samples of the model (``generate(n, generator)`` or
    ``sample_with_log_prob``), drawn with a fixed seed after every validation pass (so before
    fine-tuning too, as ``before/modes/*``). ``samples=accepted``: the first ``num_samples`` rows of
    the epoch's accepted set; it must hold at least that many (set ``sampler.num_accepted``).
    """

    def __init__(
        self, target: Any, samples: str = "model", num_samples: int = 10_000, k_std: float = 4.0, seed: int = 4242
    ):
        if samples not in ("model", "accepted"):
            raise ValueError(f"callbacks.mode_coverage.samples must be 'model' or 'accepted', got {samples!r}")
        if num_samples <= 0:
            raise ValueError(f"callbacks.mode_coverage.num_samples must be positive, got {num_samples}")
        self.samples = samples
        self.num_samples = int(num_samples)
        self.k_std = float(k_std)
        self.seed = int(seed)
        self.proposals_total = 0.0
        self.means, self.std = mixture_components(target)  # target: the run's task's ("@task.target")
        self.accepted: Any = None  # the round's accepted rows (on_round)

    def _log(self, pl_module: pl.LightningModule, trainer: pl.Trainer, x: torch.Tensor) -> None:
        figures = mode_coverage(x, self.means, self.std, self.k_std)
        figures["proposals_total"] = self.proposals_total
        pl_module.log_dict({f"modes/{k}": v for k, v in figures.items()}, on_step=False, on_epoch=True, batch_size=1)

    def on_round(self, epoch: int, stats: dict[str, float], accepted: Any) -> None:
        self.proposals_total += float(stats.get("proposals_drawn", 0.0))
        self.accepted = accepted

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.samples != "accepted":
            return
        accepted = self.accepted
        have = 0 if not accepted else accepted["x"].shape[0]
        if have < self.num_samples:
            raise ValueError(
                f"mode coverage on the accepted set needs {self.num_samples:,} accepted samples but the epoch "
                f"accepted {have:,}; set sampler.num_accepted ≥ {self.num_samples} or lower "
                "callbacks.mode_coverage.num_samples"
            )
        self._log(pl_module, trainer, accepted["x"][: self.num_samples])

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.samples != "model" or trainer.sanity_checking:
            return
        generator = torch.Generator(pl_module.device).manual_seed(self.seed)
        with torch.no_grad():
            if hasattr(pl_module, "generate"):
                x = pl_module.generate(self.num_samples, generator)
            elif hasattr(pl_module, "sample_with_log_prob"):
                x, _ = pl_module.sample_with_log_prob(self.num_samples, generator)
            else:
                raise TypeError(
                    f"callbacks.mode_coverage.samples=model needs a generative model; {type(pl_module).__name__} "
                    "has neither generate(n, generator) nor sample_with_log_prob(n, generator)"
                )
        self._log(pl_module, trainer, x)

    def state_dict(self) -> dict[str, Any]:
        return {"proposals_total": self.proposals_total}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.proposals_total = float(state_dict.get("proposals_total", 0.0))
