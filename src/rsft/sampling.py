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

import torch

from rsft.acceptance import Acceptance
from rsft.proposals import Batch, Proposal

DEFAULT_CHUNK_SIZE = 65_536
#: Chunk used when ``chunk_size=None``: on CPU throughput is flat from 2^14 to 2^18 candidates per
#: chunk (benchmarks/README.md) and a smaller chunk stays in cache; a GPU needs ~10^6 per kernel
#: launch to fill its cores and amortise the one host read per chunk.
DEVICE_CHUNK_SIZE = {"cpu": DEFAULT_CHUNK_SIZE, "cuda": 1_048_576}
DEFAULT_MAX_PROPOSALS = 100_000_000
#: z-score of the one-sided upper confidence bound used to decide that a budget cannot be met.
#: z = 5 means a run that could still meet its budget is stopped early with probability < 3e-7.
FAIL_FAST_Z = 5.0


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


def poisson_upper_bound(count: int, z: float = FAIL_FAST_Z) -> float:
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
    (upper confidence bound at z = 5) instead of spending the whole budget. ``chunk_size=None``
    picks :func:`default_chunk_size` for the device.
    """
    if (num_accepted is None) == (num_proposals is None):
        raise ValueError("give exactly one of num_accepted and num_proposals (sampler.num_accepted / sampler.num_proposals)")
    if chunk_size is not None:
        chunk_size = _positive_int("chunk_size", chunk_size, "sampler.chunk_size")
    if num_accepted is not None:
        num_accepted = _positive_int("num_accepted", num_accepted, "sampler.num_accepted")
        max_proposals = _positive_int("max_proposals", max_proposals, "sampler.max_proposals")
    else:
        num_proposals = _positive_int("num_proposals", num_proposals, "sampler.num_proposals")
        max_proposals = num_proposals

    if generator is None:
        dev = torch.device(device) if device is not None else torch.device("cpu")
        generator = torch.Generator(dev)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(seed))
    elif device is not None and torch.device(device) != generator.device:
        want, have = torch.device(device), generator.device
        if not (want.type == have.type and (want.index is None or have.index is None)):
            raise ValueError(f"device={want} but the generator lives on {have}: pass a generator on {want}")
    device = generator.device
    if chunk_size is None:
        chunk_size = default_chunk_size(device)

    proposal = proposal.to(device)
    acceptance = acceptance.to(device)
    acceptance.start()

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    drawn = 0  # candidates drawn and judged
    consumed = 0  # candidates up to and including the last one kept
    accepted = 0
    chunks = 0
    out: Batch | None = None  # pre-allocated in num_accepted mode; grown by doubling in num_proposals mode
    projected: float | None = None  # set when fail-fast stops the loop early
    empty: Batch | None = None  # zero rows with the layout of the first chunk

    def figures() -> dict[str, float]:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        counted = consumed if (num_accepted is not None and accepted == num_accepted) else drawn
        stats = {
            "proposals": counted,
            "proposals_drawn": drawn,
            "accepted": accepted,
            "acceptance_rate": accepted / counted if counted else float("nan"),
            "chunks": chunks,
            "seconds": seconds,
            "proposals_per_s": drawn / seconds if seconds > 0 else float("nan"),
            "accepted_per_s": accepted / seconds if seconds > 0 else float("nan"),
        }
        stats.update(acceptance.stats())
        return stats

    target = num_accepted if num_accepted is not None else None
    while True:
        if target is not None and accepted >= target:
            break
        if drawn >= max_proposals:
            break
        n = min(chunk_size, max_proposals - drawn)
        batch = proposal.sample(n, generator)
        _check_batch(batch, n)
        mask = acceptance.accept(batch, generator)
        if mask.dtype != torch.bool or mask.shape != (n,):
            raise ValueError(
                f"{type(acceptance).__name__}.accept must return one bool per candidate (shape ({n},)), "
                f"got {mask.dtype} of shape {tuple(mask.shape)}"
            )
        chunks += 1
        if empty is None:  # the batch layout, for an empty result (no extra draw from the proposal)
            empty = {k: v[:0].clone() for k, v in batch.items()}
        index = mask.nonzero().squeeze(1)
        kept = int(index.numel())  # the one host-device synchronisation per chunk
        if target is not None:
            take = min(kept, target - accepted)
            if take > 0:
                index = index[:take]
                if out is None:
                    out = {k: torch.empty((target, *v.shape[1:]), dtype=v.dtype, device=v.device) for k, v in batch.items()}
                for key, value in batch.items():
                    # index_select straight into the output: no temporary, several times faster
                    # than value[index] for rows of more than one element on CPU.
                    torch.index_select(value, 0, index, out=out[key][accepted : accepted + take])
                consumed = drawn + int(index[-1]) + 1
            accepted += take
        else:
            if kept:
                out = _room_for(out, batch, accepted + kept)
                for key, value in batch.items():
                    torch.index_select(value, 0, index, out=out[key][accepted : accepted + kept])
            accepted += kept
            consumed = drawn + n
        drawn += n
        if target is not None and fail_fast and accepted < target:
            rate_upper = poisson_upper_bound(accepted) / drawn
            needed = (target - accepted) / min(rate_upper, 1.0)
            if drawn + needed > max_proposals:
                projected = drawn + needed
                break

    stats = figures()
    if target is not None:
        if accepted < target:
            _raise_or_warn(stats, target, max_proposals, allow_partial, projected)
        if out is None:  # nothing accepted (partial); at least one chunk was drawn, so empty is set
            out = empty
        elif accepted < target:
            out = {k: v[:accepted] for k, v in out.items()}
        return SamplingResult(out, stats)
    result = empty if out is None else {k: v[:accepted] for k, v in out.items()}
    return SamplingResult(result, stats)


def _room_for(out: Batch | None, batch: Batch, rows: int) -> Batch:
    """``out`` with capacity for at least ``rows`` rows of ``batch``'s layout, doubling when it grows.

    One buffer that grows a logarithmic number of times, rather than a small tensor per chunk: small
    allocations made between the chunks' large temporaries pin glibc's heap top, so the freed chunk
    memory was never returned and the peak grew with the number of chunks (benchmarks/README.md).
    """
    capacity = 0 if out is None else next(iter(out.values())).shape[0]
    if rows <= capacity:
        return out  # type: ignore[return-value]
    grown = max(rows, 2 * capacity, 1024)
    bigger = {k: torch.empty((grown, *v.shape[1:]), dtype=v.dtype, device=v.device) for k, v in batch.items()}
    if out is not None:
        for key, value in out.items():
            bigger[key][:capacity].copy_(value)
    return bigger


def _raise_or_warn(
    stats: dict[str, float], target: int, budget: int, allow_partial: bool, projected: float | None
) -> None:
    drawn, accepted = stats["proposals_drawn"], stats["accepted"]
    rate = accepted / drawn if drawn else 0.0
    if projected is not None:
        upper = poisson_upper_bound(int(accepted)) / drawn
        why = (
            f"stopped early: after {drawn:,} proposals with {accepted:,} accepted (observed acceptance "
            f"rate {rate:.3g}; at most {upper:.3g} at 5 sigma), reaching {target:,} accepted needs at least "
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
    warnings.warn(f"returning {accepted:,} of {target:,} requested samples (sampler.allow_partial=true): {why}", stacklevel=3)
