"""The frontier's targets (truncated funnel, many-well) and checks, and the frontier benchmark (issue 26).

Calibration: every goodness-of-fit assertion below is a Kolmogorov-Smirnov test against exact CDFs (per
coordinate, or along fixed random directions), Bonferroni-combined, at ALPHA = 1e-6 on a fixed seed: a
correct sampler fails one with probability ≤ 1e-6. Each has a power check, a deliberately wrong sampler
that must fail it (the wrong samplers differ from the target by a few per cent of mass, not grossly).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from scipy import integrate, stats

from benchmarks.onpolicy import (
    envelope_deficit,
    ess_fraction,
    frontier_table,
    joint_pvalue,
    marginal_pvalue,
)
from rsft.targets import Funnel, ManyWell, corners, double_well_log_density, make_target, twisted_gaussian

ALPHA = 1e-6


def well_integral(tilt: float, upper: float = math.inf) -> float:
    value, _ = integrate.quad(
        lambda v: math.exp(-(v**4) + 6 * v**2 + tilt * v - 9.5), -math.inf, upper, epsabs=0, epsrel=1e-12, limit=200
    )
    return value


def test_many_well_normaliser_and_marginal_cdf_are_the_numerical_integrals():
    # The normaliser (Simpson on 1e5 cells) and the CDF (cumulative trapezoid) against scipy's adaptive
    # quadrature. Mutations: Simpson's h/3 as h/2 (log Z off by log 1.5), or the CDF's trapezoid steps as
    # left Riemann sums (the CDF off by ~1e-4), fail it.
    target = ManyWell(dim=4)
    z = well_integral(0.5)
    assert target.log_norm_well == pytest.approx(math.log(z) + 9.5, abs=1e-9)
    points = torch.tensor([-2.5, -1.7, -0.4, 0.0, 0.3, 1.1, 1.73, 2.6], dtype=torch.float64)
    left, right = target.well_cdf(points)
    expected = torch.tensor([well_integral(0.5, float(p)) / z for p in points], dtype=torch.float64)
    assert torch.allclose(left, expected, atol=1e-8) and torch.allclose(right, 1 - expected, atol=1e-8)
    # the right well's share: about 0.84 (the tilt makes it ~5.6 times the left's)
    assert float(right[3]) == pytest.approx(0.844, abs=0.005)


def test_many_well_density_is_normalised_and_is_a_product_of_pairs():
    target = make_target("many_well", dim=2)
    ticks = torch.linspace(-4.0, 4.0, 801, dtype=torch.float64)
    gx, gy = torch.meshgrid(ticks, ticks, indexing="ij")
    grid = torch.stack([gx.flatten(), gy.flatten()], 1)
    cell = float(ticks[1] - ticks[0]) ** 2
    assert float(target.log_prob(grid).exp().sum() * cell) == pytest.approx(1.0, abs=1e-4)
    x = torch.tensor([[1.0, 0.3, -1.5, 2.0]], dtype=torch.float64)
    four = ManyWell(dim=4)
    pairs = make_target("many_well", dim=2).log_prob(x[:, :2]) + make_target("many_well", dim=2).log_prob(x[:, 2:])
    assert torch.allclose(four.log_prob(x), pairs)
    expected = double_well_log_density(x[:, 0]) - 0.5 * 0.3**2 - four.log_norm_well - 0.5 * math.log(2 * math.pi)
    assert torch.allclose(make_target("many_well", dim=2).log_prob(x[:, :2]), expected)


def test_many_well_cell_envelope_bounds_the_double_well():
    # The exact sampler rests on f(x) ≤ the bound of x's cell for every x (and the KS checks below catch gross
    # errors; a bound a few hundredths of a nat too loose or too tight is invisible to them). Mutation: the
    # bound without its slope term (the chord only) fails it where f is concave.
    target = ManyWell(dim=2)
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(2_000_000, generator=g, dtype=torch.float64) * 2 - 1) * target.HALF_WIDTH
    cell = ((x - target.grid[0]) / (target.grid[1] - target.grid[0])).floor().long().clamp(max=target.grid.numel() - 2)
    assert bool((double_well_log_density(x) <= target.cell_log_bound[cell]).all())


def test_many_well_exact_samples_pass_and_a_wrong_tilt_or_coupled_wells_fail():
    target = ManyWell(dim=8)
    x = target.sample(20_000, torch.Generator().manual_seed(0))
    assert marginal_pvalue(target, x) > ALPHA and joint_pvalue(target, x) > ALPHA
    # Power, marginals: tilt 0.4 instead of 0.5 moves about 4 % of each x1's mass to the left well.
    wrong = ManyWell(dim=8, tilt=0.4).sample(20_000, torch.Generator().manual_seed(0))
    assert marginal_pvalue(target, wrong) < ALPHA
    # Power, joint law: exact marginals, but every pair sits on the side pair 0 sits on (2 modes, not 16):
    # each later x1 is an exact draw of the double well conditioned on pair 0's sign.
    g = torch.Generator().manual_seed(1)
    pool = target.sample_well(200_000, g).float()
    right, left = pool[pool > 0], pool[pool <= 0]
    coupled = x.clone()
    on_right = coupled[:, 0] > 0
    for k in range(1, 4):
        coupled[on_right, 2 * k] = right[k * 20_000 : k * 20_000 + int(on_right.sum())]
        coupled[~on_right, 2 * k] = left[k * 5_000 : k * 5_000 + int((~on_right).sum())]
    assert marginal_pvalue(target, coupled) > ALPHA
    assert joint_pvalue(target, coupled) < ALPHA


def test_truncated_funnel_mass_density_and_exact_samples():
    # Mutation: v drawn as a normal clamped at v_min (mass piled on the floor) instead of by the truncated
    # normal's inverse CDF fails the exact-samples check.
    target = Funnel(dim=10, v_scale=3.0, v_min=-6.0)
    # the mass removed, exactly: P(v < −6) for v ~ N(0, 3²) = Φ(−2)
    assert target.truncated_mass() == pytest.approx(stats.norm.cdf(-2.0), rel=1e-13)
    assert Funnel(dim=10).truncated_mass() == 0.0
    # the v-marginal of the truncated density integrates to 1 over [v_min, ∞) (p(v, 0) · √(2π e^v) per x)
    two = Funnel(dim=2, v_scale=3.0, v_min=-6.0)

    def v_density(v: float) -> float:
        x = torch.tensor([[v, 0.0]], dtype=torch.float64)
        return math.exp(float(two.log_prob(x)) + 0.5 * math.log(2 * math.pi * math.exp(v)))

    total, _ = integrate.quad(v_density, -6.0, 40.0, epsabs=0, epsrel=1e-10, limit=200)
    assert total == pytest.approx(1.0, abs=1e-8)
    assert float(two.log_prob(torch.tensor([[-6.5, 0.0]]))) == -math.inf
    x = target.sample(50_000, torch.Generator().manual_seed(4))
    assert float(x[:, 0].min()) >= -6.0
    assert marginal_pvalue(target, x) > ALPHA and joint_pvalue(target, x) > ALPHA
    # Power: the untruncated funnel (2.3 % of its v below −6) and a neck of scale 3.3 instead of 3 both fail.
    untruncated = Funnel(dim=10).sample(50_000, torch.Generator().manual_seed(4))
    assert marginal_pvalue(target, untruncated) < ALPHA
    wider = Funnel(dim=10, v_scale=3.3, v_min=-6.0).sample(50_000, torch.Generator().manual_seed(4))
    assert marginal_pvalue(target, wider) < ALPHA


def test_bad_funnel_and_many_well_parameters_name_their_keys():
    with pytest.raises(ValueError, match="even task.dim"):
        make_target("many_well", dim=5)
    with pytest.raises(ValueError, match="task.target.tilt"):
        make_target("many_well", dim=4, tilt=3.0)
    with pytest.raises(ValueError, match="task.target.v_min"):
        make_target("funnel", dim=4, v_min=float("nan"))


def test_projections_see_a_corners_sampler_that_keeps_half_of_the_modes():
    # Keeping the 4 corners whose signs multiply to +1 leaves every coordinate's marginal exact (±5 equally
    # often) but not the joint law: the marginal test passes, the projections fail.
    target = corners(dim=8, corner_dims=3, separation=5.0)
    x = target.sample(40_000, torch.Generator().manual_seed(2))
    assert marginal_pvalue(target, x) > ALPHA and joint_pvalue(target, x) > ALPHA
    half = x.clone()
    odd = torch.sign(half[:, :3]).prod(1) < 0
    half[odd, 2] = -half[odd, 2]  # move each odd-parity row to the even-parity corner next to it
    assert marginal_pvalue(target, half) > ALPHA
    assert joint_pvalue(target, half) < ALPHA


def test_twisted_projections_are_exact_and_a_wrong_twist_fails_them():
    # Mutation: the Gaussian coordinates without dividing the first by σ₁ = 10 fail the exact samples.
    target = twisted_gaussian(dim=16, twist=0.1)
    x = target.sample(20_000, torch.Generator().manual_seed(5))
    assert joint_pvalue(target, x) > ALPHA
    wrong = twisted_gaussian(dim=16, twist=0.09).sample(20_000, torch.Generator().manual_seed(5))
    assert joint_pvalue(target, wrong) < ALPHA


def test_ess_and_envelope_deficit():
    # ESS: equal weights give 1, one weight among n gives 1/n. Deficit: M q ≥ p everywhere gives 0; with M q
    # = p/2 everywhere half of p's mass is missing: 1/2.
    assert ess_fraction(torch.zeros(10)) == pytest.approx(1.0)
    assert ess_fraction(torch.tensor([0.0] + [-1e4] * 9)) == pytest.approx(0.1)
    log_p = torch.zeros(100)
    assert envelope_deficit(log_p, torch.zeros(100), 0.0) == 0.0
    assert envelope_deficit(log_p, torch.zeros(100), -math.log(2)) == pytest.approx(0.5)


def test_frontier_quick_run_publishes_a_table_a_plot_and_per_seed_figures(tmp_path):
    """The --quick smoke run of the whole pipeline: fixed proposals, one on-policy seed per cell, the judge of
    the last round's proposal, the table and the plot."""
    from benchmarks.onpolicy import main

    results = main(["--quick", "--publish", "frontier_quick"], results_root=tmp_path)
    out = tmp_path / "frontier_quick"
    for name in ("report.md", "table.md", "frontier.png", "figures.json", "provenance.json", "results.json"):
        assert (out / name).is_file(), name
    table = (out / "table.md").read_text()
    assert "| twisted | 4 |" in table and "| manywell | 4 |" in table and "frontier.png" in table
    figures = json.loads((out / "figures.json").read_text())
    for cell in ("twisted d=4", "manywell d=4"):
        assert figures[f"{cell} :: fixed :: log_M"] > 0 and 0 < figures[f"{cell} :: student_t :: ess"] <= 1
        assert 0 < figures[f"{cell} :: seed 0 :: flow_ess"] <= 1
    assert frontier_table(results).count("\n") == 3  # header, rule, two rows


def test_frontier_subset_names_its_cells_and_refuses_others(capsys):
    from benchmarks.onpolicy import cells_of, parse_args

    args = parse_args(["--frontier", "--only", "twisted:8,16", "funnel"])
    assert cells_of(args) == [("twisted", 8), ("twisted", 16), ("funnel", 10), ("funnel", 32)]
    table = frontier_table({"targets": {}, "not_run": ["corners d=8"]})
    assert table.endswith("Not run in this artifact (`--only`): corners d=8.")
    for argv, message in [
        (["--frontier", "--only", "twisted:12"], "'twisted:12' is not a frontier cell"),
        (["--frontier", "--only", "twisted:x"], "integer dimensions"),
        (["--only", "twisted:8"], "add --frontier"),
    ]:
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert message in capsys.readouterr().err


def test_a_fixed_rate_that_underflows_to_zero_is_no_division():
    """The funnel's best fixed Gaussian has log M ≈ 5,000: its rate bound is 0.0 in float64 (the sweep crashed)."""
    from benchmarks.onpolicy import times_fixed

    assert times_fixed(0.1, 1e-12) == "1e+11×"
    assert "unboundedly" in times_fixed(0.1, 0.0)
