"""``acceptance=density_ratio | region``: classic rejection sampling against a target density, and its
indicator special case (accept iff the candidate lies in a region).

The estimated envelope (``log_M="auto"``): what its samples are
-----------------------------------------------------------------

Write r = p/q (p may be unnormalised) and let candidates x₁, x₂, … ~ q i.i.d. be judged in chunks. The rule
judges every candidate against an envelope *fixed before it was drawn*:

- M_c, the envelope in force when chunk c is drawn, is a function of the chunks before c (none before the
  first: M = 0). Here the first engine chunk with a positive ratio counts as two chunks: its first half, then
  its second half (so that a ``num_proposals`` call of one engine chunk can still accept rows).
- If chunk c holds a ratio above M_c it is a *pilot*: all its candidates are rejected, every row held so far
  is dropped, and M_{c+1} = margin × (its largest ratio). The first half-chunk with a positive ratio is
  always one (the pilot proper); a chunk that exceeds the envelope in force later is a *raise*. (When a raise
  comes from the second half of the first engine chunk, the whole engine chunk is rejected and M is set from
  its largest ratio, which is that half's.)
- Otherwise each candidate of chunk c is accepted independently with probability r(x)/M_c (≤ 1).

Claim. Call the *path* the sequence of chunk kinds (pilot or not) together with the pilots' candidates; it
fixes every M_c. Given the path, the rows a call returns are i.i.d. draws of p_M(x) ∝ p(x)·1[r(x) ≤ M], M the
call's final envelope. Proof: chunk c is not a pilot exactly when each of its candidates has r ≤ M_c, a product
event, so given the path its candidates are i.i.d. with density ∝ q(x)·1[r(x) ≤ M_c], independent of the pilots.
Each is accepted with probability r(x)/M_c, so given acceptance it has density ∝ q·r·1[r ≤ M_c] ∝ p_{M_c},
independently of everything else, the other accept/reject indicators included. The rows held are the accepted
rows since the last pilot, all with the same M_c = M; when to stop (num_accepted held, or num_proposals judged)
depends only on the path and the indicators. So given the path and the indicators the rows returned are i.i.d.
p_M, and this stays true conditionally on anything the path and indicators decide (the final log M, the number
of raises or of proposals) — which is what tests/test_pilot_envelope.py checks, pooling calls of every pilot
size from 1 to 20.

Consequences:

- When the final envelope bounds the ratio (M ≥ sup r) the rows are exact i.i.d. draws of p, for any chunk
  size, ``num_accepted`` or ``num_proposals``, and any number of raises.
- When it does not, the rows are draws of p cut at M: they lack exactly the target's mass above the envelope,
  ε(M) = P_p(r(X) > M) (the total-variation distance to p), and are otherwise exact. No rule can see that mass
  without drawing there. How large it is depends on the pilot: for Beta(2, 5) from U(0, 1) with
  ``num_accepted=1`` and the default margin 1.2, the rows lack on average 20 % of the target's mass with a pilot
  of one candidate, 3.4 % with five, 0.5 % with ten and < 0.01 % with twenty (tests/test_pilot_envelope.py).

Why a chunk may not be judged against the envelope it sets: its largest candidate would be accepted with
probability r/(margin·r) = 1/margin whatever r is, and the others relative to it. That was the previous rule, at
the pilot and at every raise; pooled over 20,000 calls of Beta(2, 5) from U(0, 1) with pilots of 5 candidates
(``num_proposals=5`` with margin 10, and ``num_accepted=1`` with margin 3) its mean was off by z = +6.4 in both
settings, although the final envelope was valid in 99.6 % and 97.8 % of those calls.

Why a raise drops every row held rather than thinning them to the new envelope (keeping each with
min(1, r/M_new)/min(1, r/M_old), REFERENCES.md §5): a row drawn while M_c was in force is a draw of p_{M_c},
and a raise proves M_c < sup r. Thinned, such a row stays a draw of p_{M_c}, so the output would carry the
mass missing under every envelope the call used (the largest, the pilot's) instead of only the final one's.
Simulated on Beta(2, 5), 50 rows a call, chunks of one candidate: a pooled mean off by +0.00091 with thinning
against +0.00017 when dropping (20,000 calls each, z = +5.7 and +1.1). The price is the rows held at a raise;
with a pilot of a whole chunk, raises after it are rare for a bounded ratio. A ratio that keeps raising (p/q
unbounded under q) is warned about (:meth:`DensityRatio.ratio_looks_unbounded`).

The tempered rule's carried envelope (:class:`TemperedDensityRatio`) is the M in force before a round's first
chunk: it comes from the previous round, so it is fixed before the round's candidates, and the claim holds
for the round.
"""

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


