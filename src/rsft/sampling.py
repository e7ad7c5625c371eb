"""The rejection-sampling engine: chunked, streaming, seeded, on any device.

``rejection_sample`` draws chunks of candidates from a proposal, asks an acceptance rule which to
keep, and copies the kept rows into a pre-allocated output until exactly ``num_accepted`` are kept
(or, in ``num_proposals`` mode, until a fixed number of candidates has been judged). Peak memory is
one chunk plus the output. A proposal budget bounds the work: when it is spent — or when the
acceptance rate observed so far shows it is sure to be spent — :class:`AcceptanceBudgetError` says
what happened and what to change.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from statistics import NormalDist

import torch

from rsft.acceptance.base import Acceptance
from rsft.batch import Batch
from rsft.proposals.base import Proposal

DEFAULT_CHUNK_SIZE = 65_536
#: Chunk used when ``chunk_size=None``: on CPU throughput is flat from 2^14 to 2^18 candidates per
#: chunk (benchmarks/README.md) and a smaller chunk stays in cache; a GPU needs ~10^6 per kernel
#: launch to fill its cores and amortise the one host read per chunk.
DEVICE_CHUNK_SIZE = {"cpu": DEFAULT_CHUNK_SIZE, "cuda": 1_048_576}
DEFAULT_MAX_PROPOSALS = 100_000_000
#: Fail-fast's error budget for a whole call: the probability that a run whose acceptance rate could
#: meet its budget is stopped early. It is spent over the checks (one after every chunk): check k uses
#: α_k = FAIL_FAST_ERROR · 6 / (π² k²), and Σ_k α_k = FAIL_FAST_ERROR, so however many chunks a run
#: has, its false-stop probability is ≤ 1e-6 (union bound; each check's bound is the Poisson score
#: bound, so the figure holds to the accuracy of its normal approximation). z_1 = 4.85, z_1000 = 7.1.
FAIL_FAST_ERROR = 1e-6


#: How each figure of the engine's stats combines over the processes of a multi-process run (a rule's and a
#: proposal's figures declare their own: ``Acceptance.stat_combiners``, ``Proposal.stat_combiners``). The rates
#: are recomputed from the combined counts.
ENGINE_STAT_COMBINERS = {
    **dict.fromkeys(("proposals", "proposals_drawn", "accepted", "thinned", "chunks"), "sum"),
    "seconds": "max",  # the processes sample in parallel: the round takes as long as the slowest
    "partial": "max",
    **dict.fromkeys(("acceptance_rate", "proposals_per_s", "accepted_per_s"), "mean"),
}


class AcceptanceBudgetError(RuntimeError):
    """The proposal budget was (or is sure to be) spent before ``num_accepted`` were accepted."""

    def __init__(self, message: str, stats: dict[str, float]):
        super().__init__(message)
        self.stats = stats


@dataclass
class SamplingResult:
    """Accepted candidates (a dict of tensors, same leading size) and the figures of the call."""

    batch: Batch
    stats: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.stats.get("accepted", 0))


def _positive_int(name: str, value: int | float | None, key: str) -> int:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name} must be a positive integer, got {value!r} (set {key})")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{name} must be a positive integer, got {value!r} (set {key})")
        value = int(value)
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r} (set {key})")
    return value


def fail_fast_z(check: int) -> float:
    """The z-score of fail-fast's ``check``-th check (1-based): its share α_k of :data:`FAIL_FAST_ERROR`."""
    alpha = FAIL_FAST_ERROR * 6 / (math.pi**2 * check**2)
    return -NormalDist().inv_cdf(alpha)


def poisson_upper_bound(count: int, z: float) -> float:
    """One-sided score upper bound on a Poisson mean given an observed ``count``."""
    return count + z * z / 2 + z * math.sqrt(count + z * z / 4)


def _check_batch(batch: Batch, n: int) -> None:
    if not isinstance(batch, dict) or not batch:
        raise TypeError(f"a proposal must return a non-empty dict of tensors, got {type(batch).__name__}")
    for key, value in batch.items():
        if not torch.is_tensor(value):
            raise TypeError(f"proposal batch field {key!r} is a {type(value).__name__}, not a tensor")
        if value.dim() == 0 or value.shape[0] != n:
            raise ValueError(
                f"proposal batch field {key!r} has shape {tuple(value.shape)}; every field must have "
                f"leading size {n} (one row per candidate)"
            )


