"""The flow model's spline resolution, and the default job's result (issue 16: the first picture)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rsft.models.flow import FlowModel
from rsft.targets import grid25
from rsft.train import train

#: The default job's target (density_grid25): 25 Gaussians of std 0.2 at spacing 2. Its entropy is
#: log 25 + log(2 pi e 0.2²) (the components overlap by less than 1e-10 of their mass).
GRID_STD = 0.2
GRID_ENTROPY = math.log(25) + 1 + math.log(2 * math.pi) + 2 * math.log(GRID_STD)


def test_bins_set_the_spline_resolution():
    few, many = FlowModel(dim=2, bins=8), FlowModel(dim=2, bins=16)
    # Each spline coordinate carries 3 * bins - 1 parameters (widths, heights, inner derivatives).
    sizes = [sum(p.numel() for p in m.flow.parameters()) for m in (few, many)]
    assert sizes[1] > sizes[0]
    spline = many.flow.transform.transforms[0]
    assert spline.hyper[-1].out_features == 2 * (3 * 16 - 1)


def test_bad_bins_name_the_key():
    with pytest.raises(ValueError, match="model.net.bins"):
        FlowModel(dim=2, bins=1)


def test_grid_entropy_constant_is_the_monte_carlo_entropy():
    target = grid25(spacing=2.0, std=GRID_STD)
    x = target.sample(200_000, torch.Generator().manual_seed(0))
    # -E log p over 200k samples: std error about 0.003 nats; 0.02 is over 6 standard errors.
    assert abs(-target.log_prob(x).mean().item() - GRID_ENTROPY) < 0.02


@pytest.mark.slow
def test_default_job_ends_within_005_nats_of_the_grid_entropy(run_config, tmp_path):
    """rsft-train as shipped (seed 0): val NLL within 0.05 nats of the target's entropy (about 60 s)."""
    train(run_config("logger=none", "plot=false"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["val/nll"] < GRID_ENTROPY + 0.05
