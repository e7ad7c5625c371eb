"""The engine: counts, shapes, budgets, partial returns, determinism, devices, envelopes, bad input."""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import distributions as D

from rsft import (
    AcceptAll,
    AcceptanceBudgetError,
    Ball,
    DensityRatio,
    DistributionProposal,
    Interval,
    NonFiniteDensityError,
    Region,
    rejection_sample,
)
from rsft.proposals.base import Proposal
from rsft.proposals.distribution import gaussian


def beta_setup(log_M="auto"):
    return DistributionProposal(D.Uniform(0.0, 1.0)), DensityRatio(D.Beta(2.0, 5.0), log_M=log_M)


def test_issue_example_returns_exact_count_and_stats():
    proposal, acceptance = beta_setup()
    res = rejection_sample(proposal, acceptance, num_accepted=20_000, seed=0, device="cpu")
    assert res.batch["x"].shape == (20_000,)
    assert res.batch["log_q"].shape == (20_000,)
    for key in (
        "proposals",
        "accepted",
        "acceptance_rate",
        "log_M",
        "envelope_violations",
        "seconds",
        "proposals_per_s",
    ):
        assert key in res.stats, key
    assert res.stats["accepted"] == 20_000
    assert res.stats["acceptance_rate"] == pytest.approx(20_000 / res.stats["proposals"])
    # Beta(2,5) mode density 2.4576 over a uniform: rate = 1/M ≈ 1/(2.4576 × 1.2) ≈ 0.34
    assert 0.30 < res.stats["acceptance_rate"] < 0.38
    assert ((res.batch["x"] > 0) & (res.batch["x"] < 1)).all()


@pytest.mark.parametrize("chunk_size", [1, 7, 1000, 100_000])
def test_exact_count_for_any_chunk_size(chunk_size):
    proposal, acceptance = beta_setup()
    res = rejection_sample(proposal, acceptance, num_accepted=333, chunk_size=chunk_size, seed=1)
    assert res.batch["x"].shape == (333,)
    assert res.stats["accepted"] == 333
    assert res.stats["proposals"] <= res.stats["proposals_drawn"]


def test_event_shape_is_kept_for_multivariate_proposals():
    res = rejection_sample(gaussian(dim=3, scale=2.0), Region(Ball(2.0)), num_accepted=500, seed=0)
    assert res.batch["x"].shape == (500, 3)
    assert (res.batch["x"].norm(dim=1) < 2.0).all()
    assert res.stats["log_M"] == 0.0 and res.stats["envelope_violations"] == 0


def test_same_seed_same_samples_and_different_seed_different_samples():
    a = rejection_sample(*beta_setup(), num_accepted=1000, seed=7).batch["x"]
    b = rejection_sample(*beta_setup(), num_accepted=1000, seed=7).batch["x"]
    c = rejection_sample(*beta_setup(), num_accepted=1000, seed=8).batch["x"]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_explicit_generator_continues_its_stream():
    g = torch.Generator().manual_seed(3)
    first = rejection_sample(*beta_setup(), num_accepted=100, generator=g).batch["x"]
    second = rejection_sample(*beta_setup(), num_accepted=100, generator=g).batch["x"]
    assert not torch.equal(first, second)
    g2 = torch.Generator().manual_seed(3)
    assert torch.equal(first, rejection_sample(*beta_setup(), num_accepted=100, generator=g2).batch["x"])