def default_chunk_size(device: torch.device | str) -> int:
    """A sensible ``chunk_size`` for ``device`` (see :data:`DEVICE_CHUNK_SIZE`)."""
    return DEVICE_CHUNK_SIZE.get(torch.device(device).type, DEFAULT_CHUNK_SIZE)


@dataclass
class SamplerSettings:
    """The ``sampler`` config group (keys shared by every experiment)."""

    num_accepted: int | None = 20_000
    num_proposals: int | None = None
    chunk_size: int | None = DEFAULT_CHUNK_SIZE  # None: the engine's default for the device
    max_proposals: int = DEFAULT_MAX_PROPOSALS
    allow_partial: bool = False
    fail_fast: bool = True
    save_accepted: bool = False
    on_empty: str = "error"  # "error" or "skip": what to do when a round accepts nothing

    def __post_init__(self) -> None:
        if self.on_empty not in ("error", "skip"):
            raise ValueError(f"sampler.on_empty must be 'error' or 'skip', got {self.on_empty!r}")
        # Both set: num_proposals would silently win over num_accepted (a default in conf/sampler).
        if self.num_accepted is not None and self.num_proposals is not None:
            raise ValueError(
                f"sampler.num_proposals={self.num_proposals!r} is set but so is sampler.num_accepted="
                f"{self.num_accepted!r}: set sampler.num_accepted=null to judge exactly num_proposals candidates "
                "(or sampler.num_proposals=null to keep num_accepted)"
            )
        # Checked here, when the run starts, not at the first sampling round after pre-training.
        for key in ("num_accepted", "num_proposals", "chunk_size", "max_proposals"):
            value = getattr(self, key)
            if value is not None or key == "max_proposals":
                _positive_int(key, value, f"sampler.{key}")


def rejection_sample(
    proposal: Proposal,
    acceptance: Acceptance,
    *,
    num_accepted: int | None = None,
    num_proposals: int | None = None,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
    max_proposals: int = DEFAULT_MAX_PROPOSALS,
    allow_partial: bool = False,
    fail_fast: bool = True,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> SamplingResult:
    """Draw candidates from ``proposal`` and keep those ``acceptance`` accepts.

    Give exactly one of ``num_accepted`` (keep drawing until that many are accepted; exactly that
    many come back) and ``num_proposals`` (judge that many candidates; all accepted ones come back).
    Randomness comes from ``generator`` or, if none, from a fresh generator seeded with ``seed``:
    the same seed gives the same samples on the same machine. ``fail_fast`` stops as soon as the
    observed acceptance rate makes reaching ``num_accepted`` within ``max_proposals`` implausible
    (an upper confidence bound whose error is spent over the checks: a whole call stops wrongly with
    probability ≤ :data:`FAIL_FAST_ERROR`) instead of spending the whole budget. ``chunk_size=None``
    picks :func:`default_chunk_size` for the device.

    A rule that revises its verdicts (``DensityRatio`` with ``log_M="auto"``, whose envelope may be
    raised mid-call) is asked after every chunk to thin the rows held so far (:meth:`Acceptance.rethin`);
    the rows it drops are counted as ``thinned`` and replaced by further draws, so exactly
    ``num_accepted`` exact draws come back. In ``num_proposals`` mode the same thinning applies to
    the rows accepted so far and nothing replaces them: the call still judges exactly
    ``num_proposals`` candidates, and every row returned is an exact draw under the final envelope.
    """
    if (num_accepted is None) == (num_proposals is None):
        raise ValueError(
            "give exactly one of num_accepted and num_proposals (sampler.num_accepted / sampler.num_proposals)"
        )
    if chunk_size is not None:
        chunk_size = _positive_int("chunk_size", chunk_size, "sampler.chunk_size")
    if num_accepted is not None:
        num_accepted = _positive_int("num_accepted", num_accepted, "sampler.num_accepted")
        max_proposals = _positive_int("max_proposals", max_proposals, "sampler.max_proposals")
    else:
        num_proposals = _positive_int("num_proposals", num_proposals, "sampler.num_proposals")
        max_proposals = num_proposals
    generator = _resolve_generator(generator, seed, device)
    device = generator.device
    if chunk_size is None:
        chunk_size = default_chunk_size(device)

    proposal = proposal.to(device)
    acceptance = acceptance.to(device)
    acceptance.start()
    draws = _Draws(acceptance, device, target=num_accepted)
    projected: float | None = None  # set when fail-fast stops the loop early
    while not draws.done(max_proposals):
        n = min(chunk_size, max_proposals - draws.drawn)
        batch = proposal.sample(n, generator)
        _check_batch(batch, n)
        mask = _judge(acceptance, batch, generator, n)
        draws.rethin(generator)  # the rows of earlier chunks, if the rule's verdicts changed with this one
        draws.keep(batch, mask)
        if fail_fast:
            projected = draws.projected_need(max_proposals)
            if projected is not None:
                break
    acceptance.finish()
    stats = draws.figures()
    if num_accepted is not None and draws.accepted < num_accepted:
        _raise_or_warn(stats, num_accepted, max_proposals, allow_partial, projected, draws.fail_fast_z)
    return SamplingResult(draws.result(), stats)


def _resolve_generator(
    generator: torch.Generator | None, seed: int | None, device: torch.device | str | None
) -> torch.Generator:
    """The caller's generator (checked against ``device``), or a fresh one seeded with ``seed``."""
    if generator is None:
        generator = torch.Generator(torch.device(device) if device is not None else torch.device("cpu"))
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(seed))
    elif device is not None and torch.device(device) != generator.device:
        want, have = torch.device(device), generator.device
        if not (want.type == have.type and (want.index is None or have.index is None)):
            raise ValueError(f"device={want} but the generator lives on {have}: pass a generator on {want}")
    return generator


