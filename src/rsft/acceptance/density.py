"""``acceptance=density_ratio | region``: classic rejection sampling against a target density, and its
indicator special case (accept iff the candidate lies in a region)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from numbers import Real
from typing import Any

import torch

from rsft.acceptance.base import Acceptance, ProbabilisticAcceptance, check_finite, sum_may_hide_bad_values
from rsft.batch import Batch
from rsft.distributions import move_distribution
from rsft.targets import make_target

#: Relative safety margin on an estimated envelope (the sbi library's choice: M × 1.2).
AUTO_ENVELOPE_MARGIN = 1.2
ON_VIOLATION = ("warn", "error")


class EnvelopeViolationError(ValueError):
    """A fixed ``log_M`` was exceeded (``acceptance.on_violation=error``)."""


class DensityRatio(ProbabilisticAcceptance):
    """Classic rejection sampling: accept x ~ q with probability p(x) / (M q(x)).

    ``target`` is any object with ``log_prob`` (unnormalised is fine) or the name of a built-in density
    target. ``log_M`` is a float, or ``"auto"``: estimated from the first chunk of each sampling call
    whose target density is not zero everywhere, as its largest log-ratio plus log(``margin``), then
    raised whenever a larger ratio appears. Every candidate whose log-ratio exceeds the log M in force
    before it was judged is an *envelope violation*, counted in :meth:`stats`.

    In auto mode a raise from M_old to M_new is corrected, not only counted: the engine keeps each
    accepted row's log-ratio for the call, and :meth:`rethin` keeps each row accepted earlier with
    probability min(1, r/M_new) / min(1, r/M_old), so every row held is an exact draw under the final M
    (REFERENCES.md §5); the engine draws on to replace the rows dropped (``thinned`` in the stats).
    A *fixed* log M that is exceeded cannot be corrected: the rows with p > M q were accepted too rarely
    and the samples are biased, so the call warns once with the count (``on_violation="warn"``) or stops
    at the first violation (``on_violation="error"``).
    """

    checks_its_own_values = True  # log p, log q and the largest ratio come from one host read per chunk

    def __init__(
        self,
        target: Any,
        log_M: float | str = "auto",
        margin: float = AUTO_ENVELOPE_MARGIN,
        on_violation: str = "warn",
    ):
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
        what = f"the factor on an estimated envelope; default {AUTO_ENVELOPE_MARGIN}"
        if isinstance(margin, bool) or not isinstance(margin, Real) or not math.isfinite(margin):
            raise ValueError(f"acceptance.margin must be a finite number ≥ 1 ({what}), got {margin!r}")
        if margin < 1.0:
            raise ValueError(f"acceptance.margin must be ≥ 1, got {margin!r} ({what})")
        if on_violation not in ON_VIOLATION:
            raise ValueError(f"acceptance.on_violation must be 'warn' or 'error', got {on_violation!r}")
        self.target = target
        self.margin = float(margin)
        self.on_violation = on_violation
        self.start()

    def to(self, device: torch.device | str) -> DensityRatio:
        log_M = "auto" if self.fixed_log_M is None else self.fixed_log_M
        return type(self)(self._moved_target(device), log_M, self.margin, self.on_violation)

    def _moved_target(self, device: torch.device | str) -> Any:
        try:
            if isinstance(self.target, torch.distributions.Distribution):
                return move_distribution(self.target, device)
            if hasattr(self.target, "to"):
                return self.target.to(device)
            return self.target
        except NotImplementedError as error:
            if "meta" not in str(error):
                raise
            raise _meta_target_error() from None

    def start(self) -> None:
        self.log_M = self.fixed_log_M
        self.violations = 0
        self.judged = 0
        self.max_log_ratio = -math.inf
        self.envelope_raises = 0
        self.raised: tuple[float, float] | None = None  # (log M_old, log M_new) when the last chunk raised M
        self.log_ratio: torch.Tensor | None = None  # of the last chunk judged, for the engine to keep

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
        log_p = self._log_target(x)
        if log_p.is_meta:
            raise _meta_target_error()
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
        self.judged += log_ratio.numel()
        self.log_ratio = log_ratio if self.fixed_log_M is None else None
        self.raised = None
        if self.log_M is None:
            # The pilot: the first chunk of an auto call with a finite ratio. A chunk of zero target density
            # everywhere (a small support) says nothing about M: reject it all and wait for the next.
            if chunk_max == -math.inf:
                return log_ratio
            self.log_M = self._pilot_log_M(chunk_max)
        elif chunk_max > self.log_M:
            self.violations += int((log_ratio > self.log_M).sum())
            if self.fixed_log_M is None:
                new_log_M = chunk_max + math.log(self.margin)
                self.raised = (self.log_M, new_log_M)
                self.log_M = new_log_M
                self.envelope_raises += 1
            elif self.on_violation == "error":
                raise EnvelopeViolationError(self._violation_message())
        log_a = (log_ratio - self.log_M).clamp(max=0.0)
        # log p and log q are checked above, so log a can only be NaN through the figures already read:
        # a NaN / +inf largest ratio (overflow).
        if not (math.isfinite(chunk_max) or chunk_max == -math.inf):
            check_finite(f"log acceptance probability of {type(self).__name__}", log_a)
        return log_a

    def _log_target(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x), up to a constant: what the ratio is taken against (a subclass may temper it)."""
        return self.target.log_prob(x)

    def _pilot_log_M(self, chunk_max: float) -> float:
        """The auto envelope from the pilot chunk's largest log-ratio (a subclass may carry one over)."""
        return chunk_max + math.log(self.margin)

    def row_figures(self) -> torch.Tensor | None:
        return self.log_ratio  # None with a fixed envelope: it is never raised, so no verdict is revised

    def rethin(self, figures: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """After a raise M_old → M_new, keep each earlier row with probability min(1, r/M_new) / min(1, r/M_old)."""
        if self.raised is None:
            return None
        old, new = self.raised
        self.raised = None
        log_keep = (figures - new).clamp(max=0.0) - (figures - old).clamp(max=0.0)
        u = torch.rand(figures.shape, dtype=torch.float64, generator=generator, device=figures.device)
        return u.neg_().add_(1.0) <= log_keep.exp()

    def finish(self) -> None:
        self.log_ratio = None  # the last chunk's: not held past the call
        if self.fixed_log_M is not None and self.violations:
            warnings.warn(self._violation_message(), stacklevel=3)

    def _violation_message(self) -> str:
        return (
            f"the envelope acceptance.log_M={self.fixed_log_M:.6g} is too small: {self.violations:,} of "
            f"{self.judged:,} candidates judged had log p(x) − log q(x) above it (largest {self.max_log_ratio:.6g}), "
            "so the samples under-represent where p > M q. Set acceptance.log_M ≥ the largest log-ratio "
            f"(e.g. {self.max_log_ratio + math.log(self.margin):.6g}) or acceptance.log_M=auto (raises are "
            "corrected by thinning); acceptance.on_violation=error stops at the first violation instead of warning"
        )

    def stats(self) -> dict[str, float]:
        return {
            "log_M": float("nan") if self.log_M is None else self.log_M,
            "envelope_violations": self.violations,
            "envelope_raises": self.envelope_raises,
            "max_log_ratio": self.max_log_ratio,
        }


class TemperedDensityRatio(DensityRatio):
    """Rejection sampling of p^β with β rising to 1 as the proposal allows: the self-improving sampler's
    start where even its defensive proposal accepts almost nothing of p (REFERENCES §7).

    One object lives across the sampling rounds of a run (``to`` moves it in place), so it remembers:

    - β: at the first chunk of every round (call), the largest β in [β of the last round, 1] whose
      acceptance rate under this round's proposal, estimated on that chunk, is at least ``min_rate``
      (β never falls). The round then samples p^β exactly (an auto envelope, thinned when raised).
      Only rounds at β = 1 draw the target itself: the stats carry ``beta`` and ``exact_round``
      (1.0 or 0.0) so that a reader counts only those. Earlier rounds train the model towards p^β.
    - M: the round's envelope starts at the larger of the pilot chunk's estimate and the last round's
      final log M (the largest ratio over all its chunks, × margin) less ``max_drop`` nats, when β is
      unchanged: one chunk's max no longer decides a round alone, and the rate moves smoothly while
      the proposal improves. Within a round M only rises, with the exact thinning of DensityRatio,
      so every sample of a β = 1 round is an exact draw of p under the round's final M.

    Two options make the climb faster where the exact tempered rounds stall (REFERENCES §7):

    - ``tempered_quantile`` (e.g. 0.99): a β < 1 round uses a *clipped* envelope, the pilot chunk's
      ``tempered_quantile``-quantile of the tempered ratio, fixed for the round: the ~1 % of candidates above
      it are accepted with probability 1 (counted as ``clipped``, not raised and thinned). Those rounds are
      approximate draws of π_β, which is all they are for: training the model towards p. β is chosen with
      the same clipped envelope. β = 1 rounds keep the exact auto envelope.
    - ``exact_min_rate`` (e.g. 0.002): β jumps to 1 as soon as the previous round's candidates (all of
      them, not one chunk) show an exact acceptance rate of p, mean(p/q) / (max(p/q) × margin), of at
      least this much; without it β rises only as far as ``min_rate`` allows.
    - ``hold_below_one`` (with ``exact_min_rate``): the ``min_rate`` climb stops short of β = 1, so β reaches 1
      only through the exact-rate jump. In high dimensions the clipped rate at β = 1 clears ``min_rate`` long
      before the model fits p; held below 1, the model keeps training on cheap tempered rounds near p until
      the exact rate shows it is ready, instead of paying 1 / (a tiny rate) proposals per exact row.
    """

    def __init__(
        self,
        target: Any,
        reference: Any,
        min_beta: float = 0.0,
        min_rate: float = 0.02,
        max_drop: float = 1.0,
        margin: float = AUTO_ENVELOPE_MARGIN,
        beta_grid: int = 64,
        tempered_quantile: float | None = None,
        exact_min_rate: float | None = None,
        hold_below_one: bool = False,
    ):
        if not hasattr(reference, "log_prob"):
            raise TypeError(
                f"acceptance.reference must have a log_prob method (e.g. ${{proposal.defensive}}), got "
                f"{type(reference).__name__}"
            )
        if not 0.0 <= min_beta <= 1.0:
            raise ValueError(f"acceptance.min_beta must be in [0, 1], got {min_beta!r}")
        if not 0.0 < min_rate < 1.0:
            raise ValueError(f"acceptance.min_rate must be in (0, 1) (the rate a new β must keep), got {min_rate!r}")
        if not (math.isfinite(max_drop) and max_drop >= 0.0):
            raise ValueError(
                f"acceptance.max_drop must be ≥ 0 nats (how far log M may fall per round), got {max_drop!r}"
            )
        if beta_grid < 2:
            raise ValueError(f"acceptance.beta_grid must be at least 2, got {beta_grid!r}")
        if tempered_quantile is not None and not 0.5 <= tempered_quantile < 1.0:
            raise ValueError(
                "acceptance.tempered_quantile must be in [0.5, 1) (the share of a tempered round's ratios under "
                f"its clipped envelope, e.g. 0.99) or null (exact tempered rounds), got {tempered_quantile!r}"
            )
        if exact_min_rate is not None and not 0.0 < exact_min_rate < 1.0:
            raise ValueError(
                "acceptance.exact_min_rate must be in (0, 1) (the estimated exact rate at which β jumps to 1) or "
                f"null, got {exact_min_rate!r}"
            )
        if hold_below_one and exact_min_rate is None:
            raise ValueError(
                "acceptance.hold_below_one=true needs acceptance.exact_min_rate (the only way β then reaches 1): "
                "set exact_min_rate (e.g. 0.005) or hold_below_one=false"
            )
        self.tempered_quantile = tempered_quantile
        self.exact_min_rate = exact_min_rate
        self.hold_below_one = bool(hold_below_one)
        self.clipped = False  # this round's envelope is a fixed clipped one (tempered_quantile, β < 1)
        # logsumexp and max of log p − log q over this round's candidates, kept on the device (read once,
        # when the round ends), and their count: the exact rate's estimate (exact_rate_estimate)
        self._ratio_lse: torch.Tensor | None = None
        self._ratio_top: torch.Tensor | None = None
        self._ratio_count = 0
        self.last_exact_ratio: tuple[float, float, int] | None = None  # the last round's (lse, max, count)
        self.reference = reference
        self.beta = float(min_beta)
        self.min_rate, self.max_drop, self.beta_grid = float(min_rate), float(max_drop), int(beta_grid)
        self.carried: tuple[float, float] | None = None  # (β, final log M) of the last round
        self.pilot_log_M: float | None = None  # this round's envelope after its pilot chunk
        self.steady = True  # the last round's envelope held (rose by ≤ max_drop nats after its pilot)
        self.choose_beta = True
        self.log_M: float | None = None  # no round has ended yet (start() carries only a finished round's M)
        super().__init__(target, log_M="auto", margin=margin)

    def to(self, device: torch.device | str) -> TemperedDensityRatio:
        # In place: β and M carry over to the next round.
        self.target = self._moved_target(device)
        if isinstance(self.reference, torch.distributions.Distribution):
            self.reference = move_distribution(self.reference, device)
        return self

    def start(self) -> None:
        if self._ratio_count:  # one host read per round
            lse, top = torch.stack([self._ratio_lse, self._ratio_top]).tolist()
            self.last_exact_ratio = (lse, top, self._ratio_count)
        self._ratio_lse = self._ratio_top = None
        self._ratio_count = 0
        if self.clipped:  # a clipped envelope is not an estimate of M: nothing to carry
            self.clipped, self.fixed_log_M, self.log_M, self.carried = False, None, None, None
        if self.log_M is not None:  # a round ended: carry its β and envelope
            self.carried = (self.beta, self.log_M)
            # A round whose pilot underestimated M by more than max_drop saw a heavier ratio tail than its
            # pilot showed: β waits a round (otherwise each round's optimistic pilot raises β again and
            # the rate collapses under raise after raise).
            self.steady = self.pilot_log_M is None or self.log_M - self.pilot_log_M <= self.max_drop
        super().start()
        self.pilot_log_M = None
        self.choose_beta = True

    def log_accept_prob(self, batch: Batch) -> torch.Tensor:
        if self.choose_beta and not self.steady:
            self.choose_beta = False
        if self.choose_beta and "log_q" in batch:
            x = batch["x"]
            self._raise_beta(self.target.log_prob(x), self.reference.log_prob(x), batch["log_q"])
            if self.tempered_quantile is not None and self.beta < 1.0 and not self.choose_beta:
                self._clip_envelope(self._log_target(x).double() - batch["log_q"].double())
        log_a = super().log_accept_prob(batch)
        if self.exact_min_rate is not None and "log_q" in batch:
            self._count_exact_ratio(self._last_log_p.double() - batch["log_q"].double())
        return log_a

    def _clip_envelope(self, log_ratio: torch.Tensor) -> None:
        """A β < 1 round's fixed envelope: the pilot chunk's ``tempered_quantile``-quantile of the ratio."""
        log_ratio = log_ratio[torch.isfinite(log_ratio)]
        if log_ratio.numel():
            self.fixed_log_M = self.log_M = float(_quantile(log_ratio[None], self.tempered_quantile)[0])
            self.clipped = True

    @torch.no_grad()
    def _count_exact_ratio(self, log_ratio: torch.Tensor) -> None:
        # Non-finite ratios (zero target density) add nothing to the sum; masked, not filtered, so that
        # nothing here waits for the device.
        log_ratio = log_ratio.masked_fill(~torch.isfinite(log_ratio), -math.inf)
        chunk_lse, chunk_top = torch.logsumexp(log_ratio, 0), log_ratio.max()
        if self._ratio_lse is None:
            self._ratio_lse, self._ratio_top = chunk_lse, chunk_top
        else:
            self._ratio_lse = torch.logaddexp(self._ratio_lse, chunk_lse)
            self._ratio_top = torch.maximum(self._ratio_top, chunk_top)
        self._ratio_count += log_ratio.numel()

    def exact_rate_estimate(self) -> float | None:
        """The last round's exact rate of p, mean(p/q) / (max(p/q) × margin) over all its candidates.

        For a normalised target (``target.normalised``) the max is taken as at least 1: sup p/q ≥ 1 for two
        normalised densities, and a proposal that has not found p's mass (every p/q drawn ≪ 1) would otherwise
        look ready (mean and max both tiny, their ratio not).
        """
        if self.last_exact_ratio is None or self.last_exact_ratio[1] == -math.inf:
            return None
        lse, top, n = self.last_exact_ratio
        if getattr(self.target, "normalised", False):
            top = max(top, 0.0)
        return math.exp(lse - top) / (n * self.margin)

    @torch.no_grad()
    def _raise_beta(self, log_p: torch.Tensor, log_r: torch.Tensor, log_q: torch.Tensor) -> None:
        """β for this round, from the pilot chunk: the largest β' ≥ β whose estimated rate ≥ min_rate."""
        log_p, log_r, log_q = log_p.double(), log_r.double(), log_q.double()
        finite = torch.isfinite(log_p) & torch.isfinite(log_r) & torch.isfinite(log_q)
        if not bool(finite.any()):
            return  # nothing to judge on (zero density everywhere): try again at the next chunk
        self.choose_beta = False
        exact_rate = self.exact_rate_estimate() if self.exact_min_rate is not None else None
        if exact_rate is not None and exact_rate >= self.exact_min_rate:
            self.beta = 1.0
            return
        log_p, log_r, log_q = log_p[finite], log_r[finite], log_q[finite]
        n = log_p.numel() + int((~finite).sum())  # the rows of zero density count as rejected
        betas = torch.logspace(math.log10(max(self.beta, 1e-4)), 0.0, self.beta_grid, dtype=torch.float64)
        if self.beta == 0.0:
            betas = torch.cat([torch.zeros(1, dtype=torch.float64), betas])
        if self.hold_below_one:
            betas = betas[betas < 1.0 - 1e-9]
        ratio = betas[:, None] * (log_p - log_r)[None, :] + (log_r - log_q)[None, :]
        if self.tempered_quantile is None:
            # Under an envelope at the chunk's max ratio × margin, the chunk's mean acceptance probability.
            rate = torch.logsumexp(ratio - ratio.max(dim=1, keepdim=True).values, dim=1).exp() / (n * self.margin)
        else:  # under the clipped envelope the round would use (β = 1 is still judged by it: an estimate)
            top = _quantile(ratio, self.tempered_quantile)
            rate = (ratio - top[:, None]).clamp(max=0.0).exp().sum(dim=1) / n
        ok = (rate >= self.min_rate).nonzero()
        if ok.numel():
            self.beta = max(self.beta, float(betas[int(ok[-1])]))
        if self.beta > 1.0 - 1e-9:
            self.beta = 1.0

    def _log_target(self, x: torch.Tensor) -> torch.Tensor:
        log_p = self._last_log_p = self.target.log_prob(x)
        if self.beta == 1.0:
            return log_p
        log_r = self.reference.log_prob(x)
        return log_r if self.beta == 0.0 else self.beta * log_p + (1.0 - self.beta) * log_r

    def _pilot_log_M(self, chunk_max: float) -> float:
        estimate = super()._pilot_log_M(chunk_max)
        if self.carried is not None and self.carried[0] == self.beta:
            estimate = max(estimate, self.carried[1] - self.max_drop)
        self.pilot_log_M = estimate
        return estimate

    def finish(self) -> None:
        if self.clipped:  # the clipped rows are the design of the round, not a too-small envelope
            self.log_ratio = None
            return
        super().finish()

    #: What a round leaves for the next (start() turns it into the next round's β and carried envelope).
    _CARRIED = ("beta", "log_M", "fixed_log_M", "clipped", "pilot_log_M", "carried", "steady", "last_exact_ratio")

    def state_dict(self) -> dict[str, Any]:
        state = {name: getattr(self, name) for name in self._CARRIED}
        running = None
        if self._ratio_count:
            running = (*torch.stack([self._ratio_lse, self._ratio_top]).tolist(), self._ratio_count)
        return {**state, "running_exact_ratio": running}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        missing = [name for name in (*self._CARRIED, "running_exact_ratio") if name not in state]
        if missing:
            raise ValueError(
                f"the checkpoint's tempered acceptance state lacks {missing}: it was written by another acceptance "
                "rule or version; resume with the acceptance settings the run started with"
            )
        for name in self._CARRIED:
            setattr(self, name, state[name])
        running = state["running_exact_ratio"]
        self._ratio_lse = self._ratio_top = None
        self._ratio_count = 0
        if running is not None:
            lse, top, self._ratio_count = running
            self._ratio_lse = torch.tensor(lse, dtype=torch.float64)
            self._ratio_top = torch.tensor(top, dtype=torch.float64)

    def stats(self) -> dict[str, float]:
        stats = {**super().stats(), "beta": self.beta, "exact_round": float(self.beta == 1.0)}
        if self.tempered_quantile is not None:
            stats["clipped"] = self.violations if self.clipped else 0
            if self.clipped:
                stats["envelope_violations"] = 0
        if self.exact_min_rate is not None:
            estimate = self.exact_rate_estimate()
            stats["exact_rate_estimate"] = math.nan if estimate is None else estimate
        return stats


def _quantile(rows: torch.Tensor, q: float) -> torch.Tensor:
    """The q-quantile of each row (the lower order statistic: torch.quantile refuses inputs over 2^24 values)."""
    k = min(rows.shape[1] - 1, math.ceil(q * (rows.shape[1] - 1)))
    return rows.sort(dim=1).values[:, k]


def _meta_target_error() -> ValueError:
    return ValueError(
        "acceptance.target lives on the meta device (shapes only, no data), so its log_prob has no values: "
        "build the target's parameters on a real device (cpu or cuda), e.g. load its weights before sampling"
    )


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
