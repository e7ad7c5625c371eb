"""Fail-fast stops a call only when even the remaining budget is implausible to suffice.

The check after chunk k (``rsft.sampling.remaining_budget_may_suffice``) spends α_k = 1e-6 · 6/(π² k²): half
on an upper bound λ_U of the acceptance rate, half on a Chernoff tail bound of the acceptances the remaining
budget can still give at a rate ≤ λ_U. It stops only when both say "implausible", so a call that would have
finished is stopped with probability ≤ Σ_k α_k = 1e-6 (for a rule that accepts independently at a fixed rate).

- The bounds are bounds: checked exactly (scipy's binomial tails) on a grid, not by simulation.
- The false-stop rate near the edge: budgets 1.02–1.2× the mean need, 6,000 seeds per setting, simulated with
  the engine's own check function on numpy arrays (one binomial count per chunk). A false stop is a stop of a
  stream whose count reaches the target within the budget. Calibrated: the test fails when the number of false
  stops has a binomial p-value below 1e-6 under the claimed per-call rate 1e-6, i.e. at 5 or more of the 96,000
  simulated calls. Measured: 0. The mutation (the previous check: the remaining need divided by a normal-
  approximation upper rate, ignoring the spread of the draws still to come) gives hundreds.
- The same through ``rejection_sample``: with the same seed, a call with fail-fast is compared to the call without
  it (fail-fast draws no random numbers, so the streams are identical).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
import torch
from scipy import stats

import rsft.sampling as sampling
from rsft import AcceptanceBudgetError, rejection_sample
from rsft.acceptance.base import ProbabilisticAcceptance
from rsft.proposals.distribution import gaussian
from rsft.sampling import FAIL_FAST_ERROR, fail_fast_level, rate_upper_bound, remaining_budget_may_suffice

ALPHA = 1e-6
#: (target, rate, chunk size): small and large targets, rare and common acceptances, one-row and larger chunks.
SETTINGS = [(20, 0.5, 1), (50, 0.3, 1), (50, 0.3, 10), (100, 0.1, 10), (200, 0.02, 100), (1000, 0.1, 100)]
FACTORS = [1.02, 1.04, 1.1, 1.2]
SEEDS = 4000


def previous_check(accepted, drawn, needed, remaining, check):
    """The mutation: the check before this fix (a normal-approximation upper rate at α_k, the remaining need
    divided by it, stop when that exceeds the remaining budget)."""
    alpha = FAIL_FAST_ERROR * 6 / (math.pi**2 * check**2)
    z = -NormalDist().inv_cdf(alpha)
    upper = (accepted + z * z / 2 + z * np.sqrt(accepted + z * z / 4)) / drawn
    return needed / np.minimum(upper, 1.0) <= remaining


def false_stops(check, target: int, rate: float, chunk: int, factor: float, seeds: int, seed: int) -> tuple[int, int]:
    """(calls stopped although their stream reaches ``target`` within the budget, calls that reach it)."""
    rng = np.random.default_rng(seed)
    budget = int(factor * target / rate)
    chunks = math.ceil(budget / chunk)
    sizes = np.full(chunks, chunk)
    sizes[-1] = budget - chunk * (chunks - 1)
    accepted = np.cumsum(rng.binomial(sizes[None, :], rate, size=(seeds, chunks)), axis=1)
    drawn = np.cumsum(sizes)
    finishes = accepted[:, -1] >= target
    running = np.ones(seeds, dtype=bool)
    stopped = np.zeros(seeds, dtype=bool)
    for k in range(chunks - 1):  # after the last chunk the budget is spent: no check decides anything
        running &= accepted[:, k] < target
        go_on = check(accepted[:, k], drawn[k], target - accepted[:, k], budget - drawn[k], k + 1)
        stopped |= running & ~go_on
        running &= go_on
    return int((stopped & finishes).sum()), int(finishes.sum())


def count_false_stops(check) -> tuple[int, int, int]:
    total = finishing = calls = 0
    for i, (target, rate, chunk) in enumerate(SETTINGS):
        for j, factor in enumerate(FACTORS):
            wrong, finished = false_stops(check, target, rate, chunk, factor, SEEDS, seed=100 * i + j)
            total, finishing, calls = total + wrong, finishing + finished, calls + SEEDS
    return total, finishing, calls


def binomial_pvalue(false: int, calls: int) -> float:
    """P(at least ``false`` false stops in ``calls`` calls) if each call errs with probability FAIL_FAST_ERROR."""
    return float(stats.binom.sf(false - 1, calls, FAIL_FAST_ERROR))


def test_no_call_that_would_finish_is_stopped_near_the_edge():
    wrong, finishing, calls = count_false_stops(remaining_budget_may_suffice)
    assert finishing > calls // 2  # most of these calls do finish: the edge is really tested
    assert binomial_pvalue(wrong, calls) > ALPHA, wrong
    assert wrong == 0  # measured; the bound allows about 0.1 in 96,000 calls


def test_the_previous_check_stops_calls_that_would_finish():
    wrong, _, calls = count_false_stops(previous_check)
    assert binomial_pvalue(wrong, calls) < ALPHA, wrong


@pytest.mark.parametrize("check", [1, 10, 1000])
def test_the_rate_bound_covers_the_rate_exactly(check):
    # For every true rate λ on a grid, P(bound(X) < λ) with X ~ Binomial(drawn, λ) is at most exp(−level): the
    # bound is below λ only for counts X ≤ x*(λ), whose binomial probability scipy gives exactly.
    level = fail_fast_level(check)
    for drawn in (1, 10, 100, 10_000, 10**7):
        counts = np.arange(0, min(drawn, 20_000) + 1)
        bounds = rate_upper_bound(counts, drawn, level)
        for rate in np.geomspace(1e-9, 0.999, 200):
            below = counts[bounds < rate]
            if below.size:
                assert stats.binom.cdf(below.max(), drawn, rate) <= math.exp(-level) * (1 + 1e-9)


def test_the_tail_bound_covers_the_acceptances_still_to_come():
    # Where the check stops at a rate bound λ_U, P(Binomial(remaining, λ_U) ≥ needed) is below exp(−level).
    level = fail_fast_level(1)
    for remaining in (10, 1000, 10**6):
        for upper in (1e-4, 0.01, 0.3):
            needed = np.arange(1, remaining + 1)
            drawn = 10**9  # a rate bound ≈ accepted / drawn: choose accepted to hit upper
            accepted = upper * drawn
            stop = ~remaining_budget_may_suffice(accepted, drawn, needed, remaining, 1)
            if stop.any():
                bound = float(rate_upper_bound(accepted, drawn, level))
                first = needed[stop].min()
                assert stats.binom.sf(first - 1, remaining, bound) <= math.exp(-level)


def test_the_error_spent_over_all_checks_is_at_most_1e_6():
    assert FAIL_FAST_ERROR == 1e-6
    checks = np.arange(1, 100_001)
    spent = 2 * np.exp(-np.array([fail_fast_level(int(k)) for k in checks])).sum()  # two bounds per check
    tail = FAIL_FAST_ERROR * 6 / math.pi**2 / checks[-1]  # Σ_{k > K} α_k < α_1 / K
    assert spent + tail <= FAIL_FAST_ERROR * (1 + 1e-9)
    assert fail_fast_level(10**6) > fail_fast_level(1000) > fail_fast_level(1) > 14


class Bernoulli(ProbabilisticAcceptance):
    """Accept each candidate with a fixed probability (a rule whose rate is exactly known)."""

    def __init__(self, rate: float):
        self.log_rate = math.log(rate)

    def log_accept_prob(self, batch):
        return torch.full((batch["x"].shape[0],), self.log_rate)


def engine_false_stops(seeds: int) -> tuple[int, int]:
    target, rate, chunk = 50, 0.3, 10
    budget = int(1.04 * target / rate)
    wrong = finished = 0
    for seed in range(seeds):
        kwargs = dict(num_accepted=target, max_proposals=budget, chunk_size=chunk, seed=seed)
        try:
            rejection_sample(gaussian(dim=1), Bernoulli(rate), fail_fast=False, **kwargs)
        except AcceptanceBudgetError:
            continue
        finished += 1
        try:
            rejection_sample(gaussian(dim=1), Bernoulli(rate), **kwargs)
        except AcceptanceBudgetError:
            wrong += 1
    return wrong, finished


def test_the_engine_does_not_stop_a_call_its_stream_would_finish():
    wrong, finished = engine_false_stops(600)
    assert finished > 300 and wrong == 0


def test_the_engine_with_the_previous_check_does(monkeypatch):
    monkeypatch.setattr(sampling, "remaining_budget_may_suffice", previous_check)
    wrong, _ = engine_false_stops(600)
    assert wrong >= 1  # measured: 6 of the 390 of these 600 seeds whose stream finishes


def test_the_early_stop_message_names_the_figures_and_the_fix():
    with pytest.raises(AcceptanceBudgetError, match="stopped early") as info:
        rejection_sample(
            gaussian(dim=1), Bernoulli(0.01), num_accepted=1000, max_proposals=50_000, chunk_size=1000, seed=0
        )
    message = str(info.value)
    assert "observed acceptance rate" in message and "the rate is at most" in message
    assert "sampler.max_proposals=50,000" in message and "probability ≤ 1e-06" in message
    assert info.value.stats["proposals_drawn"] < 50_000
