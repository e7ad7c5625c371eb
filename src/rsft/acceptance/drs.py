"""``acceptance=drs``: discriminator rejection sampling (Azadi et al., ICLR 2019, Algorithm 1).

With an optimal discriminator D = σ(D̃), exp(D̃(x)) = p_data(x)/p_g(x), so accepting a generator
sample with probability exp(D̃(x) − D̃*_M) (D̃*_M the largest logit) would be exact rejection
sampling. The paper makes this practical with

    F(x) = D̃(x) − D̃*_M − log(1 − exp(D̃(x) − D̃*_M − ε)) − γ,     accept with probability σ(F(x)),

where D̃*_M is the running maximum of the logit over everything judged since :meth:`start` (updated
with each chunk before that chunk is judged, so D̃ − D̃*_M ≤ 0; the first chunk is the burn-in),
ε keeps the log finite at the maximum, and γ is a per-batch shift: the ``gamma_percentile``-th
percentile of F̂ = F + γ over the chunk (95 in the paper's experiments), which moves the acceptance
rate without changing the order of the candidates. σ(F) is increasing in D̃: a candidate the
discriminator finds more real is never less likely to be kept.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from rsft.acceptance.base import ProbabilisticAcceptance, check_finite
from rsft.batch import Batch, require_methods


def drs_log_accept(
    logit: torch.Tensor, max_logit: float, epsilon: float, gamma_percentile: float
) -> tuple[torch.Tensor, float]:
    """log σ(F) for each logit and the γ used (in float64; see the module docstring)."""
    logit = logit.double()
    gap = logit - max_logit  # ≤ 0 when max_logit covers this chunk
    f_hat = gap - torch.log(-torch.expm1(gap - epsilon))
    gamma = float(torch.quantile(f_hat, gamma_percentile / 100.0))
    return torch.nn.functional.logsigmoid(f_hat - gamma), gamma


class DiscriminatorRejection(ProbabilisticAcceptance):
    """DRS on a bound model with ``discriminator_logit(x)`` (``model=gan``)."""

    def __init__(self, epsilon: float = 1e-8, gamma_percentile: float = 95.0):
        if not epsilon > 0:
            raise ValueError(f"acceptance.epsilon must be positive, got {epsilon}")
        if not 0.0 <= gamma_percentile <= 100.0:
            raise ValueError(f"acceptance.gamma_percentile must be in [0, 100], got {gamma_percentile}")
        self.epsilon = float(epsilon)
        self.gamma_percentile = float(gamma_percentile)
        self.model = None
        self.start()

    def bind(self, model: Any) -> None:
        require_methods(
            model, ("discriminator_logit",), who="acceptance=drs", fix="use model=gan (it has a discriminator)"
        )
        self.model = model

    def start(self) -> None:
        self.max_logit = -math.inf
        self.gammas: list[float] = []
        self.accept_prob_sum = 0.0
        self.judged = 0

    def log_accept_prob(self, batch: Batch) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError(
                "acceptance=drs was asked to judge before bind(model): the data module binds the run's model"
            )
        with torch.no_grad():
            logit = self.model.discriminator_logit(batch["x"])
        check_finite("discriminator logit", logit, allow_neg_inf=False)
        if logit.numel() == 0:
            return logit
        self.max_logit = max(self.max_logit, float(logit.max()))
        log_accept, gamma = drs_log_accept(logit, self.max_logit, self.epsilon, self.gamma_percentile)
        self.gammas.append(gamma)
        self.accept_prob_sum += float(log_accept.exp().sum())
        self.judged += logit.numel()
        return log_accept.to(logit.dtype)

    def stats(self) -> dict[str, float]:
        return {
            # exp(D̃) estimates p_data/p_g, so D̃*_M plays the part of log M of classic rejection sampling.
            "log_M": self.max_logit,
            "rule_max_logit": self.max_logit,
            "rule_gamma_mean": sum(self.gammas) / len(self.gammas) if self.gammas else math.nan,
            "rule_mean_accept_prob": self.accept_prob_sum / self.judged if self.judged else math.nan,
        }

    def stat_combiners(self) -> dict[str, str]:
        return {"log_M": "max", "rule_max_logit": "max", "rule_gamma_mean": "mean", "rule_mean_accept_prob": "mean"}
