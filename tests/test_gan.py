"""The GAN model and the generator proposal: pre-training, the calibration phase, reproducibility."""

from __future__ import annotations

import pytest
import torch

from rsft.models.gan import GANModel
from rsft.proposals.generator import GeneratorProposal, TargetSamples
from rsft.targets import grid25


def real_draw():
    return TargetSamples(grid25(spacing=2.0, std=0.05)).sample


def params(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_gan_smoke_training_moves_both_nets_then_calibrates_the_discriminator_alone():
    torch.manual_seed(0)
    gan = GANModel(dim=2, hidden=(32, 32), scale=2.0, lr=1e-3, calibration_fraction=0.5)
    g0, d0 = params(gan.generator_net).clone(), params(gan.discriminator_net).clone()
    losses = gan.pretrain(real_draw(), steps=40, batch_size=128, generator=torch.Generator().manual_seed(1))
    assert len(losses) == 40 and all(torch.isfinite(torch.tensor(losses)))
    g1, d1 = params(gan.generator_net).clone(), params(gan.discriminator_net).clone()
    assert not torch.equal(g0, g1) and not torch.equal(d0, d1)
    # Calibration only: the generator is fixed, the discriminator keeps learning.
    gan.calibration_fraction = 0.999
    gan.pretrain(real_draw(), steps=20, batch_size=128, generator=torch.Generator().manual_seed(2))
    assert torch.equal(params(gan.generator_net), g1)
    assert not torch.equal(params(gan.discriminator_net), d1)


def test_calibrated_discriminator_separates_real_from_generated():
    # An untrained generator is far from the grid: 150 calibration steps must teach the discriminator to
    # tell them apart (deterministic seeds; the margin is wide: chance would give 0.5).
    torch.manual_seed(0)
    gan = GANModel(dim=2, hidden=(32, 32), scale=2.0, lr=1e-3, calibration_fraction=0.999)
    gan.pretrain(real_draw(), steps=150, batch_size=256, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(4)
    real = real_draw()(2000, g)["x"]
    fake = gan.generate(2000, g)
    with torch.no_grad():
        accuracy = 0.5 * (
            (gan.discriminator_logit(real) > 0).float().mean() + (gan.discriminator_logit(fake) < 0).float().mean()
        )
    assert accuracy > 0.8


def test_generator_proposal_is_reproducible_and_checks_its_model():
    torch.manual_seed(0)
    gan = GANModel(dim=2, hidden=(16,))
    proposal = GeneratorProposal(real=grid25())
    with pytest.raises(RuntimeError, match="bind"):
        proposal.sample(4, torch.Generator())
    with pytest.raises(TypeError, match="model=gan"):
        proposal.bind(object())
    proposal.bind(gan)
    a = proposal.sample(100, torch.Generator().manual_seed(7))
    b = proposal.sample(100, torch.Generator().manual_seed(7))
    assert set(a) == {"x"} and a["x"].shape == (100, 2) and torch.equal(a["x"], b["x"])
    assert isinstance(proposal.pretraining_source(gan), TargetSamples)


def test_gan_rejects_bad_settings():
    with pytest.raises(ValueError, match="calibration_fraction"):
        GANModel(dim=2, calibration_fraction=1.0)
    with pytest.raises(ValueError, match="scale"):
        GANModel(dim=2, scale=0.0)
    with pytest.raises(TypeError, match="exact samples"):
        TargetSamples(object())


def test_r1_penalty_is_half_gamma_times_the_squared_gradient_norm_on_real_data():
    torch.manual_seed(0)
    gan = GANModel(dim=2, hidden=(16, 16), scale=2.0)
    real, fake = torch.randn(64, 2, dtype=torch.float64), torch.randn(64, 2, dtype=torch.float64)
    gan.double()
    penalty = gan._discriminator_loss(real, fake, 0.4) - gan._discriminator_loss(real, fake, 0.0)
    # The gradient of D̃ by central differences, independently of autograd.
    eps, grads = 1e-6, []
    for j in range(2):
        step = torch.zeros(2, dtype=torch.float64)
        step[j] = eps
        with torch.no_grad():
            grads.append((gan.discriminator_logit(real + step) - gan.discriminator_logit(real - step)) / (2 * eps))
    expected = 0.5 * 0.4 * torch.stack(grads, 1).pow(2).sum(1).mean()
    assert float(penalty) == pytest.approx(float(expected), rel=1e-6)


def test_r1_penalty_shapes_the_adversarial_steps_only():
    def discriminator_after(r1: float, calibration_fraction: float) -> torch.Tensor:
        torch.manual_seed(0)
        gan = GANModel(
            dim=2, hidden=(16,), scale=2.0, lr=1e-2, calibration_fraction=calibration_fraction, r1_penalty=r1
        )
        gan.pretrain(real_draw(), steps=20, batch_size=64, generator=torch.Generator().manual_seed(4))
        return params(gan.discriminator_net)

    # Only calibration steps (round(20 × 0.999) = 20): the plain cross-entropy, whose optimum DRS reads.
    assert torch.equal(discriminator_after(0.0, 0.999), discriminator_after(10.0, 0.999))
    # Adversarial steps: the penalty changes the discriminator.
    assert not torch.allclose(discriminator_after(0.0, 0.5), discriminator_after(10.0, 0.5))


def test_gan_rejects_bad_r1_and_lr_floor():
    with pytest.raises(ValueError, match="model.net.r1_penalty"):
        GANModel(dim=2, r1_penalty=-1.0)
    with pytest.raises(ValueError, match="model.net.lr_floor"):
        GANModel(dim=2, lr_floor=0.0)
