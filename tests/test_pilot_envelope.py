"""The auto envelope judges every candidate against an envelope fixed before it was drawn.

``DensityRatio(log_M="auto")``: the first chunk with a finite ratio (the pilot) only sets M, and a chunk whose
largest ratio exceeds the M in force is a new pilot (its candidates rejected, every row held dropped). The
module docstring of ``rsft.acceptance.density`` proves what that gives: the rows of a call are i.i.d. draws of
p restricted to {p/q ≤ M}, M the call's final envelope — exact draws of p when M bounds p/q, and otherwise
missing exactly the target's mass above M. These tests check that claim where it is most fragile: pilots of
1 to 20 candidates, ``num_accepted=1`` and small ``num_proposals``, many seeds pooled.

Target Beta(2, 5) on U(0, 1): p/q = 30 x (1 − x)^4, largest 2.4576 at x = 0.2, so {p/q ≤ M} is [0, a] ∪ [b, 1]
with p(a) = p(b) = M. Each row x of a call whose final envelope is M is transformed by the CDF of p cut at M,
F_M(x) = (F(min(x, a)) + max(F(x) − F(b), 0)) / (F(a) + 1 − F(b)) (F_M = F when M ≥ 2.4576). Under the claim the
pooled F_M(x) are i.i.d. Uniform(0, 1) whatever the pilot size — including the calls whose envelope was too small
(up to 35 % of them at a pilot of one candidate).

Calibration: each case fails when the KS p-value or the mean z-test of the pooled F_M(x) is below 1e-6 / 2
(Bonferroni over the two), so its false-failure rate is ≤ 1e-6. Power: the same statistic must reject
- the pilot judged against the envelope it sets (the previous behaviour: its largest candidate is accepted with
  probability 1/margin whatever its ratio),
- a raising chunk judged against the envelope it sets (the previous behaviour at every raise).
Both fail at pilots of 1–3 candidates (measured below); the third mutation, rows held across a raise, needs
calls that hold rows when the envelope is raised: tests/test_envelope_raises.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from torch import distributions as D

from rsft import DensityRatio, DistributionProposal, rejection_sample

ALPHA = 1e-6
SUP = 30 * 0.2 * 0.8**4  # largest p/q, at x = 0.2
BETA = stats.beta(2, 5)
SEEDS = 2000


def density(x):
    return 30 * x * (1 - x) ** 4


def cut_points(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a ≤ 0.2 ≤ b with density(a) = density(b) = M, for M < SUP (bisection: density rises on [0, 0.2], falls after)."""
    low, high = np.zeros_like(M), np.full_like(M, 0.2)
    for _ in range(60):
        mid = (low + high) / 2
        below = density(mid) < M
        low, high = np.where(below, mid, low), np.where(below, high, mid)
    a = (low + high) / 2
    low, high = np.full_like(M, 0.2), np.ones_like(M)
    for _ in range(60):
        mid = (low + high) / 2
        above = density(mid) > M
        low, high = np.where(above, mid, low), np.where(above, high, mid)
    return a, (low + high) / 2


def cut_cdf(x: np.ndarray, M: np.ndarray) -> np.ndarray:
    """F_M(x): the CDF of Beta(2, 5) restricted to {p ≤ M}, at each row's own M."""
    a, b = cut_points(np.minimum(M, SUP))
    kept = BETA.cdf(a) + BETA.sf(b)
    cut = (BETA.cdf(np.minimum(x, a)) + np.maximum(BETA.cdf(x) - BETA.cdf(b), 0.0)) / kept
    return np.where(M >= SUP, BETA.cdf(x), cut)


def missing_mass(M: np.ndarray) -> np.ndarray:
    """The target's mass above the envelope, P_p(p/q > M): what rows drawn under M cannot show."""
    a, b = cut_points(np.minimum(M, SUP))
    return np.where(M >= SUP, 0.0, BETA.cdf(b) - BETA.cdf(a))


def pooled(rule_type, chunk_size: int, seeds: int = SEEDS, margin: float = 1.2, **mode):
    """The rows of ``seeds`` calls (seeds 0..seeds-1) and, beside each, its call's final envelope M."""
    proposal = DistributionProposal(D.Uniform(0.0, 1.0))
    rows, envelopes = [], []
    for seed in range(seeds):
        res = rejection_sample(
            proposal, rule_type(D.Beta(2.0, 5.0), margin=margin), chunk_size=chunk_size, seed=seed, **mode
        )
        x = res.batch["x"].double().numpy()
        rows.append(x)
        envelopes.append(np.full(len(x), math.exp(res.stats["log_M"]) if len(x) else 0.0))
    return np.concatenate(rows), np.concatenate(envelopes)


