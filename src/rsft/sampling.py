"""The rejection-sampling engine: chunked, streaming, seeded, on any device.

``rejection_sample`` draws chunks of candidates from a proposal, asks an acceptance rule which to
keep, and copies the kept rows into the output until exactly ``num_accepted`` are kept (or, in
``num_proposals`` mode, until a fixed number of candidates has been judged). The engine samples under
``torch.no_grad()``. A proposal budget bounds the work: when it is spent — or when the acceptance
observed so far shows that even the remaining budget is implausible to suffice — :class:`AcceptanceBudgetError`
says what happened and what to change.

Memory: one chunk (the proposal's batch and the rule's temporaries) plus the output. In ``num_accepted``
mode the output is allocated once at its final size. In ``num_proposals`` mode its final size is
unknown, so the accepted rows go into blocks of one chunk's rows each; at the end they are copied
into one compact tensor per field, block by block, each block freed as soon as it is copied, so the
copy adds about one block, not a second output (benchmarks/memory.py measures it).
"""

from __future__ import annotations

import math
import operator
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from rsft.acceptance.base import Acceptance
from rsft.batch import Batch
from rsft.batch import field as batch_field
from rsft.proposals.base import Proposal

DEFAULT_CHUNK_SIZE = 65_536
#: Chunk used when ``chunk_size=None``: on CPU throughput is flat from 2^14 to 2^18 candidates per
#: chunk (benchmarks/README.md) and a smaller chunk stays in cache; a GPU needs ~10^6 per kernel
#: launch to fill its cores and amortise the one host read per chunk.
DEVICE_CHUNK_SIZE = {"cpu": DEFAULT_CHUNK_SIZE, "cuda": 1_048_576}
DEFAULT_MAX_PROPOSALS = 100_000_000
#: Fail-fast's error budget for a whole call: the probability that a call which would have reached
#: ``num_accepted`` within its budget is stopped early. It is spent over the checks (one after every
#: chunk): check k may err with α_k = FAIL_FAST_ERROR · 6 / (π² k²), and Σ_k α_k = FAIL_FAST_ERROR.
#: Each check spends half of α_k on an upper bound of the acceptance rate and half on a tail bound of the
#: acceptances still to come (:func:`remaining_budget_may_suffice`); both are exact inequalities (no
#: normal approximation), so the ≤ 1e-6 holds for any number of chunks, for a rule that accepts each
#: candidate independently with a fixed probability.
FAIL_FAST_ERROR = 1e-6
#: What ``num_accepted`` counts: rows, or whole groups (the k samples of one prompt, consecutive rows sharing a
#: ``group`` id): with ``groups`` a round draws further prompts until that many groups are kept.
COUNT_UNITS = ("rows", "groups")
#: The seeds ``torch.Generator.manual_seed`` takes.
SEED_RANGE = (-(2**63), 2**64 - 1)