def _judge(acceptance: Acceptance, batch: Batch, generator: torch.Generator, n: int) -> torch.Tensor:
    """The rule's verdict on one chunk, checked to be one bool per candidate."""
    mask = acceptance.accept(batch, generator)
    if not torch.is_tensor(mask):
        raise TypeError(
            f"{type(acceptance).__name__}.accept must return a bool tensor with one flag per candidate "
            f"(shape ({n},)), got a {type(mask).__name__}: return e.g. torch.tensor(flags, dtype=torch.bool)"
        )
    if mask.dtype != torch.bool or mask.shape != (n,):
        raise ValueError(
            f"{type(acceptance).__name__}.accept must return one bool per candidate (shape ({n},)), "
            f"got {mask.dtype} of shape {tuple(mask.shape)}"
        )
    return mask


class _Draws:
    """The accepted rows and the counts of one call, chunk by chunk.

    With a ``target`` (``num_accepted`` mode) the output is allocated once at that size and the last
    chunk is trimmed; without one (``num_proposals`` mode) every accepted row is kept in a buffer that
    doubles when it fills. Beside each row it keeps the rule's :meth:`~Acceptance.row_figures` (for a
    rule that has them), so that :meth:`rethin` can revise earlier verdicts when the rule asks.
    """

    def __init__(self, acceptance: Acceptance, device: torch.device, target: int | None):
        self.acceptance = acceptance
        self.device = device
        self.target = target
        self.drawn = 0  # candidates drawn and judged
        self.consumed = 0  # candidates up to and including the last one kept
        self.accepted = 0
        self.thinned = 0  # rows dropped after their acceptance because the rule revised its verdicts
        self.chunks = 0
        self.fail_fast_z = math.nan  # the z of the last fail-fast check
        self.out: Batch | None = None
        self.figures_out: Batch | None = None  # {"figures": one float64 per held row}, for rethin
        self.layout: dict[str, tuple] | None = None  # trailing shape, dtype and device of the first chunk
        self.empty: Batch | None = None  # zero rows with the layout of the first chunk
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.start = time.perf_counter()

    def done(self, max_proposals: int) -> bool:
        return (self.target is not None and self.accepted >= self.target) or self.drawn >= max_proposals

    def keep(self, batch: Batch, mask: torch.Tensor) -> None:
        n = mask.shape[0]
        self.chunks += 1
        self._check_layout(batch)
        figures = self.acceptance.row_figures()
        index = mask.nonzero().squeeze(1)
        kept = int(index.numel())  # the one host-device synchronisation per chunk
        if self.target is not None:
            take = min(kept, self.target - self.accepted)
            if take > 0:
                index = index[:take]
                if self.out is None:
                    self.out = _room_for(None, batch, self.target, exact=True)
                if figures is not None and self.figures_out is None:
                    self.figures_out = _room_for(None, _as_figures(figures), self.target, exact=True)
                self._copy(batch, index, figures)
                self.consumed = self.drawn + int(index[-1]) + 1
            self.accepted += take
        else:
            if kept:
                self.out = _room_for(self.out, batch, self.accepted + kept)
                if figures is not None:
                    self.figures_out = _room_for(self.figures_out, _as_figures(figures), self.accepted + kept)
                self._copy(batch, index, figures)
            self.accepted += kept
            self.consumed = self.drawn + n
        self.drawn += n

    def _check_layout(self, batch: Batch) -> None:
        """Every chunk must have the first chunk's fields, trailing shapes, dtypes and devices: rows are
        copied into a buffer laid out from the first chunk, which would otherwise keep uninitialised rows."""
        layout = {k: (tuple(v.shape[1:]), v.dtype, v.device) for k, v in batch.items()}
        if self.layout is None:  # the batch layout, for an empty result (no extra draw from the proposal)
            self.layout = layout
            self.empty = {k: v[:0].clone() for k, v in batch.items()}
            return
        if layout == self.layout:
            return
        for key in sorted(set(layout) | set(self.layout)):
            if key not in layout:
                what = "is missing"
            elif key not in self.layout:
                what = "is new (chunk 1 had no such field)"
            elif layout[key] != self.layout[key]:
                (shape, dtype, device), (shape1, dtype1, device1) = layout[key], self.layout[key]
                what = f"has rows of shape {shape}, {dtype} on {device}; chunk 1 had {shape1}, {dtype1} on {device1}"
            else:
                continue
            raise ValueError(
                f"the proposal's chunk {self.chunks} changes the batch layout: field {key!r} {what}. A proposal "
                "must return the same fields, with the same trailing shape, dtype and device, in every chunk"
            )

    def _copy(self, batch: Batch, index: torch.Tensor, figures: torch.Tensor | None) -> None:
        rows = slice(self.accepted, self.accepted + int(index.numel()))
        for key, value in batch.items():
            # index_select straight into the output: no temporary, several times faster than
            # value[index] for rows of more than one element on CPU.
            torch.index_select(value, 0, index, out=self.out[key][rows])  # type: ignore[index]
        if figures is not None and self.figures_out is not None:
            held = self.figures_out["figures"][rows]
            held.copy_(figures.index_select(0, index))

    def rethin(self, generator: torch.Generator) -> None:
        """Let the rule revise its verdicts on the rows held (from earlier chunks) and compact the survivors.

        The rule answers None — without touching the device — unless its acceptance probabilities
        dropped with the chunk just judged (an envelope raised), so the common chunk costs nothing here.
        """
        if self.figures_out is None or self.accepted == 0:
            return
        keep = self.acceptance.rethin(self.figures_out["figures"][: self.accepted], generator)
        if keep is None:
            return
        index = keep.nonzero().squeeze(1)
        kept = int(index.numel())
        for buffer in (self.out, self.figures_out):
            for value in buffer.values():  # type: ignore[union-attr]
                value[:kept].copy_(value[: self.accepted].index_select(0, index))
        self.thinned += self.accepted - kept
        self.accepted = kept

    def projected_need(self, max_proposals: int) -> float | None:
        """Fail-fast: the proposals that reaching the target needs at the upper confidence bound of the rate
        observed so far, when that is beyond the budget (None while the budget still looks enough). This
        is check number ``chunks``, at its share of :data:`FAIL_FAST_ERROR`."""
        if self.target is None or self.accepted >= self.target:
            return None
        self.fail_fast_z = fail_fast_z(self.chunks)
        rate_upper = poisson_upper_bound(self.accepted, self.fail_fast_z) / self.drawn
        needed = (self.target - self.accepted) / min(rate_upper, 1.0)
        return self.drawn + needed if self.drawn + needed > max_proposals else None

    def figures(self) -> dict[str, float]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - self.start
        counted = self.consumed if (self.target is not None and self.accepted == self.target) else self.drawn
        stats = {
            "proposals": counted,
            "proposals_drawn": self.drawn,
            "accepted": self.accepted,
            "acceptance_rate": self.accepted / counted if counted else float("nan"),
            "thinned": self.thinned,
            "chunks": self.chunks,
            "seconds": seconds,
            "proposals_per_s": self.drawn / seconds if seconds > 0 else float("nan"),
            "accepted_per_s": self.accepted / seconds if seconds > 0 else float("nan"),
        }
        stats.update(self.acceptance.stats())
        return stats

    def result(self) -> Batch:
        """The accepted rows, as compact tensors; the first chunk's layout with zero rows when nothing was
        accepted. A buffer larger than the rows (num_proposals mode, a partial result) is copied down, so the
        caller never holds — or saves with torch.save — the unused part of the storage."""
        if self.out is None:  # at least one chunk was drawn, so empty is set
            return self.empty  # type: ignore[return-value]
        capacity = next(iter(self.out.values())).shape[0]
        if self.accepted == capacity:
            return self.out
        return {k: v[: self.accepted].clone() for k, v in self.out.items()}


