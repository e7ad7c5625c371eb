"""Calibrated goodness-of-fit tests: accepted samples follow the target exactly.

Every test draws with a fixed seed and fails when the p-value of a goodness-of-fit test falls below
ALPHA = 1e-6. Under a correct sampler the p-value is uniform on (0, 1), so each test's false-failure
rate is 1e-6 (for the seeds fixed here the outcome is deterministic; the rate is what any other seed
would risk). Each test is paired with a deliberately wrong sampler (envelope too small, biased
acceptance) that the same test must reject, so the tests have power, not only size.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import distributions as D

from rsft import DensityRatio, DistributionProposal, Interval, ProbabilisticAcceptance, Region, rejection_sample
from rsft.proposals.distribution import gaussian
from rsft.targets import GaussianMixture, grid25

ALPHA = 1e-6


def ks_pvalue(samples: torch.Tensor, cdf) -> float:
    return float(stats.kstest(samples.double().numpy(), cdf).pvalue)


def binned_homogeneity_pvalue(a: torch.Tensor, b: torch.Tensor, edges: np.ndarray) -> float:
    """χ² test that two 2-D samples come from one law (bins with too few counts are pooled)."""
    ha, _, _ = np.histogram2d(a[:, 0].numpy(), a[:, 1].numpy(), bins=[edges, edges])
    hb, _, _ = np.histogram2d(b[:, 0].numpy(), b[:, 1].numpy(), bins=[edges, edges])
    ha, hb = ha.ravel(), hb.ravel()
    # Everything outside the grid is one more bin.
    ha = np.append(ha, len(a) - ha.sum())
    hb = np.append(hb, len(b) - hb.sum())
    big = (ha + hb) >= 20
    table = np.vstack([np.append(ha[big], ha[~big].sum()), np.append(hb[big], hb[~big].sum())])
    table = table[:, table.sum(0) > 0]
    return float(stats.chi2_contingency(table, correction=False).pvalue)


# -- 1-D: Beta(2, 5) from a uniform proposal (the TFP check) ------------------------------------


def beta_samples(log_M, n=20_000, seed=0):
    res = rejection_sample(
        DistributionProposal(D.Uniform(0.0, 1.0)),
        DensityRatio(D.Beta(2.0, 5.0), log_M=log_M),
        num_accepted=n,
        seed=seed,
    )
    return res.batch["x"]


@pytest.mark.parametrize("log_M", ["auto", math.log(2.4576 * 1.01), math.log(5.0)])
def test_beta_from_uniform_is_exact(log_M):
    p = ks_pvalue(beta_samples(log_M), stats.beta(2, 5).cdf)
    assert p > ALPHA, p


@pytest.mark.filterwarnings("ignore:the envelope acceptance.log_M")  # the wrong sampler warns, as it should
def test_beta_test_rejects_an_envelope_that_is_too_small():
    p = ks_pvalue(beta_samples(math.log(1.0)), stats.beta(2, 5).cdf)  # true sup p/q is 2.4576
    assert p < ALPHA, p


# -- truncated normal via Region -------------------------------------------------------------


class HalfBiased(ProbabilisticAcceptance):
    """A wrong rule: inside the interval, accept negative x only half of the time."""

    def log_accept_prob(self, batch):
        x = batch["x"].squeeze(1)
        inside = (x > -1.0) & (x < 2.0)
        log_a = torch.where(inside, torch.zeros_like(x), torch.full_like(x, -math.inf))
        return torch.where(inside & (x < 0), torch.full_like(x, math.log(0.5)), log_a)


def truncated_samples(acceptance, n=20_000, seed=1):
    return rejection_sample(gaussian(dim=1, scale=1.0), acceptance, num_accepted=n, seed=seed).batch["x"].squeeze(1)


def test_truncated_normal_via_region_is_exact():
    p = ks_pvalue(truncated_samples(Region(Interval(-1.0, 2.0))), stats.truncnorm(-1.0, 2.0).cdf)
    assert p > ALPHA, p


def test_truncated_normal_test_rejects_a_biased_rule():
    p = ks_pvalue(truncated_samples(HalfBiased()), stats.truncnorm(-1.0, 2.0).cdf)
    assert p < ALPHA, p


# -- 2-D mixture via a wide Gaussian -----------------------------------------------------------


MIXTURE = GaussianMixture(torch.tensor([[-2.0, 0.0], [1.5, 1.5], [0.5, -2.0]]), std=0.6)
EDGES = np.linspace(-4, 4, 17)


def mixture_pvalue(log_M, seed=2):
    res = rejection_sample(
        gaussian(dim=2, scale=3.0), DensityRatio(MIXTURE, log_M=log_M), num_accepted=20_000, seed=seed
    )
    exact = MIXTURE.sample(20_000, torch.Generator().manual_seed(seed + 100))
    return binned_homogeneity_pvalue(res.batch["x"], exact, EDGES)


def test_2d_mixture_from_gaussian_is_exact():
    p = mixture_pvalue("auto")
    assert p > ALPHA, p


@pytest.mark.filterwarnings("ignore:the envelope acceptance.log_M")  # the wrong sampler warns, as it should
def test_2d_mixture_test_rejects_an_envelope_that_is_too_small():
    p = mixture_pvalue(math.log(2.0))  # the true sup of p/q is about 26
    assert p < ALPHA, p


def test_grid25_with_auto_envelope_is_exact():
    target = grid25(spacing=2.0, std=0.2)
    res = rejection_sample(gaussian(dim=2, scale=3.0), DensityRatio(target), num_accepted=20_000, seed=3)
    assert res.stats["envelope_violations"] == 0
    exact = target.sample(20_000, torch.Generator().manual_seed(99))
    p = binned_homogeneity_pvalue(res.batch["x"], exact, np.linspace(-5, 5, 21))
    assert p > ALPHA, p