#: Raises of the auto envelope before this many candidates are judged are expected of a small pilot
#: (:meth:`DensityRatio.ratio_looks_unbounded` ignores them).
UNBOUNDED_MIN_JUDGED = 1000


class UnboundedRatioWarning(UserWarning):
    """The auto envelope kept rising until late in the call: p/q looks unbounded under the proposal (or its largest
    values are rarely drawn)."""


class EnvelopeViolationError(ValueError):
    """A fixed ``log_M`` was exceeded (``acceptance.on_violation=error``)."""


class DensityRatio(ProbabilisticAcceptance):
    """Classic rejection sampling: accept x ~ q with probability p(x) / (M q(x)).

    ``target`` is any object with ``log_prob`` (unnormalised is fine) or the name of a built-in density
    target. ``log_M`` is a float, or ``"auto"``: every candidate is judged against an envelope fixed
    before it was drawn (the module docstring proves what that buys). The first half of the first chunk of
    a call whose target density is not zero everywhere is the *pilot*: it sets log M to its largest
    log-ratio plus log(``margin``) and all its candidates are rejected; the second half is judged against
    that M. A later chunk (or that second half) whose largest ratio exceeds the M in force is a pilot too
    (a *raise*): its candidates are rejected, every row accepted earlier in the call is dropped
    (:meth:`discard_held`; the engine draws on and counts them as ``thinned``), and M is set from it. So
    every row returned was drawn, and judged, under the call's final envelope. The candidates above the M
    in force are counted as ``envelope_violations``; ``envelope_history`` lists (candidates judged, log M)
    at the pilot and at each raise. When raises keep coming until late in the call, p/q is probably
    unbounded under this proposal and the call warns (:meth:`ratio_looks_unbounded`).

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
        self.history: list[tuple[int, float]] = []  # (candidates judged, log M) at the pilot and each raise
        self.pilot_chunk = False  # the chunk just judged was a pilot: the rows held so far must go

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
            # log p and log q are finite (or log p = −inf), so only an overflow of their difference is left.
            if math.isnan(chunk_max) or chunk_max == math.inf:
                check_finite(f"log acceptance probability of {type(self).__name__}", log_ratio)
        self.max_log_ratio = max(self.max_log_ratio, chunk_max)
        self.judged += log_ratio.numel()
        self.pilot_chunk = False
        if self.fixed_log_M is not None:
            if chunk_max > self.log_M:
                self.violations += int((log_ratio > self.log_M).sum())
                if self.on_violation == "error":
                    raise EnvelopeViolationError(self._violation_message())
            return (log_ratio - self.log_M).clamp(max=0.0)
        if self.log_M is None:
            self.log_M = self._envelope_before_first_chunk()
        if self.log_M is None:
            if chunk_max == -math.inf:
                # Zero target density on the whole chunk and no envelope yet: it says nothing about M, and
                # every candidate in it has acceptance probability 0 (log_ratio is −inf throughout).
                return log_ratio
            return self._first_envelope(log_ratio, chunk_max)
        if chunk_max > self.log_M:
            return self._pilot(log_ratio, chunk_max)
        return log_ratio - self.log_M  # ≤ 0: no candidate of this chunk exceeds the envelope

    def _first_envelope(self, log_ratio: torch.Tensor, chunk_max: float) -> torch.Tensor:
        """The first chunk with a finite ratio: its first half is the pilot (sets M, all rejected) and its second
        half is judged against that M, as if it were the next chunk; if the second half exceeds M it is a raise
        (the whole chunk rejected, M from its largest ratio). So a ``num_proposals`` call of a single chunk can
        still accept rows."""
        head = (log_ratio.shape[0] + 1) // 2
        tail = log_ratio[head:]
        head_max, tail_max = torch.stack(
            [log_ratio[:head].max(), tail.max() if tail.numel() else log_ratio.new_tensor(-math.inf)]
        ).tolist()  # the first chunk only: one more host read per call
        if head_max == -math.inf:  # the first half says nothing about M: the whole chunk is the pilot
            return self._pilot(log_ratio, chunk_max)
        self.log_M = head_max + math.log(self.margin)
        self.history.append((self.judged - tail.numel(), self.log_M))
        if tail_max > self.log_M:
            return self._pilot(log_ratio, chunk_max)
        log_a = log_ratio - self.log_M
        log_a[:head] = -math.inf
        return log_a

    def _pilot(self, log_ratio: torch.Tensor, chunk_max: float) -> torch.Tensor:
        """A chunk whose largest ratio exceeds the envelope in force (none before the first): it only sets M."""
        if self.log_M is not None:  # an envelope was in force and is exceeded: a raise
            self.violations += int((log_ratio > self.log_M).sum())
            self.envelope_raises += 1
        self.log_M = chunk_max + math.log(self.margin)
        self.history.append((self.judged, self.log_M))
        self.pilot_chunk = True
        return torch.full_like(log_ratio, -math.inf)

    def _envelope_before_first_chunk(self) -> float | None:
        """The log M in force before the call's first chunk: none (a subclass may carry one over)."""
        return None

    def discard_held(self) -> bool:
        return self.pilot_chunk

    def _log_target(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x), up to a constant: what the ratio is taken against (a subclass may temper it)."""
        return self.target.log_prob(x)

    def finish(self) -> None:
        if self.fixed_log_M is not None and self.violations:
            warnings.warn(self._violation_message(), stacklevel=3)
        if self.ratio_looks_unbounded():
            warnings.warn(f"{self._unbounded_message()} ({self._history_text()})", UnboundedRatioWarning, stacklevel=3)

    def ratio_looks_unbounded(self) -> bool:
        """Whether the auto envelope was still rising late in the call: last raised after max(4 × the pilot's
        candidates, :data:`UNBOUNDED_MIN_JUDGED`) candidates (the pilot is half the first chunk, so: after the
        first two chunks) and after an eighth of the call's candidates.

        A bounded ratio stops raising once the envelope covers its peak, which a pilot of thousands of candidates
        nearly always does at once (a smaller pilot within its first few hundred); an unbounded one (p with heavier
        tails than q) raises at every scale. The false-warning and detection rates measured are in
        tests/README.md ("Unbounded ratios").
        """
        if len(self.history) < 2:
            return False
        last = self.history[-1][0]
        return last >= max(4 * self.history[0][0], UNBOUNDED_MIN_JUDGED) and last > self.judged / 8

    def _unbounded_message(self) -> str:
        last = f"the last after {self.history[-1][0]:,} of {self.judged:,} candidates judged"
        return (
            f"p/q looks unbounded under this proposal, or its largest values are rarely drawn: the auto envelope was "
            f"still rising late in the call (raised {_times(self.envelope_raises)}, {last}), so the rows are draws of "
            "the target cut where p > M q for the final M, not exact draws. If the target has heavier tails than the "
            "proposal, use a proposal with heavier tails (e.g. proposal=student_t) or a defensive mixture "
            "(proposal=model has defensive_weight), so that p/q is bounded; if p/q is bounded, a larger "
            "acceptance.margin or sampler.chunk_size (the pilot is half the first chunk) lets the first envelope "
            "cover it"
        )

    def _history_text(self) -> str:
        shown = self.history if len(self.history) <= 12 else [*self.history[:4], None, *self.history[-7:]]
        steps = ", ".join("…" if step is None else f"{step[1]:.4g} after {step[0]:,}" for step in shown)
        return f"log M set after candidates judged: {steps}"

    def budget_hint(self) -> str:
        if not self.envelope_raises:
            return ""
        if self.ratio_looks_unbounded():
            return f"{self._unbounded_message()} ({self._history_text()})"
        return f"The auto envelope was raised {_times(self.envelope_raises)} ({self._history_text()})"

    def _violation_message(self) -> str:
        return (
            f"the envelope acceptance.log_M={self.fixed_log_M:.6g} is too small: {self.violations:,} of "
            f"{self.judged:,} candidates judged had log p(x) − log q(x) above it (largest {self.max_log_ratio:.6g}), "
            "so the samples under-represent where p > M q. Set acceptance.log_M ≥ the largest log-ratio "
            f"(e.g. {self.max_log_ratio + math.log(self.margin):.6g}) or acceptance.log_M=auto (a raise drops "
            "the rows accepted under the smaller envelope); acceptance.on_violation=error stops at the first "
            "violation instead of warning"
        )

    def stats(self) -> dict[str, float]:
        return {
            "log_M": float("nan") if self.log_M is None else self.log_M,
            "envelope_violations": self.violations,
            "envelope_raises": self.envelope_raises,
            "max_log_ratio": self.max_log_ratio,
            "envelope_history": list(self.history),
        }

    def stat_combiners(self) -> dict[str, str]:
        # One envelope for the whole pooled set: the largest any process used (and the largest ratio it saw).
        # envelope_history, a list, is not combined: each process keeps its own (the data module combines numbers).
        return {"log_M": "max", "envelope_violations": "sum", "envelope_raises": "sum", "max_log_ratio": "max"}


class TemperedDensityRatio(DensityRatio):
    """Rejection sampling of p^β with β rising to 1 as the proposal allows: the self-improving sampler's
    start where even its defensive proposal accepts almost nothing of p (REFERENCES §7).

    One object lives across the sampling rounds of a run (``to`` moves it in place), so it remembers:

    - β: at the first chunk of every round (call), the largest β in [β of the last round, 1] whose
      acceptance rate under this round's proposal, estimated on that chunk, is at least ``min_rate``
      (β never falls). The round then samples p^β with the auto envelope of DensityRatio.
      Only rounds at β = 1 draw the target itself: the stats carry ``beta`` and ``exact_round``
      (1.0 or 0.0) so that a reader counts only those. Earlier rounds train the model towards p^β.
    - M: when β is unchanged, the envelope in force before the round's first chunk is the last round's
      final log M less ``max_drop`` nats (fixed before this round's candidates were drawn, so it judges
      them as any envelope in force does); a chunk that exceeds it is a pilot for a new one, as in
      DensityRatio. One chunk's max no longer decides a round alone, and the rate moves smoothly while
      the proposal improves. Every sample of a β = 1 round is drawn under the round's final M: an exact
      draw of p when that envelope holds. (β itself is chosen on the round's first chunk; that chunk is
      judged at the chosen β only when β was already 1 or unchanged — a β raised by it leaves no carried
      envelope, so the chunk is a pilot and none of its candidates is kept.)

    Two options make the climb faster where the exact tempered rounds stall (REFERENCES §7):

    - ``tempered_quantile`` (e.g. 0.99): a β < 1 round uses a *clipped* envelope, the pilot chunk's
      ``tempered_quantile``-quantile of the tempered ratio, fixed for the round: the ~1 % of candidates above
      it are accepted with probability 1 (counted as ``clipped``; nothing is raised or dropped). Those rounds are
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
        if self.pilot_log_M is None and not self.clipped:
            self.pilot_log_M = self.log_M  # the round's envelope after its first chunk (None until one is set)
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

    def _envelope_before_first_chunk(self) -> float | None:
        # The last round's final envelope less max_drop, at an unchanged β: fixed before this round's candidates.
        if self.carried is not None and self.carried[0] == self.beta:
            return self.carried[1] - self.max_drop
        return None

    def finish(self) -> None:
        if self.clipped:  # the clipped rows are the design of the round, not a too-small envelope
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

    def stat_combiners(self) -> dict[str, str]:
        # (The rule is refused on several processes, see the data module; declared for completeness.)
        more = {"beta": "min", "exact_round": "min", "clipped": "sum", "exact_rate_estimate": "mean"}
        return {**super().stat_combiners(), **more}


def _quantile(rows: torch.Tensor, q: float) -> torch.Tensor:
    """The q-quantile of each row (the lower order statistic: torch.quantile refuses inputs over 2^24 values)."""
    k = min(rows.shape[1] - 1, math.ceil(q * (rows.shape[1] - 1)))
    return rows.sort(dim=1).values[:, k]


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


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

    def stat_combiners(self) -> dict[str, str]:
        return {"log_M": "max", "envelope_violations": "sum"}


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