def test_sampling_leaves_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    rejection_sample(*beta_setup(), num_accepted=100, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_budget_error_says_what_happened_and_what_to_change():
    proposal = gaussian(dim=2)
    with pytest.raises(AcceptanceBudgetError) as info:
        rejection_sample(
            proposal, Region(Ball(0.05)), num_accepted=10_000, max_proposals=50_000, fail_fast=False, seed=0
        )
    msg = str(info.value)
    assert "50,000 proposals drawn" in msg
    assert "of 10,000 accepted" in msg
    assert "observed acceptance rate" in msg
    assert "sampler.max_proposals=50,000" in msg
    assert "sampler.allow_partial=true" in msg
    assert info.value.stats["proposals_drawn"] == 50_000


def test_fail_fast_stops_before_the_budget_is_spent():
    proposal = gaussian(dim=2)
    with pytest.raises(AcceptanceBudgetError, match="stopped early") as info:
        rejection_sample(
            proposal, Region(Ball(0.01)), num_accepted=10_000, max_proposals=10_000_000, chunk_size=10_000, seed=0
        )
    assert info.value.stats["proposals_drawn"] < 1_000_000


def test_partial_returns_what_was_accepted_with_a_warning():
    proposal = gaussian(dim=2)
    with pytest.warns(UserWarning, match="allow_partial"):
        res = rejection_sample(
            proposal,
            Region(Ball(0.1)),
            num_accepted=10_000,
            max_proposals=20_000,
            allow_partial=True,
            fail_fast=False,
            seed=0,
        )
    n = res.stats["accepted"]
    assert 0 < n < 10_000
    assert res.batch["x"].shape == (n, 2)
    assert res.stats["proposals_drawn"] == 20_000


def test_partial_with_nothing_accepted_returns_empty_batch_of_the_right_shape():
    with pytest.warns(UserWarning):
        res = rejection_sample(
            gaussian(dim=4), Region(Ball(1e-3)), num_accepted=10, max_proposals=1000, allow_partial=True, seed=0
        )
    assert res.batch["x"].shape == (0, 4)


def test_seed_document_example_fails_fast_with_the_rate():
    # x ~ N(0, I_100), accept iff ||x|| < 1: P = P(chi2_100 < 1) ≈ 1.8e-80. Must not loop, must not crash on shapes.
    assert math.exp(Ball(1.0).log_probability_under_standard_normal(100)) == pytest.approx(1.8e-80, rel=0.05)
    start = time.perf_counter()
    with pytest.raises(AcceptanceBudgetError) as info:
        rejection_sample(gaussian(dim=100), Region(Ball(1.0)), num_accepted=20_000, seed=0)
    assert time.perf_counter() - start < 30
    msg = str(info.value)
    assert "0 accepted" in msg and "observed acceptance rate 0" in msg and "sampler.max_proposals" in msg


def test_num_proposals_mode_judges_exactly_that_many():
    proposal, acceptance = beta_setup()
    res = rejection_sample(proposal, acceptance, num_proposals=10_001, chunk_size=1000, seed=0)
    assert res.stats["proposals_drawn"] == 10_001
    assert res.batch["x"].shape[0] == res.stats["accepted"]
    assert res.stats["acceptance_rate"] == pytest.approx(res.stats["accepted"] / 10_001)


def test_accept_all_keeps_every_candidate():
    res = rejection_sample(gaussian(dim=2), AcceptAll(), num_accepted=100, chunk_size=30, seed=0)
    assert res.stats["proposals"] == 100 and res.stats["acceptance_rate"] == 1.0


def test_envelope_violations_are_counted_with_a_fixed_log_M():
    # Beta(2,5) peaks at 2.4576 > M = 1.5: every x with p(x) > 1.5 is a violation.
    proposal, acceptance = beta_setup(log_M=math.log(1.5))
    res = rejection_sample(proposal, acceptance, num_proposals=100_000, seed=0)
    # P(Beta(2,5) density > 1.5 | x ~ U(0,1)) = length of {x : 30 x (1-x)^4 > 1.5} = 0.4085 - 0.0656
    expected = 100_000 * 0.3429
    assert abs(res.stats["envelope_violations"] - expected) < 6 * math.sqrt(expected)
    assert res.stats["log_M"] == pytest.approx(math.log(1.5))


def test_auto_envelope_is_raised_and_counted_when_a_larger_ratio_appears():
    class Spiky:
        """Unnormalised target whose ratio is huge only on a tiny interval: the pilot chunk misses it."""

        def log_prob(self, x):
            return torch.where((x > 0.5) & (x < 0.5001), torch.full_like(x, 8.0), torch.zeros_like(x))

    res = rejection_sample(
        DistributionProposal(D.Uniform(0.0, 1.0)), DensityRatio(Spiky()), num_proposals=400_000, chunk_size=1000, seed=0
    )
    assert res.stats["envelope_violations"] >= 1
    assert res.stats["envelope_raises"] >= 1
    assert res.stats["log_M"] == pytest.approx(8.0 + math.log(1.2))


def test_cpu_device_argument_and_generator_device_mismatch():
    res = rejection_sample(*beta_setup(), num_accepted=10, device="cpu", seed=0)
    assert res.batch["x"].device.type == "cpu"
    with pytest.raises(ValueError, match="generator lives on"):
        rejection_sample(*beta_setup(), num_accepted=10, device="meta", generator=torch.Generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sampling_stays_on_the_gpu():
    res = rejection_sample(*beta_setup(), num_accepted=1000, device="cuda", seed=0)
    assert res.batch["x"].device.type == "cuda"


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -5])
def test_num_accepted_must_be_positive(value):
    with pytest.raises(ValueError, match="num_accepted must be a positive integer.*sampler.num_accepted"):
        rejection_sample(*beta_setup(), num_accepted=value)


