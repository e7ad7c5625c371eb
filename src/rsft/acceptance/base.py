"""The acceptance-rule interface: which candidates of a batch stay.

Every rule implements ``accept(batch, generator) -> BoolTensor`` (one flag per row) and may report
rule-specific figures through ``stats()``. Stochastic rules subclass :class:`ProbabilisticAcceptance`
and only give a log acceptance probability in (−inf, 0]; the draw U ~ Uniform(0, 1] and the
comparison ``log U < log_accept`` happen in one place.

The engine calls ``start()`` before each sampling call (so per-call state such as an estimated
envelope is fresh), ``finish()`` after its last chunk, and ``bind(model)`` when the rule needs the
model being trained. A rule whose earlier verdicts can be invalidated during a call (an estimated
envelope that a later chunk proves too small) says so through ``discard_held()``: the engine then drops
every row accepted so far in the call and draws on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from rsft.batch import Batch


class NonFiniteDensityError(ValueError):
    """A log-density or log acceptance probability was NaN (or +inf)."""


def check_finite(name: str, values: torch.Tensor, allow_neg_inf: bool = True) -> None:
    """Raise :class:`NonFiniteDensityError` naming ``name`` if ``values`` holds NaN or +inf.

    ``-inf`` is a legitimate log-density (zero density) unless ``allow_neg_inf`` is False.
    """
    if not sum_may_hide_bad_values(float(values.sum()), allow_neg_inf):
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


def sum_may_hide_bad_values(total: float, allow_neg_inf: bool) -> bool:
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

    def stat_combiners(self) -> dict[str, str]:
        """How each figure of :meth:`stats` combines over the processes of a multi-process run: ``"sum"``
        (counts), ``"max"`` (envelopes, running maxima, times), ``"min"`` or ``"mean"`` (rates, settings). A
        multi-process run refuses a figure that is not declared here, so a new count is never averaged."""
        return {}

    def budget_hint(self) -> str:
        """A sentence the engine adds to its budget error: what this rule saw that explains a low rate, and the
        setting to change ("" when the rule has nothing to add)."""
        return ""

    def state_dict(self) -> dict[str, Any]:
        """What the rule carries from one round to the next, for a resumed run to continue exactly
        (saved in the checkpoint by the data module; most rules carry nothing)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (called on resume before the first round)."""

    def finish(self) -> None:
        """Called by the engine after the last chunk of a call: warn (or raise) about the call as a whole."""

    def discard_held(self) -> bool:
        """Whether the chunk just judged invalidated every verdict of this call so far (False by default).

        ``DensityRatio`` with ``log_M="auto"`` answers True after a chunk whose largest ratio exceeded the
        envelope in force: the rows accepted earlier were drawn under an envelope now known to be too small
        (draws of the target cut off where p > M q), so the engine drops them all (counted as ``thinned``)
        and draws on; the rows returned are then all drawn under the call's final envelope. Asked once per
        chunk, after :meth:`accept`; it must not touch the device.
        """
        return False


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

    def finish(self) -> None:
        for rule in self.rules:
            rule.finish()

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

    def discard_held(self) -> bool:
        # Every rule is asked (no short cut): each answers for the chunk it just judged.
        return any([rule.discard_held() for rule in self.rules])

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, rule in enumerate(self.rules):
            for key, value in rule.stats().items():
                out[f"rule{i}_{key}"] = value
        return out

    def budget_hint(self) -> str:
        return " ".join(hint for hint in (rule.budget_hint() for rule in self.rules) if hint)

    def stat_combiners(self) -> dict[str, str]:
        combiners = {}
        for i, rule in enumerate(self.rules):
            combiners.update({f"rule{i}_{key}": how for key, how in rule.stat_combiners().items()})
        return combiners
