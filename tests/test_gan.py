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