@pytest.mark.parametrize("value", [0, -1, 2.5])
def test_chunk_size_must_be_positive(value):
    with pytest.raises(ValueError, match="chunk_size must be a positive integer.*sampler.chunk_size"):
        rejection_sample(*beta_setup(), num_accepted=10, chunk_size=value)


def test_exactly_one_of_num_accepted_and_num_proposals():
    with pytest.raises(ValueError, match="exactly one of num_accepted and num_proposals"):
        rejection_sample(*beta_setup(), num_accepted=10, num_proposals=10)
    with pytest.raises(ValueError, match="exactly one"):
        rejection_sample(*beta_setup())


@pytest.mark.parametrize("log_M", [math.inf, -math.inf, math.nan])
def test_log_M_must_be_finite(log_M):
    with pytest.raises(ValueError, match="acceptance.log_M must be finite"):
        DensityRatio(D.Beta(2.0, 5.0), log_M=log_M)


def test_log_M_string_other_than_auto():
    with pytest.raises(ValueError, match="'auto'"):
        DensityRatio(D.Beta(2.0, 5.0), log_M="big")


def test_event_shape_mismatch_is_named():
    target = D.Independent(D.Normal(torch.zeros(3), torch.ones(3)), 1)
    with pytest.raises(ValueError, match="disagree on the event shape"):
        rejection_sample(gaussian(dim=2), DensityRatio(target, log_M=1.0), num_accepted=10, seed=0)


def test_nan_log_density_names_the_target():
    class NaNTarget:
        def log_prob(self, x):
            return torch.where(x > 0.5, torch.full_like(x, math.nan), torch.zeros_like(x))

    with pytest.raises(NonFiniteDensityError, match="target log_prob is not finite"):
        rejection_sample(DistributionProposal(D.Uniform(0.0, 1.0)), DensityRatio(NaNTarget()), num_accepted=10, seed=0)


def test_nan_proposal_density_names_the_proposal():
    class BadProposal(Proposal):
        def sample(self, n, generator):
            x = torch.rand(n, generator=generator)
            return {"x": x, "log_q": torch.full_like(x, math.nan)}

    with pytest.raises(NonFiniteDensityError, match="proposal log_q is not finite"):
        rejection_sample(BadProposal(), DensityRatio(D.Beta(2.0, 5.0)), num_accepted=10, seed=0)


def test_density_ratio_needs_log_q():
    class NoDensity(Proposal):
        def sample(self, n, generator):
            return {"x": torch.rand(n, generator=generator)}

    with pytest.raises(KeyError, match="no 'log_q'"):
        rejection_sample(NoDensity(), DensityRatio(D.Beta(2.0, 5.0)), num_accepted=10, seed=0)


def test_ragged_proposal_batch_is_rejected():
    class Ragged(Proposal):
        def sample(self, n, generator):
            return {"x": torch.rand(n, generator=generator), "extra": torch.zeros(n + 1)}

    with pytest.raises(ValueError, match="'extra' has shape"):
        rejection_sample(Ragged(), AcceptAll(), num_accepted=10, seed=0)


def test_region_predicate_must_return_one_bool_per_row():
    with pytest.raises(ValueError, match="one bool per candidate"):
        rejection_sample(gaussian(dim=2), Region(lambda x: x.norm(dim=1)), num_accepted=10, seed=0)


def test_proposal_with_batch_shape_is_rejected_with_the_fix():
    with pytest.raises(ValueError, match="Independent"):
        DistributionProposal(D.Normal(torch.zeros(3), torch.ones(3)))


def test_interval_region():
    res = rejection_sample(gaussian(dim=2), Region(Interval(-0.5, 1.0)), num_accepted=200, seed=0)
    assert ((res.batch["x"] > -0.5) & (res.batch["x"] < 1.0)).all()
