"""The samplers raced against each other: each draws ``n`` accepted samples of a :class:`Case`.

Every contender returns ``(accepted samples, proposals drawn)`` so throughput is counted the same way
for all of them. The floor draws and scores a given number of proposals and keeps nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from benchmarks.cases import Case
from rsft import DensityRatio, DistributionProposal, rejection_sample

Run = Callable[[Case, int, int, int], tuple[object, int]]


def run_rsft(case: Case, n: int, chunk_size: int, seed: int) -> tuple[torch.Tensor, int]:
    """(a) rsft's engine with the case's fixed envelope."""
    result = rejection_sample(
        DistributionProposal(case.proposal),
        DensityRatio(case.target, log_M=case.log_M),
        num_accepted=n,
        chunk_size=chunk_size,
        seed=seed,
    )
    return result.batch["x"], int(result.stats["proposals_drawn"])


def run_numpy(case: Case, n: int, chunk_size: int, seed: int) -> tuple[np.ndarray, int]:
    """(b) The same sampler written by hand in NumPy: chunks, log space, a pre-allocated output.

    Accept iff E > −log a with E ~ Exponential(1) (the same test as rsft; NumPy's ziggurat
    exponential is as cheap as a uniform plus a log).
    """
    rng = np.random.default_rng(seed)
    out = None
    filled = drawn = 0
    with np.errstate(divide="ignore"):  # log 0 = −inf at the support's edge is a legitimate zero density
        while filled < n:
            x = case.np_sample(rng, chunk_size)
            log_a = case.np_log_p(x) - case.np_log_q(x) - case.log_M
            keep = x[rng.standard_exponential(chunk_size) > -log_a]
            if out is None:
                out = np.empty((n, *x.shape[1:]), dtype=x.dtype)
            take = min(len(keep), n - filled)
            out[filled : filled + take] = keep[:take]
            filled += take
            drawn += chunk_size
    return out, drawn


def run_pyro(case: Case, n: int, chunk_size: int, seed: int) -> tuple[torch.Tensor, int]:
    """(c) ``pyro.distributions.Rejector``: draws all ``n`` at once and redraws every slot each round
    until every slot has accepted (``chunk_size`` does not apply)."""
    from pyro.distributions import Rejector

    drawn = 0

    def propose(sample_shape=torch.Size()):
        nonlocal drawn
        x = case.proposal.sample(sample_shape)
        drawn += math.prod(sample_shape)
        return x

    def log_prob_accept(x: torch.Tensor) -> torch.Tensor:
        return case.target.log_prob(x) - case.proposal.log_prob(x) - case.log_M

    torch.manual_seed(seed)
    rejector = Rejector(
        propose, log_prob_accept, -case.log_M, batch_shape=torch.Size(), event_shape=case.proposal.event_shape
    )
    x = rejector.sample((n,))
    return x, drawn


def run_seed_loop(case: Case, n: int, chunk_size: int, seed: int) -> tuple[torch.Tensor, int]:
    """(d) The seed document's way: one candidate per Python iteration, append when accepted."""
    torch.manual_seed(seed)
    accepted = []
    drawn = 0
    while len(accepted) < n:
        x = case.proposal.sample()
        drawn += 1
        log_a = case.target.log_prob(x.unsqueeze(0)) - case.proposal.log_prob(x) - case.log_M
        if torch.rand(()) < torch.exp(log_a):
            accepted.append(x)
    return torch.stack(accepted), drawn


def run_floor(case: Case, proposals: int, chunk_size: int, seed: int) -> tuple[None, int]:
    """(e) The floor: draw ``proposals`` candidates and evaluate log q and log p, nothing else."""
    torch.manual_seed(seed)
    done = 0
    while done < proposals:
        m = min(chunk_size, proposals - done)
        x = case.proposal.sample((m,))
        case.proposal.log_prob(x)
        case.target.log_prob(x)
        done += m
    return None, done


CONTENDERS: dict[str, str] = {
    "rsft": "rsft.rejection_sample",
    "numpy": "hand-vectorised NumPy (float64)",
    "pyro": "pyro Rejector",
    "seed_loop": "seed loop (1 sample/iteration)",
    "floor": "floor (draw + 2 log-densities)",
}
