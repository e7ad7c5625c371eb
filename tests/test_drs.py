"""DRS (acceptance=drs) on hand-made batches, the mode-coverage metrics against a hand-computed
example, and the DRS experiment end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rsft.acceptance.drs import DiscriminatorRejection, drs_log_accept
from rsft.metrics.modes import mode_coverage
from rsft.targets import grid25
from rsft.train import train


class LogitIsFirstCoordinate:
    """A stand-in model whose discriminator logit is x[:, 0]: batches are hand-made logits."""

    def discriminator_logit(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


def batch(*logits: float) -> dict[str, torch.Tensor]:
    return {"x": torch.tensor([[v, 0.0] for v in logits])}


def bound_rule(**kwargs) -> DiscriminatorRejection:
    rule = DiscriminatorRejection(**kwargs)
    rule.bind(LogitIsFirstCoordinate())
    return rule


def test_drs_hand_computed_batch():
    # max logit 0, ε = 1e-8: F̂ = D̃ − log(1 − e^{D̃ − ε}) = [−log(1e-8), −1 − log(1 − e⁻¹), −2 − log(1 − e⁻²)]
    # = [18.4207, −0.5413, −1.8546]; γ = 50th percentile = −0.5413; σ(F̂ − γ) = [≈1, 0.5, σ(−1.3133) = 0.2120].
    rule = bound_rule(epsilon=1e-8, gamma_percentile=50.0)
    prob = rule.log_accept_prob(batch(0.0, -1.0, -2.0)).exp()
    assert prob.tolist() == pytest.approx([1.0, 0.5, 0.21199], abs=1e-4)
    assert rule.stats()["rule_gamma_mean"] == pytest.approx(-1 - math.log(1 - math.exp(-1)), abs=1e-6)
    assert rule.stats()["rule_max_logit"] == 0.0


def test_drs_is_monotone_in_the_logit():
    rule = bound_rule(gamma_percentile=80.0)
    logits = torch.linspace(-6, 3, 501)
    prob = rule.log_accept_prob({"x": torch.stack([logits.flip(0), torch.zeros(501)], 1)}).exp().flip(0)
    assert bool((prob.diff() >= 0).all()) and prob[-1] > 0.999 and prob[0] < 1e-3


def test_drs_running_max_is_kept_across_chunks_and_reset_by_start():
    rule = bound_rule(gamma_percentile=50.0)
    rule.start()
    rule.log_accept_prob(batch(0.0, 1.0, 2.0))
    # A later chunk below the maximum is judged against the maximum of everything seen (2), not its own (0.5).
    second = rule.log_accept_prob(batch(-1.0, 0.5, 0.0))
    expected, _ = drs_log_accept(torch.tensor([-1.0, 0.5, 0.0]), 2.0, rule.epsilon, 50.0)
    assert torch.allclose(second.double(), expected, atol=1e-6)
    alone, _ = drs_log_accept(torch.tensor([-1.0, 0.5, 0.0]), 0.5, rule.epsilon, 50.0)
    assert not torch.allclose(second.double(), alone, atol=1e-3)
    assert rule.stats()["rule_max_logit"] == 2.0
    rule.log_accept_prob(batch(5.0, 0.0))
    assert rule.stats()["rule_max_logit"] == 5.0
    rule.start()
    rule.log_accept_prob(batch(-3.0, -4.0))
    assert rule.stats()["rule_max_logit"] == -3.0


@pytest.mark.parametrize("percentile", [10.0, 50.0, 90.0])
def test_drs_gamma_puts_the_percentile_at_one_half(percentile):
    # γ is the percentile of F̂ in the chunk, so the candidates above it have σ(F) > 1/2, those below < 1/2.
    rule = bound_rule(gamma_percentile=percentile)
    logits = torch.linspace(-5, 0, 1001)
    prob = rule.log_accept_prob({"x": torch.stack([logits, torch.zeros(1001)], 1)}).exp()
    above = float((prob > 0.5).float().mean())
    assert above == pytest.approx(1 - percentile / 100, abs=2e-3)


def test_drs_errors_name_the_fix():
    with pytest.raises(ValueError, match="gamma_percentile"):
        DiscriminatorRejection(gamma_percentile=120)
    with pytest.raises(TypeError, match="model=gan"):
        DiscriminatorRejection().bind(object())
    with pytest.raises(RuntimeError, match="bind"):
        DiscriminatorRejection().log_accept_prob(batch(0.0))


def test_mode_coverage_hand_computed():
    means = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    x = torch.tensor([[0.3, 0.0], [0.0, 0.4], [2.1, 0.1], [1.0, 0.0], [5.0, 5.0]], dtype=torch.float64)
    # std 0.1, 4 std = 0.4: rows 0, 1 (distance exactly 0.4 counts) and 2 are high quality: 60 %;
    # modes 0 and 1 are recovered, mode 2 is not; residuals 0.3, 0, 0, 0.4, 0.1, 0.1: mean 0.15,
    # mean square 0.045, std √(0.045 − 0.0225) = 0.15.
    figures = mode_coverage(x, means, std=0.1)
    assert figures == pytest.approx({"hq_percent": 60.0, "recovered_modes": 2.0, "hq_std": 0.15})


def test_mode_coverage_of_exact_samples():
    # 10,000 exact grid samples: P(r > 4σ) = e⁻⁸ in 2-D, so about 3 of 10,000 miss (≥ 20 misses has
    # probability < 1e-9); the std estimate has relative s.e. ≈ 1/√(2·2·10⁴) = 0.5 %, allowed 5 %.
    target = grid25(spacing=2.0, std=0.05)
    x = target.sample(10_000, torch.Generator().manual_seed(0))
    figures = mode_coverage(x, target.means, target.std)
    assert figures["hq_percent"] >= 99.8 and figures["recovered_modes"] == 25
    assert figures["hq_std"] == pytest.approx(0.05, rel=0.05)


def test_mode_coverage_rejects_bad_input():
    with pytest.raises(ValueError, match="samples"):
        mode_coverage(torch.zeros(3, 3), torch.zeros(2, 2), 0.1)
    with pytest.raises(ValueError, match="at least one"):
        mode_coverage(torch.zeros(0, 2), torch.zeros(2, 2), 0.1)


def test_drs_experiment_end_to_end(run_config, tmp_path):
    cfg = run_config("experiment=drs_gan", "debug=fast", "model.pretrain.steps=50", "plot=false")
    train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in (
        "modes/hq_percent",
        "modes/recovered_modes",
        "modes/hq_std",
        "modes/proposals_total",
        "sampling/rule_max_logit",
    ):
        assert key in metrics, key
    assert 0 < metrics["sampling/acceptance_rate"] < 1
    # Two epochs of 1,000 accepted each: everything drawn is counted.
    assert metrics["modes/proposals_total"] >= 2000
