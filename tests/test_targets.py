"""Density targets: normalised log-densities, exact samples that match them, clear errors."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from rsft.targets import Banana, Funnel, make_target

ALPHA = 1e-6  # false-failure rate of each KS test below (p-values are uniform under the null)


@pytest.mark.parametrize(
    "name, half_width", [("grid25", 6.0), ("ring8", 4.0), ("banana", 14.0), ("two_moons", 3.0), ("normal", 7.0)]
)
def test_2d_targets_integrate_to_one(name, half_width):
    target = make_target(name, dim=2)
    n = 401
    ticks = torch.linspace(-half_width, half_width, n, dtype=torch.float64)
    gx, gy = torch.meshgrid(ticks, ticks, indexing="xy")
    pts = torch.stack([gx.flatten(), gy.flatten()], 1)
    cell = (ticks[1] - ticks[0]) ** 2
    total = float(
        torch.cat([target.log_prob(chunk.float()).double().exp() for chunk in pts.split(100_000)]).sum() * cell
    )
    assert total == pytest.approx(1.0, abs=0.01), total


@pytest.mark.parametrize("name", ["grid25", "ring8", "two_moons", "banana", "funnel", "normal"])
def test_exact_samples_have_the_right_shape_and_are_seeded(name):
    target = make_target(name, dim=2 if name in ("grid25", "ring8", "two_moons") else 4)
    a = target.sample(100, torch.Generator().manual_seed(0))
    b = target.sample(100, torch.Generator().manual_seed(0))
    assert a.shape == (100, target.dim) and torch.equal(a, b)
    assert torch.isfinite(target.log_prob(a)).all()


def test_banana_samples_untwist_to_a_gaussian():
    target = Banana(dim=2, curvature=0.1, scale1=3.0)
    x = target.sample(20_000, torch.Generator().manual_seed(1))
    z = target._untwist(x)
    assert stats.kstest(z[:, 0].numpy() / 3.0, "norm").pvalue > ALPHA
    assert stats.kstest(z[:, 1].numpy(), "norm").pvalue > ALPHA


def test_funnel_neck_is_normal_with_scale_three():
    x = Funnel(dim=5).sample(20_000, torch.Generator().manual_seed(2))
    assert stats.kstest(x[:, 0].numpy() / 3.0, "norm").pvalue > ALPHA
    # given v, x_i / exp(v/2) is standard normal
    assert stats.kstest((x[:, 1] / torch.exp(x[:, 0] / 2)).numpy(), "norm").pvalue > ALPHA


def test_funnel_log_prob_matches_its_definition():
    x = torch.tensor([[1.0, 0.5, -0.3]])
    v = 1.0
    expected = stats.norm(0, 3).logpdf(v) + stats.norm(0, math.exp(v / 2)).logpdf([0.5, -0.3]).sum()
    assert float(Funnel(dim=3).log_prob(x)) == pytest.approx(expected, rel=1e-5)


def test_unknown_target_and_wrong_dim_have_clear_errors():
    with pytest.raises(ValueError, match="unknown density target 'moon'.*choose one of"):
        make_target("moon")
    with pytest.raises(ValueError, match="set task.dim=2"):
        make_target("grid25", dim=3)
    with pytest.raises(ValueError, match="task.dim"):
        make_target("grid25").log_prob(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="bad parameters"):
        make_target("grid25", sigma=0.1)
