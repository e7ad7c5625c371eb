"""The auto envelope judges every candidate against an envelope fixed before it was drawn.

``DensityRatio(log_M="auto")``: the first chunk with a finite ratio (the pilot) only sets M, and a chunk whose
largest ratio exceeds the M in force is a new pilot (its candidates rejected, every row held dropped). The
module docstring of ``rsft.acceptance.density`` proves what that gives: the rows of a call are i.i.d. draws of
p restricted to {p/q ≤ M}, M the call's final envelope — exact draws of p when M bounds p/q, and otherwise
missing exactly the target's mass above M. These tests check that claim where it is most fragile: pilots (the
first half of the first chunk) of 1 to 20 candidates, ``num_accepted=1`` and small ``num_proposals``, many seeds
pooled.

Target Beta(2, 5) on U(0, 1): p/q = 30 x (1 − x)^4, largest 2.4576 at x = 0.2, so {p/q ≤ M} is [0, a] ∪ [b, 1]
with p(a) = p(b) = M. Each row x of a call whose final envelope is M is transformed by the CDF of p cut at M,
F_M(x) = (F(min(x, a)) + max(F(x) − F(b), 0)) / (F(a) + 1 − F(b)) (F_M = F when M ≥ 2.4576). Under the claim the
pooled F_M(x) are i.i.d. Uniform(0, 1) whatever the pilot size — including the calls whose envelope was too small
(35 % of them at a pilot of one candidate).

Calibration: each case fails when the KS p-value or the mean z-test of the pooled F_M(x) is below 1e-6 / 2
(Bonferroni over the two), so its false-failure rate is ≤ 1e-6. Power: the same statistic must reject
- the pilot judged against the envelope it sets (the previous behaviour: the whole first chunk set M and was
  judged against it, so its largest candidate was accepted with probability 1/margin whatever its ratio),
- a raising chunk judged against the envelope it sets (the previous behaviour at every raise).
Both fail at chunks of 1 and 2 candidates, the first also at 4 (tests/README.md, row 22); the third mutation,
rows held across a raise, needs calls that hold rows when the envelope is raised: tests/test_envelope_raises.py.
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
    """Mutation (the previous rule): the first chunk sets M from its own largest ratio and is judged against it."""

    def _first_envelope(self, log_ratio, chunk_max):
        self.log_M = chunk_max + math.log(self.margin)
        self.history.append((self.judged, self.log_M))
        return log_ratio - self.log_M


class RaiseJudgedAgainstItself(DensityRatio):
    """Mutation (the previous rule at a raise): a raising chunk is judged against the envelope it sets (the
    rows held are still dropped)."""

    def _pilot(self, log_ratio, chunk_max):
        super()._pilot(log_ratio, chunk_max)
        return log_ratio - self.log_M


#: By chunk size, the target's mass the rows lack on average (the mean of P_p(p/q > M) over the calls), as
#: quoted in rsft/acceptance/density.py and tests/README.md; measured on these seeds with pilots of 1, 5, 10
#: and 20 candidates: 0.197, 0.034, 0.0048, < 1e-4.
MISSING_MASS = {1: (0.17, 0.23), 10: (0.025, 0.045), 20: (0.002, 0.008), 40: (0.0, 1e-4)}


#: Chunk sizes whose first halves, the pilots, hold 1, 1, 2, 3, 5, 10 and 20 candidates.
@pytest.mark.parametrize("chunk_size", [1, 2, 4, 6, 10, 20, 40])
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


@pytest.mark.parametrize("chunk_size", [1, 4])
def test_a_pilot_judged_against_itself_fails(chunk_size):
    x, M = pooled(PilotJudgedAgainstItself, chunk_size, num_accepted=1)
    assert cut_pvalue(x, M) < ALPHA


@pytest.mark.parametrize("chunk_size", [1, 2])
def test_a_raise_judged_against_itself_fails(chunk_size):
    x, M = pooled(RaiseJudgedAgainstItself, chunk_size, num_accepted=1)
    assert cut_pvalue(x, M) < ALPHA


def test_the_pilot_is_the_first_half_of_the_first_chunk_and_keeps_none_of_its_candidates():
    res = rejection_sample(
        DistributionProposal(D.Uniform(0.0, 1.0)),
        DensityRatio(D.Beta(2.0, 5.0)),
        num_proposals=1000,
        chunk_size=1000,
        seed=0,
    )
    assert res.stats["proposals_drawn"] == 1000 and res.stats["envelope_raises"] == 0
    assert res.stats["envelope_history"] == [(500, pytest.approx(res.stats["log_M"]))]
    # Only the second half is judged: about 500 / (1.2 × 2.4576) = 170 accepted, none from the first half.
    assert 120 < res.stats["accepted"] < 220


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "margin"), [({"num_proposals": 5}, 10.0), ({"num_accepted": 1}, 3.0)], ids=["proposals5", "accepted1"]
)
def test_the_issues_settings(mode, margin):
    """The issue's two settings (chunk 5: a pilot of 3 candidates), 20,000 calls pooled, as row 22. Before the fix
    the raw mean was off by z = +6.4 in both; the cut statistic gives p = 4e-11 and 5e-11 for that rule, 0.32 and 1.0
    now. The raw mean is still off by z = +2.7 and +3.1 (p = 0.002, 0.0006): the rows lack on average 3.4 % and
    1.7 % of the target's mass, cut by envelopes that a pilot of 3 candidates set too small (in 5.7 % and 3.2 %
    of the calls) — the bias the module docstring of rsft.acceptance.density describes."""
    x, M = pooled(DensityRatio, 5, seeds=20_000, margin=margin, **mode)
    assert cut_pvalue(x, M) > ALPHA
    x, M = pooled(PilotJudgedAgainstItself, 5, seeds=20_000, margin=margin, **mode)
    assert cut_pvalue(x, M) < ALPHA