def _as_figures(figures: torch.Tensor) -> Batch:
    return {"figures": figures.to(torch.float64)}


def _room_for(out: Batch | None, batch: Batch, rows: int, exact: bool = False) -> Batch:
    """``out`` with capacity for at least ``rows`` rows of ``batch``'s layout, doubling when it grows
    (``exact``: exactly ``rows``, for an output whose final size is known).

    One buffer that grows a logarithmic number of times, rather than a small tensor per chunk: small
    allocations made between the chunks' large temporaries pin glibc's heap top, so the freed chunk
    memory was never returned and the peak grew with the number of chunks (benchmarks/README.md).
    """
    capacity = 0 if out is None else next(iter(out.values())).shape[0]
    if rows <= capacity:
        return out  # type: ignore[return-value]
    grown = rows if exact else max(rows, 2 * capacity, 1024)
    bigger = {k: torch.empty((grown, *v.shape[1:]), dtype=v.dtype, device=v.device) for k, v in batch.items()}
    if out is not None:
        for key, value in out.items():
            bigger[key][:capacity].copy_(value)
    return bigger


def _raise_or_warn(
    stats: dict[str, float], target: int, budget: int, allow_partial: bool, projected: float | None, z: float
) -> None:
    drawn, accepted = stats["proposals_drawn"], stats["accepted"]
    rate = accepted / drawn if drawn else 0.0
    if projected is not None:
        upper = poisson_upper_bound(int(accepted), z) / drawn
        why = (
            f"stopped early: after {drawn:,} proposals with {accepted:,} accepted (observed acceptance "
            f"rate {rate:.3g}; at most {upper:.3g} at {z:.2f} sigma, so that a whole call stops wrongly "
            f"with probability ≤ {FAIL_FAST_ERROR:g}), reaching {target:,} accepted needs at least "
            f"{projected:.3g} proposals, more than the budget sampler.max_proposals={budget:,}"
        )
    else:
        needed = f"about {target / rate:.3g}" if rate > 0 else "an unknown number of"
        why = (
            f"the proposal budget sampler.max_proposals={budget:,} was spent: {drawn:,} proposals drawn, "
            f"{accepted:,} of {target:,} accepted (observed acceptance rate {rate:.3g}); reaching "
            f"{target:,} needs {needed} proposals"
        )
    fix = (
        "Raise sampler.max_proposals, lower sampler.num_accepted, choose a proposal closer to the "
        "target (higher acceptance rate), or set sampler.allow_partial=true to keep what was accepted."
    )
    if not allow_partial:
        raise AcceptanceBudgetError(f"{why}. {fix}", stats)
    stats["partial"] = 1
    warnings.warn(
        f"returning {accepted:,} of {target:,} requested samples (sampler.allow_partial=true): {why}", stacklevel=3
    )