#: How each figure of the engine's stats combines over the processes of a multi-process run (a rule's and a
#: proposal's figures declare their own: ``Acceptance.stat_combiners``, ``Proposal.stat_combiners``). The rates
#: are recomputed from the combined counts.
ENGINE_STAT_COMBINERS = {
    **dict.fromkeys(("proposals", "proposals_drawn", "accepted", "thinned", "chunks"), "sum"),
    **dict.fromkeys(("groups_drawn", "groups_accepted", "pool_exhausted"), "sum"),
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


def fail_fast_level(check: int) -> float:
    """log(2 / α_k) for fail-fast's ``check``-th check (1-based): each of its two bounds errs with
    probability ≤ exp(−level) = α_k / 2. About 14.9 at the first check, 28.7 at the millionth."""
    alpha = FAIL_FAST_ERROR * 6 / (math.pi**2 * check**2)
    return math.log(2 / alpha)


def rate_upper_bound(accepted, drawn, level):
    """An upper confidence bound on an acceptance rate from ``accepted`` of ``drawn`` independent trials:
    P(bound < true rate) ≤ exp(−level). Works on floats and numpy arrays alike.

    The lower tail of a sum X of independent Bernoulli(λ) trials with mean ν = drawn·λ obeys
    P(X ≤ ν − t) ≤ exp(−t² / (2ν)) (Chernoff); the bound is the ν that makes (ν − accepted)² = 2·level·ν.
    Nothing drawn yet: the bound is 1.
    """
    top = accepted + level + np.sqrt(level * level + 2.0 * level * accepted)  # ≥ 2·level > 1
    return np.minimum(1.0, top / np.maximum(drawn, 1))  # drawn = 0 gives top ≥ 1, so the bound is 1


def remaining_budget_may_suffice(accepted, drawn, needed, remaining, check):
    """Fail-fast's check (False: stop): whether ``remaining`` more proposals could still plausibly give the
    ``needed`` acceptances, given ``accepted`` of ``drawn`` so far. Works on numbers and numpy arrays alike.

    At the check's level (:func:`fail_fast_level`) the rate is at most λ_U (:func:`rate_upper_bound`); at
    a rate ≤ λ_U the acceptances X among the remaining proposals have mean ≤ μ = remaining·λ_U, and for
    needed > μ, P(X ≥ needed) ≤ exp(−(needed·log(needed/μ) − needed + μ)) (the Chernoff bound, which holds
    for any independent trials of probability ≤ λ_U). The check says "stop" only when that bound is below
    exp(−level) too, or when fewer proposals remain than acceptances are needed. So a call that would
    finish is stopped at check k with probability ≤ α_k.
    """
    level = fail_fast_level(check)
    mean = remaining * rate_upper_bound(accepted, drawn, level)
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = needed * np.log(needed / np.maximum(mean, 1e-300)) - needed + mean
    return (needed <= remaining) & ((needed <= mean) | (exponent <= level))


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
    count: str = "rows"  # what num_accepted counts: "rows", or "groups" (whole prompt groups: dynamic sampling)

    def __post_init__(self) -> None:
        if self.on_empty not in ("error", "skip"):
            raise ValueError(f"sampler.on_empty must be 'error' or 'skip', got {self.on_empty!r}")
        if self.count not in COUNT_UNITS:
            raise ValueError(f"sampler.count must be 'rows' or 'groups', got {self.count!r}")
        if self.count == "groups" and self.num_accepted is None:
            raise ValueError(
                "sampler.count=groups counts the prompt groups kept toward sampler.num_accepted, which is null: set "
                "sampler.num_accepted to the groups a round needs (sampler.num_proposals=null), or sampler.count=rows"
            )
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
    count: str = "rows",
) -> SamplingResult:
    """Draw candidates from ``proposal`` and keep those ``acceptance`` accepts.

    Give exactly one of ``num_accepted`` (keep drawing until that many are accepted; exactly that
    many come back) and ``num_proposals`` (judge that many candidates; all accepted ones come back).
    Randomness comes from ``generator`` or, if none, from a fresh generator seeded with ``seed`` (an
    integer in :data:`SEED_RANGE`): the same seed gives the same samples on the same machine.
    ``fail_fast`` stops as soon as the acceptances observed make reaching ``num_accepted`` within
    ``max_proposals`` implausible (:func:`remaining_budget_may_suffice`: a call that would have finished
    is stopped with probability ≤ :data:`FAIL_FAST_ERROR`) instead of spending the whole budget.
    ``chunk_size=None`` picks :func:`default_chunk_size` for the device. Sampling runs under
    ``torch.no_grad()``: a proposal whose parameters require grad is sampled as plain data.

    A rule whose earlier verdicts can be invalidated mid-call (``DensityRatio`` with ``log_M="auto"``,
    when a chunk shows the estimated envelope too small) says so after the chunk
    (:meth:`Acceptance.discard_held`): every row held so far is dropped (``thinned`` in the stats) and
    the engine draws on, so the rows returned were all accepted under the rule's final verdict. In
    ``num_proposals`` mode nothing replaces them: the call still judges exactly ``num_proposals``
    candidates.

    ``count="groups"`` (dynamic sampling): ``num_accepted`` counts whole groups — consecutive candidates that
    share a ``group`` id, the k samples of one prompt — and the call draws until that many groups hold at least
    one accepted row (whole groups come back; the last chunk is trimmed at a group's end), until the budget is
    spent, or until the proposal's round runs out of new items (:meth:`Proposal.capacity`: drawn without
    replacement), which is said with the counts. Fail-fast then judges groups.
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
    if count not in COUNT_UNITS or (count == "groups" and num_accepted is None):
        raise ValueError(f"count must be 'rows', or 'groups' with num_accepted (sampler.count), got {count!r}")
    generator = _resolve_generator(generator, seed, device)
    device = generator.device
    if chunk_size is None:
        chunk_size = default_chunk_size(device)

    proposal = proposal.to(device)
    acceptance = acceptance.to(device)
    with torch.no_grad():
        acceptance.start()
        draws = _Draws(acceptance, device, target=num_accepted, block_rows=chunk_size, groups=count == "groups")
        stopped_early = False
        while not draws.done(max_proposals):
            n = min(chunk_size, max_proposals - draws.drawn)
            if draws.groups:  # without replacement: at most what the round has left
                left = proposal.capacity()
                if left is not None and left <= 0:
                    draws.exhausted = True
                    break
                n = n if left is None else min(n, left)
            batch = proposal.sample(n, generator)
            _check_batch(batch, n)
            mask = _judge(acceptance, batch, generator, n)
            if acceptance.discard_held():  # the rows of earlier chunks were accepted under a verdict now void
                draws.discard_held(n)
            draws.keep(batch, mask)
            if fail_fast and not draws.remaining_budget_may_suffice(max_proposals):
                stopped_early = True
                break
        acceptance.finish()
        stats = draws.figures()
        if num_accepted is not None and draws.held < num_accepted:
            why = draws.early_stop_reason(num_accepted, max_proposals) if stopped_early else draws.exhausted_reason()
            unit = "groups" if draws.groups else "rows"
            _raise_or_warn(stats, num_accepted, max_proposals, allow_partial, why, acceptance.budget_hint(), unit)
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
            generator.manual_seed(_checked_seed(seed))
    elif device is not None and torch.device(device) != generator.device:
        want, have = torch.device(device), generator.device
        if not (want.type == have.type and (want.index is None or have.index is None)):
            raise ValueError(f"device={want} but the generator lives on {have}: pass a generator on {want}")
    return generator


def _checked_seed(seed: object) -> int:
    low, high = SEED_RANGE
    try:
        value = operator.index(seed)  # an int (or numpy integer); not a float, bool or string
    except TypeError:
        value = None
    if value is None or isinstance(seed, bool) or not low <= value <= high:
        raise ValueError(
            f"seed must be an integer in [-2**63, 2**64 - 1] (what torch.Generator.manual_seed takes), got {seed!r}"
        )
    return value


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
    chunk is trimmed; without one (``num_proposals`` mode) the rows go into blocks of ``block_rows`` rows
    (:class:`_Blocks`). The counts since the last :meth:`discard_held` (the *segment*) are what fail-fast
    judges: after a discard the rule's acceptance rate is a new one.
    """

    def __init__(
        self, acceptance: Acceptance, device: torch.device, target: int | None, block_rows: int, groups: bool = False
    ):
        self.acceptance = acceptance
        self.device = device
        self.target = target
        self.groups = groups  # the target counts whole groups (count="groups"), not rows
        self.groups_drawn = 0
        self.groups_accepted = 0
        self.exhausted = False  # the proposal's round ran out of new items (count="groups")
        self.drawn = 0  # candidates drawn and judged
        self.consumed = 0  # candidates up to and including the last one kept
        self.accepted = 0  # rows held
        self.thinned = 0  # rows dropped after their acceptance because the rule voided its verdicts
        self.segment_start = 0  # candidates drawn before the current segment
        self.chunks = 0
        self.out: Batch | None = None  # num_accepted mode: the output, allocated at its final size
        # num_proposals mode and group counting: the final row count is unknown
        self.blocks = _Blocks(block_rows) if target is None or groups else None
        self.layout: dict[str, tuple] | None = None  # trailing shape, dtype and device of the first chunk
        self.empty: Batch | None = None  # zero rows with the layout of the first chunk
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.start = time.perf_counter()

    @property
    def held(self) -> int:
        """What the target counts: groups with a row kept (count="groups"), else rows."""
        return self.groups_accepted if self.groups else self.accepted

    def done(self, max_proposals: int) -> bool:
        return (self.target is not None and self.held >= self.target) or self.drawn >= max_proposals

    def discard_held(self, n: int) -> None:
        """Drop every row held (the rule voided their verdicts with the chunk of ``n`` candidates just judged,
        which is not kept yet); the next segment starts after that chunk."""
        if self.groups:
            raise ValueError(
                f"sampler.count=groups keeps whole prompt groups, but {type(self.acceptance).__name__} voids its "
                "earlier verdicts mid-call (an estimated envelope): count rows (sampler.count=rows) with it"
            )
        self.thinned += self.accepted
        self.accepted = 0
        if self.blocks is not None:
            self.blocks.clear()
        self.segment_start = self.drawn + n

    def keep(self, batch: Batch, mask: torch.Tensor) -> None:
        n = mask.shape[0]
        self.chunks += 1
        self._check_layout(batch)
        index = mask.nonzero().squeeze(1)
        kept = int(index.numel())  # the one host-device synchronisation per chunk
        if self.groups:
            self._keep_groups(batch, index)
        elif self.target is not None:
            take = min(kept, self.target - self.accepted)
            if take > 0:
                index = index[:take]
                if self.out is None:
                    self.out = {k: _rows_like(v, self.target) for k, v in batch.items()}
                rows = slice(self.accepted, self.accepted + take)
                for key, value in batch.items():
                    # index_select straight into the output: no temporary, several times faster than
                    # value[index] for rows of more than one element on CPU.
                    torch.index_select(value, 0, index, out=self.out[key][rows])
                self.consumed = self.drawn + int(index[-1]) + 1
            self.accepted += take
        else:
            if kept:
                self.blocks.append(batch, index)  # type: ignore[union-attr]
            self.accepted += kept
            self.consumed = self.drawn + n
        self.drawn += n

    def _keep_groups(self, batch: Batch, index: torch.Tensor) -> None:
        """count="groups": keep the accepted rows of the chunk's first groups until the target is met (a group's
        samples are consecutive rows with one ``group`` id: the proposal draws them together)."""
        fix = "use a grouped proposal (proposal=policy) or count rows"
        ids = batch_field(batch, "group", "sampler.count=groups", fix)
        self.groups_drawn += int(torch.unique_consecutive(ids).numel())
        if index.numel() and self.groups_accepted < self.target:  # type: ignore[operator]
            kept_ids = ids[index]
            starts = torch.ones_like(kept_ids, dtype=torch.bool)
            starts[1:] = kept_ids[1:] != kept_ids[:-1]
            ordinal = torch.cumsum(starts, 0)  # 1, 1, 1, 2, 2, ...: which kept group a row belongs to
            take = min(int(ordinal[-1]), self.target - self.groups_accepted)  # type: ignore[operator]
            index = index[ordinal <= take]
            self.blocks.append(batch, index)  # type: ignore[union-attr]
            self.accepted += int(index.numel())
            self.groups_accepted += take
            # the candidates used run to the end of the last kept group (its rejected samples included)
            self.consumed = self.drawn + int((ids == ids[index[-1]]).nonzero()[-1]) + 1

    def exhausted_reason(self) -> str | None:
        """Why a group-counting call ended short when the proposal's round ran out of new items."""
        if not self.exhausted:
            return None
        return (
            f"the proposal's round ran out of new items: every one was drawn once ({self.groups_drawn:,} groups, "
            f"{self.drawn:,} candidates), and {self.groups_accepted:,} groups were kept (sampler.count=groups draws "
            "without replacement within a round)"
        )

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

    def remaining_budget_may_suffice(self, max_proposals: int) -> bool:
        """Fail-fast, check number ``chunks`` (see :func:`remaining_budget_may_suffice`), on the segment (in
        groups when counting groups: each group a trial, the remaining budget in groups of the average size)."""
        if self.target is None or self.held >= self.target or self.drawn >= max_proposals:
            return True  # done, or the budget is spent: the loop ends without a verdict of fail-fast
        if self.groups:
            per_group = self.drawn / max(self.groups_drawn, 1)
            remaining = int((max_proposals - self.drawn) // per_group)
            args = (self.groups_accepted, self.groups_drawn, self.target - self.groups_accepted, remaining)
            return bool(remaining_budget_may_suffice(*args, self.chunks))
        return bool(
            remaining_budget_may_suffice(
                self.accepted,
                self.drawn - self.segment_start,
                self.target - self.accepted,
                max_proposals - self.drawn,
                self.chunks,
            )
        )

    def early_stop_reason(self, target: int, max_proposals: int) -> str:
        """Why fail-fast stopped, in figures."""
        if self.groups:
            kept, drawn, left = self.groups_accepted, self.groups_drawn, max_proposals - self.drawn
            return (
                f"stopped early: {kept:,} of {drawn:,} groups drawn were kept ({self.drawn:,} candidates); at that "
                f"rate the remaining {left:,} candidates of the budget sampler.max_proposals={max_proposals:,} cannot "
                f"plausibly give the {target - kept:,} more groups needed (a call that would have finished is "
                f"stopped with probability ≤ {FAIL_FAST_ERROR:g})"
            )
        accepted, drawn = self.accepted, self.drawn - self.segment_start
        remaining, needed = max_proposals - self.drawn, target - self.accepted
        level = fail_fast_level(self.chunks)
        upper = float(rate_upper_bound(accepted, drawn, level))
        since = f" since the envelope was last set ({self.segment_start:,} drawn before)" if self.segment_start else ""
        observed = (
            f"stopped early: {accepted:,} accepted of {drawn:,} proposals{since} (observed acceptance rate "
            f"{accepted / drawn if drawn else 0.0:.3g})"
        )
        if needed > remaining:
            return (
                f"{observed}; only {remaining:,} proposals remain of the budget sampler.max_proposals="
                f"{max_proposals:,} and {needed:,} more acceptances are needed"
            )
        return (
            f"{observed}; the rate is at most {upper:.3g} (a bound that errs with probability ≤ "
            f"{math.exp(-level):.2g}), so the remaining {remaining:,} proposals of the budget "
            f"sampler.max_proposals={max_proposals:,} give on average at most {remaining * upper:.4g} acceptances, "
            f"and {needed:,} more are needed: reaching {target:,} within the budget has probability below "
            f"{math.exp(-level):.2g} (at that rate it needs about {self.drawn + needed / upper:.3g} proposals; "
            f"a call that would have finished is stopped with probability ≤ {FAIL_FAST_ERROR:g})"
        )

    def figures(self) -> dict[str, float]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - self.start
        counted = self.consumed if (self.target is not None and self.held == self.target) else self.drawn
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
        if self.groups:
            stats.update(groups_drawn=self.groups_drawn, groups_accepted=self.groups_accepted)
            stats["pool_exhausted"] = float(self.exhausted)
        stats.update(self.acceptance.stats())
        return stats

    def result(self) -> Batch:
        """The accepted rows, as compact tensors; the first chunk's layout with zero rows when nothing was
        accepted. The caller never holds — or saves with torch.save — storage beyond the rows."""
        if self.blocks is not None:
            return self.blocks.concatenate() if self.accepted else self.empty  # type: ignore[return-value]
        if self.out is None or self.accepted == 0:  # at least one chunk was drawn, so empty is set
            return self.empty  # type: ignore[return-value]
        if self.accepted == self.target:  # (rows counted: groups are collected in blocks)
            return self.out
        return {k: v[: self.accepted].clone() for k, v in self.out.items()}  # a partial result


def _rows_like(value: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.empty((rows, *value.shape[1:]), dtype=value.dtype, device=value.device)


#: The smallest block of accepted rows (num_proposals mode), in bytes: above glibc's largest dynamic mmap
#: threshold (32 MiB on 64-bit), so every block is its own mapping, resident only where rows were written,
#: and returned to the system as soon as it is freed.
MIN_BLOCK_BYTES = 32 * 2**20 + 4096


class _Blocks:
    """The accepted rows of a ``num_proposals`` call, in blocks of at least ``block_rows`` rows, filled in order.

    Blocks rather than one buffer that doubles: growing never copies, and :meth:`concatenate` moves the rows
    into the compact output one block at a time, freeing each block once copied, so the peak is the output
    plus about one block (a doubling buffer and a final compacting copy peaked at about twice the output).
    Each block is one byte allocation of at least :data:`MIN_BLOCK_BYTES` holding every field's rows (views
    at aligned offsets): its pages become resident only as rows are written, and freeing it unmaps it.
    """

    ALIGN = 64  # bytes: each field's rows start at an offset the widest dtype can view

    def __init__(self, block_rows: int):
        self.block_rows = block_rows
        self.blocks: list[Batch] = []
        self.filled = 0  # rows in the last block

    def clear(self) -> None:
        self.blocks, self.filled = [], 0

    def _new_block(self, batch: Batch) -> Batch:
        row_bytes = {k: v[0].numel() * v.element_size() if v.shape[0] else 0 for k, v in batch.items()}
        self.block_rows = max(self.block_rows, -(-MIN_BLOCK_BYTES // max(sum(row_bytes.values()), 1)))
        sizes = {k: -(-self.block_rows * b // self.ALIGN) * self.ALIGN for k, b in row_bytes.items()}
        memory = torch.empty(sum(sizes.values()), dtype=torch.uint8, device=next(iter(batch.values())).device)
        block, offset = {}, 0
        for key, value in batch.items():
            rows = memory[offset : offset + self.block_rows * row_bytes[key]].view(value.dtype)
            block[key] = rows.view(self.block_rows, *value.shape[1:])
            offset += sizes[key]
        return block

    def append(self, batch: Batch, index: torch.Tensor) -> None:
        start = 0
        while start < index.numel():
            if not self.blocks or self.filled == self.block_rows:
                self.blocks.append(self._new_block(batch))
                self.filled = 0
            take = min(self.block_rows - self.filled, index.numel() - start)
            part = index[start : start + take]
            for key, value in batch.items():
                torch.index_select(value, 0, part, out=self.blocks[-1][key][self.filled : self.filled + take])
            self.filled += take
            start += take

    def concatenate(self) -> Batch:
        rows = (len(self.blocks) - 1) * self.block_rows + self.filled
        out = {k: _rows_like(v, rows) for k, v in self.blocks[0].items()}
        at = 0
        while self.blocks:
            block = self.blocks.pop(0)
            take = self.block_rows if self.blocks else self.filled
            for key, value in block.items():
                out[key][at : at + take].copy_(value[:take])
            at += take
            del block  # its memory is freed before the next block is copied
        self.filled = 0
        return out


def _raise_or_warn(
    stats: dict[str, float],
    target: int,
    budget: int,
    allow_partial: bool,
    early: str | None,
    hint: str,
    unit: str = "rows",
) -> None:
    drawn, accepted = stats["proposals_drawn"], stats["accepted"]
    rate = accepted / drawn if drawn else 0.0
    if early is not None:
        why = early
    elif unit == "groups":
        why = (
            f"the proposal budget sampler.max_proposals={budget:,} was spent: {drawn:,} candidates in "
            f"{int(stats['groups_drawn']):,} groups drawn, {int(stats['groups_accepted']):,} of {target:,} groups kept"
        )
    else:
        needed = f"about {target / rate:.3g}" if rate > 0 else "an unknown number of"
        why = (
            f"the proposal budget sampler.max_proposals={budget:,} was spent: {drawn:,} proposals drawn, "
            f"{accepted:,} of {target:,} accepted (observed acceptance rate {rate:.3g}); reaching "
            f"{target:,} needs {needed} proposals"
        )
    if hint:  # what the rule saw (Acceptance.budget_hint)
        why += f". {hint.rstrip('.')}"
    fix = (
        "Raise sampler.max_proposals, lower sampler.num_accepted, choose a proposal closer to the "
        "target (higher acceptance rate), or set sampler.allow_partial=true to keep what was accepted."
    )
    if not allow_partial:
        raise AcceptanceBudgetError(f"{why}. {fix}", stats)
    stats["partial"] = 1
    held = int(stats["groups_accepted"]) if unit == "groups" else accepted
    what = "groups" if unit == "groups" else "samples"
    warnings.warn(
        f"returning {held:,} of {target:,} requested {what} (sampler.allow_partial=true): {why}", stacklevel=3
    )
