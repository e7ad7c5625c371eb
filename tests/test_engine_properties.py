"""Property-based tests of the engine (hypothesis): invariants that must hold for any settings."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats
from torch import distributions as D

from rsft import AcceptAll, Ball, DensityRatio, DistributionProposal, Region, rejection_sample
from rsft.proposals.distribution import gaussian

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

rules = st.sampled_from(["beta", "ball", "all"])


def setup(rule: str):
    if rule == "beta":
        return DistributionProposal(D.Uniform(0.0, 1.0)), DensityRatio(D.Beta(2.0, 5.0))
    if rule == "ball":
        return gaussian(dim=3), Region(Ball(1.2))
    return gaussian(dim=2), AcceptAll()


@SETTINGS
@given(rule=rules, num=st.integers(1, 1000), chunk=st.integers(1, 5000), seed=st.integers(0, 2**31))
def test_exact_count_and_consistent_figures(rule, num, chunk, seed):
    res = rejection_sample(*setup(rule), num_accepted=num, chunk_size=chunk, seed=seed)
    rows = {v.shape[0] for v in res.batch.values()}
    assert rows == {num}
    s = res.stats
    assert s["accepted"] == num <= s["proposals"] <= s["proposals_drawn"]
    assert s["acceptance_rate"] == pytest.approx(s["accepted"] / s["proposals"])
    assert s["chunks"] == math.ceil(s["proposals_drawn"] / chunk)


@SETTINGS
@given(rule=rules, n=st.integers(1, 4000), chunk=st.integers(1, 5000), seed=st.integers(0, 2**31))
def test_num_proposals_mode_figures(rule, n, chunk, seed):
    res = rejection_sample(*setup(rule), num_proposals=n, chunk_size=chunk, seed=seed)
    assert res.stats["proposals_drawn"] == n == res.stats["proposals"]
    assert next(iter(res.batch.values())).shape[0] == res.stats["accepted"] <= n


@SETTINGS
@given(rule=rules, num=st.integers(1, 2000), chunk=st.integers(1, 3000), seed=st.integers(0, 2**31))
def test_same_seed_same_output_and_no_duplicated_rows(rule, num, chunk, seed):
    a = rejection_sample(*setup(rule), num_accepted=num, chunk_size=chunk, seed=seed).batch
    b = rejection_sample(*setup(rule), num_accepted=num, chunk_size=chunk, seed=seed).batch
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A multivariate continuous proposal does not repeat a candidate (in float32, 1-D draws can: a
    # uniform has only 2^24 values), so an accepted row may not appear twice.
    x = a["x"].reshape(num, -1)
    if x.shape[1] > 1:
        assert torch.unique(x, dim=0).shape[0] == num


def test_any_chunk_size_gives_the_same_distribution():
    # Two-sample KS between small chunks and one big chunk; false-failure rate 1e-6 per pair.
    samples = {
        chunk: rejection_sample(*setup("beta"), num_accepted=3_000, chunk_size=chunk, seed=chunk).batch["x"].numpy()
        for chunk in (7, 97, 65_536)
    }
    for chunk in (7, 97):
        assert stats.ks_2samp(samples[chunk], samples[65_536]).pvalue > 1e-6
