"""Acceptance rules: which candidates of a batch stay.

Every rule implements ``accept(batch, generator) -> BoolTensor`` (one flag per row) and may report
rule-specific figures through ``stats()``. Stochastic rules subclass :class:`ProbabilisticAcceptance`
and only give a log acceptance probability in (−inf, 0]; the draw U ~ Uniform(0, 1] and the
comparison ``log U < log_accept`` happen in one place.

The engine calls ``start()`` before each sampling call (so per-call state such as an estimated
envelope is fresh) and ``bind(model)`` when the rule needs the model being trained.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from rsft.distributions import move_distribution
from rsft.proposals import Batch

#: Relative safety margin on an estimated envelope (the sbi library's choice: M × 1.2).
AUTO_ENVELOPE_MARGIN = 1.2


class NonFiniteDensityError(ValueError):
    """A log-density or log acceptance probability was NaN (or +inf)."""


def check_finite(name: str, values: torch.Tensor, allow_neg_inf: bool = True) -> None:
    """Raise :class:`NonFiniteDensityError` naming ``name`` if ``values`` holds NaN or +inf.

    ``-inf`` is a legitimate log-density (zero density) unless ``allow_neg_inf`` is False.
    """
    if not _sum_may_hide_bad_values(float(values.sum()), allow_neg_inf):
        return
    bad = torch.isnan(values) | (values == math.inf)
    if not allow_neg_inf:
        bad |= values == -math.inf
    if bool(bad.any()):
        count = int(bad.sum())
        first = int(bad.nonzero()[0, 0])
        raise NonFiniteDensityError(
            f"{name} is not finite for {count} of {values.numel()} candidates "
            f"(first at row {first}: {values.flatten()[first].item()}); fix the {name.split(' ')[0]} "
            "so it returns finite log-densities (−inf is allowed for zero density)"
        )


def _sum_may_hide_bad_values(total: float, allow_neg_inf: bool) -> bool:
    """Whether the sum of some values leaves NaN / +inf (or any infinity) among them possible.

    The sum is NaN or +inf whenever a NaN or +inf is present (and non-finite whenever any infinity
    is), so a sum that says "fine" settles it with one reduction; anything else, including a
    harmless overflow of large finite values, calls for the exact element-wise check.
    """
    return math.isnan(total) or total == math.inf or (not allow_neg_inf and total == -math.inf)


class Acceptance:
    """Base class for acceptance rules."""

    def start(self) -> None:
        """Reset per-call state; called by the engine at the start of every sampling call."""

    def bind(self, model: Any) -> None:
        """Give the rule the current model (rules that rank by the model's scores use it)."""

    def to(self, device: torch.device | str) -> Acceptance:
        return self

    def accept(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def stats(self) -> dict[str, float]:
        """Rule-specific figures for the last sampling call (flat name → number)."""
        return {}


class ProbabilisticAcceptance(Acceptance):
    """A rule that accepts each candidate independently with probability exp(log_accept_prob)."""

    #: True when ``log_accept_prob`` itself rules out NaN / +inf (from figures it reads anyway), so the
    #: generic check below — one more reduction and host read per chunk — would be redundant.
    checks_its_own_values = False

    def log_accept_prob(self, batch: Batch) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def accept(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        log_a = self.log_accept_prob(batch)
        if not self.checks_its_own_values:
            check_finite(f"log acceptance probability of {type(self).__name__}", log_a)
        # U ~ Uniform(0, 1] in float64 keeps resolution for tiny acceptance probabilities (down to
        # 2^-53; a float32 uniform stops at 2^-24), and "accept iff U ≤ a" always accepts a = 1 and
        # never accepts a = 0. On CPU this is ~3x cheaper than drawing log U as −Exponential(1).
        u = torch.rand(log_a.shape, dtype=torch.float64, generator=generator, device=log_a.device)
        return u.neg_().add_(1.0) <= log_a.exp()


class AcceptAll(Acceptance):
    """Keep every candidate (the baseline: plain sampling from the proposal)."""

    def accept(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        n = next(iter(batch.values())).shape[0]
        device = next(iter(batch.values())).device
        return torch.ones(n, dtype=torch.bool, device=device)


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
            from rsft.targets import make_target

            target = make_target(target)
        if not hasattr(target, "log_prob"):
            raise TypeError(
                f"acceptance.target must have a log_prob method, got {type(target).__name__}"
            )
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
            if _sum_may_hide_bad_values(p_total, allow_neg_inf=True):
                check_finite("target log_prob", log_p)
            if _sum_may_hide_bad_values(q_total, allow_neg_inf=False):
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
                f"the region predicate must return one bool per candidate (shape ({x.shape[0]},)), "
                f"got {got}"
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
        value = torch.special.gammainc(torch.tensor(dim / 2, dtype=torch.float64), torch.tensor(self.radius**2 / 2, dtype=torch.float64))
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


class AllOf(Acceptance):
    """Accept a candidate only if every rule accepts it; rules are applied in order, each to the
    survivors of the previous one (so selection rules such as best-of-n see only survivors)."""

    def __init__(self, rules: Sequence[Acceptance]):
        rules = list(rules.values()) if isinstance(rules, dict) else list(rules)
        if not rules:
            raise ValueError("acceptance=all_of needs at least one rule in acceptance.rules")
        self.rules = rules

    def start(self) -> None:
        for rule in self.rules:
            rule.start()

    def bind(self, model: Any) -> None:
        for rule in self.rules:
            rule.bind(model)

    def to(self, device: torch.device | str) -> AllOf:
        return AllOf([rule.to(device) for rule in self.rules])

    def accept(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        n = next(iter(batch.values())).shape[0]
        keep_idx = torch.arange(n, device=next(iter(batch.values())).device)
        for rule in self.rules:
            sub = {k: v[keep_idx] for k, v in batch.items()}
            keep_idx = keep_idx[rule.accept(sub, generator)]
        mask = torch.zeros(n, dtype=torch.bool, device=keep_idx.device)
        mask[keep_idx] = True
        return mask

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, rule in enumerate(self.rules):
            for key, value in rule.stats().items():
                out[f"rule{i}_{key}"] = value
        return out