def cut_pvalue(x: np.ndarray, M: np.ndarray) -> float:
    """KS and mean z-test of F_M(x) against Uniform(0, 1), Bonferroni over the two."""
    u = cut_cdf(x, M)
    z = (u.mean() - 0.5) / math.sqrt(1 / 12 / len(u))
    return min(1.0, 2 * min(float(stats.kstest(u, "uniform").pvalue), 2 * float(stats.norm.sf(abs(z)))))


class PilotJudgedAgainstItself(DensityRatio):
    """Mutation: the first envelope is set from the pilot and the pilot's candidates are judged against it."""

    def _pilot(self, log_ratio, chunk_max):
        first = self.log_M is None
        log_a = super()._pilot(log_ratio, chunk_max)
        if first:
            self.pilot_chunk = False
            return log_ratio - self.log_M
        return log_a


class RaiseJudgedAgainstItself(DensityRatio):
    """Mutation: a raising chunk's candidates are judged against the envelope they set (held rows still dropped)."""

    def _pilot(self, log_ratio, chunk_max):
        first = self.log_M is None
        log_a = super()._pilot(log_ratio, chunk_max)
        return log_a if first else log_ratio - self.log_M


#: The target's mass the rows lack on average (the mean of P_p(p/q > M) over the calls), as quoted in
#: rsft/acceptance/density.py and tests/README.md; measured on these seeds: 0.197, 0.036, 0.0042, 0.
MISSING_MASS = {1: (0.17, 0.23), 5: (0.025, 0.05), 10: (0.001, 0.01), 20: (0.0, 1e-4)}


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 10, 20])
def test_one_accepted_row_is_a_draw_of_the_target_cut_at_the_final_envelope(chunk_size):
    x, M = pooled(DensityRatio, chunk_size, num_accepted=1)
    assert len(x) == SEEDS
    if chunk_size == 1:
        assert np.mean(M < SUP) > 0.2  # the envelope is often too small: the cut target is really exercised
    assert cut_pvalue(x, M) > ALPHA
    if chunk_size in MISSING_MASS:
        low, high = MISSING_MASS[chunk_size]
        assert low <= missing_mass(M).mean() < high


@pytest.mark.parametrize("chunk_size", [1, 5, 20])
def test_num_proposals_rows_are_draws_of_the_target_cut_at_the_final_envelope(chunk_size):
    x, M = pooled(DensityRatio, chunk_size, seeds=1000, num_proposals=4 * chunk_size)
    assert len(x) > 500
    assert cut_pvalue(x, M) > ALPHA


@pytest.mark.parametrize(("mutation", "chunk_size"), [(PilotJudgedAgainstItself, 1), (PilotJudgedAgainstItself, 3)])
def test_a_pilot_judged_against_itself_fails(mutation, chunk_size):
    x, M = pooled(mutation, chunk_size, num_accepted=1)
    assert cut_pvalue(x, M) < ALPHA


@pytest.mark.parametrize("chunk_size", [1, 3])
def test_a_raise_judged_against_itself_fails(chunk_size):
    x, M = pooled(RaiseJudgedAgainstItself, chunk_size, num_accepted=1)
    assert cut_pvalue(x, M) < ALPHA


def test_the_pilot_sets_the_envelope_and_keeps_none_of_its_candidates():
    res = rejection_sample(
        DistributionProposal(D.Uniform(0.0, 1.0)), DensityRatio(D.Beta(2.0, 5.0)), num_proposals=1000, chunk_size=1000
    )
    assert res.stats["accepted"] == 0 and res.stats["proposals_drawn"] == 1000
    assert res.stats["envelope_history"] == [(1000, pytest.approx(res.stats["log_M"]))]
    assert res.stats["log_M"] == pytest.approx(res.stats["max_log_ratio"] + math.log(1.2))


def mean_pvalue(x: np.ndarray) -> float:
    z = (x.mean() - 2 / 7) / (math.sqrt(10 / (49 * 8)) / math.sqrt(len(x)))
    return min(1.0, 2 * min(2 * float(stats.norm.sf(abs(z))), float(stats.kstest(x, BETA.cdf).pvalue)))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "margin"), [({"num_proposals": 5}, 10.0), ({"num_accepted": 1}, 3.0)], ids=["proposals5", "accepted1"]
)
def test_the_issues_settings_give_the_target_itself(mode, margin):
    """The issue's two settings (chunk 5), 20,000 calls pooled, raw x against Beta(2, 5) itself (no cut): mean
    z-test and KS at α/2 each. Before the fix both failed (z = +6.4 each on these seeds); the cut mass left by
    envelopes that are too small is too little to see here."""
    x, _ = pooled(DensityRatio, 5, seeds=20_000, margin=margin, **mode)
    assert mean_pvalue(x) > ALPHA
    x, _ = pooled(PilotJudgedAgainstItself, 5, seeds=20_000, margin=margin, **mode)
    assert mean_pvalue(x) < ALPHA
