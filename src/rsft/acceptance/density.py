"""``acceptance=density_ratio | region``: classic rejection sampling against a target density, and its
indicator special case (accept iff the candidate lies in a region)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from rsft.acceptance.base import Acceptance, ProbabilisticAcceptance, check_finite, sum_may_hide_bad_values
from rsft.batch import Batch
from rsft.distributions import move_distribution
from rsft.targets import make_target

#: Relative safety margin on an estimated envelope (the sbi library's choice: M × 1.2).
AUTO_ENVELOPE_MARGIN = 1.2


class DensityRatio(ProbabilisticAcceptance):
    """Classic rejection sampling: accept x ~ q with probability p(x) / (M q(x)).

    ``target`` is any object with ``log_prob`` (unnormalised is fine) or the name of a built-in density
    target. ``log_M`` is a float, or ``"auto"``: estimated from the first chunk of each sampling call
    as its largest log-ratio plus log(1.2), then raised whenever a larger ratio appears. Every
    candidate whose log-ratio exceeds the log M in force when it was judged is an *envelope
    violation*: counted and reported in :meth:`stats`, never hidden.
    """

    checks_its_own_values = True  # log p, log q and the largest ratio come from one host read per chunk

    def __init__(self, target: Any, log_M: float | str = "auto", margin: float = AUTO_ENVELOPE_MARGIN):
        if isinstance(target, str):
            target = make_target(target)
        if not hasattr(target, "log_prob"):
            raise TypeError(f"acceptance.target must have a log_prob method, got {type(target).__name__}")
        if isinstance(log_M, str):
            if log_M != "auto":
                raise ValueError(f"acceptance.log_M must be a number or 'auto', got {log_M!r}")
            self.fixed_log_M = None
        else:
            log_M = float(log_M)
            if not math.isfinite(log_M):
                raise ValueError(
                    f"acceptance.log_M must be finite, got {log_M}; give a finite bound on "
                    "log p(x) − log q(x) or log_M=auto to estimate it"
                )
            self.fixed_log_M = log_M
        if not margin >= 1.0:
            raise ValueError(f"acceptance.margin must be ≥ 1, got {margin}")
        self.target = target
        self.margin = float(margin)
        self.start()

    def to(self, device: torch.device | str) -> DensityRatio:
        if isinstance(self.target, torch.distributions.Distribution):
            target = move_distribution(self.target, device)
        elif hasattr(self.target, "to"):
            target = self.target.to(device)
        else:
            target = self.target
        moved = DensityRatio(target, "auto" if self.fixed_log_M is None else self.fixed_log_M, self.margin)
        return moved

    def start(self) -> None:
        self.log_M = self.fixed_log_M
        self.violations = 0
        self.max_log_ratio = -math.inf
        self.envelope_raises = 0

    def log_accept_prob(self, batch: Batch) -> torch.Tensor:
        if "log_q" not in batch:
            raise KeyError(
                "acceptance=density_ratio needs the proposal's log-density, but the proposal's batch has "
                f"no 'log_q' (it has {sorted(batch)}); use a proposal with a density (e.g. "
                "proposal=gaussian or proposal=model) or a rule that needs none (acceptance=region)"
            )
        x, log_q = batch["x"], batch["log_q"]
        event_shape = getattr(self.target, "event_shape", None)
        if event_shape is not None and tuple(x.shape[1:]) != tuple(event_shape):
            raise ValueError(
                f"the target has event shape {tuple(event_shape)} but the proposal's candidates x have shape "
                f"{tuple(x.shape[1:])} each: the target and the proposal disagree on the event shape (check "
                "task.dim against the proposal's dim)"
            )
        log_p = self.target.log_prob(x)
        if log_p.shape != log_q.shape:
            raise ValueError(
                f"target log_prob has shape {tuple(log_p.shape)} but proposal log_q has shape "
                f"{tuple(log_q.shape)} for candidates x of shape {tuple(x.shape)}: the target and the "
                "proposal disagree on the event shape (check task.dim against the proposal's dim)"
            )
        log_ratio = log_p - log_q
        chunk_max = -math.inf
        if log_ratio.numel():
            # One host read for both finiteness checks and the chunk's largest ratio: on a GPU each
            # would otherwise be its own device round trip.
            figures = torch.stack([log_p.sum().double(), log_q.sum().double(), log_ratio.max().double()])
            p_total, q_total, chunk_max = figures.tolist()
            if sum_may_hide_bad_values(p_total, allow_neg_inf=True):
                check_finite("target log_prob", log_p)
            if sum_may_hide_bad_values(q_total, allow_neg_inf=False):
                check_finite("proposal log_q", log_q, allow_neg_inf=False)
        self.max_log_ratio = max(self.max_log_ratio, chunk_max)
        if self.log_M is None:  # first chunk of an auto call is the pilot
            self.log_M = chunk_max + math.log(self.margin)
        elif chunk_max > self.log_M:
            self.violations += int((log_ratio > self.log_M).sum())
            if self.fixed_log_M is None:
                self.log_M = chunk_max + math.log(self.margin)
                self.envelope_raises += 1
        log_a = (log_ratio - self.log_M).clamp(max=0.0)
        # log p and log q are checked above, so log a can only be NaN through the figures already read:
        # a NaN / +inf largest ratio (overflow) or a non-finite log M (a pilot chunk of zero density).
        if not (math.isfinite(self.log_M) and (math.isfinite(chunk_max) or chunk_max == -math.inf)):
            check_finite(f"log acceptance probability of {type(self).__name__}", log_a)
        return log_a

    def stats(self) -> dict[str, float]:
        return {
            "log_M": float("nan") if self.log_M is None else self.log_M,
            "envelope_violations": self.violations,
            "envelope_raises": self.envelope_raises,
            "max_log_ratio": self.max_log_ratio,
        }


class Region(Acceptance):
    """Accept iff ``predicate(x)`` — sampling the proposal truncated to a region (M = 1)."""

    def __init__(self, predicate: Callable[[torch.Tensor], torch.Tensor]):
        if not callable(predicate):
            raise TypeError(f"Region needs a callable predicate, got {type(predicate).__name__}")
        self.predicate = predicate

    def accept(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        x = batch["x"]
        mask = self.predicate(x)
        if not (torch.is_tensor(mask) and mask.dtype == torch.bool and mask.shape == x.shape[:1]):
            got = f"{mask.dtype} tensor of shape {tuple(mask.shape)}" if torch.is_tensor(mask) else type(mask).__name__
            raise ValueError(
                f"the region predicate must return one bool per candidate (shape ({x.shape[0]},)), got {got}"
            )
        return mask

    def stats(self) -> dict[str, float]:
        # An indicator is the special case p ∝ q·1_R with M = 1: the envelope always holds.
        return {"log_M": 0.0, "envelope_violations": 0}


class Ball:
    """Predicate: ‖x − center‖₂ < radius (the seed document's region)."""

    def __init__(self, radius: float, center: float = 0.0):
        if not radius > 0:
            raise ValueError(f"acceptance.predicate.radius must be positive, got {radius}")
        self.radius = float(radius)
        self.center = float(center)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.center).flatten(1).norm(dim=1) < self.radius

    def log_probability_under_standard_normal(self, dim: int) -> float:
        """log P(‖x‖ < r) for x ~ N(0, I_dim) (center 0), from the χ²_dim CDF."""
        if self.center != 0.0:
            raise ValueError("only defined for a ball centred at the origin")
        # P(χ²_d < r²) = regularised lower incomplete gamma P(d/2, r²/2)
        value = torch.special.gammainc(
            torch.tensor(dim / 2, dtype=torch.float64), torch.tensor(self.radius**2 / 2, dtype=torch.float64)
        )
        return float(torch.log(value))


class Interval:
    """Predicate: low < x < high for every coordinate (a truncation box)."""

    def __init__(self, low: float = -math.inf, high: float = math.inf):
        if not high > low:
            raise ValueError(f"interval needs high > low, got low={low}, high={high}")
        self.low, self.high = float(low), float(high)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        return ((flat > self.low) & (flat < self.high)).all(dim=1)
