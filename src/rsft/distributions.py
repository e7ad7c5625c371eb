"""Helpers that let any ``torch.distributions`` object take part in seeded, device-placed sampling.

``torch.distributions`` draws from the global RNG and keeps its parameters on the device they were
built on. rsft's engine owns an explicit ``torch.Generator`` per run and may run on a GPU, so these
helpers (a) rebuild a distribution with its parameters on another device and (b) draw from it with
randomness derived from an explicit generator, leaving the global RNG untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import distributions as D


def move_distribution(dist: D.Distribution, device: torch.device | str) -> D.Distribution:
    """Return ``dist`` rebuilt with all tensor parameters on ``device``.

    Handles the parameterised distributions (``arg_constraints``), ``Independent``,
    ``MixtureSameFamily`` and ``TransformedDistribution`` with parameter-free transforms. Anything
    else must already live on ``device`` or provide a ``to(device)`` method.
    """
    device = torch.device(device)
    if hasattr(dist, "to") and not isinstance(dist, D.Distribution):
        return dist.to(device)
    if isinstance(dist, D.Independent):
        return D.Independent(move_distribution(dist.base_dist, device), dist.reinterpreted_batch_ndims)
    if isinstance(dist, D.MixtureSameFamily):
        return D.MixtureSameFamily(
            move_distribution(dist.mixture_distribution, device),
            move_distribution(dist.component_distribution, device),
        )
    if isinstance(dist, D.TransformedDistribution):
        return D.TransformedDistribution(move_distribution(dist.base_dist, device), dist.transforms)
    params = {}
    for name in dist.arg_constraints:
        # Distributions store several equivalent parameterisations lazily (probs/logits,
        # covariance/scale_tril); pass exactly one of each to the constructor.
        if name not in dist.__dict__:
            continue
        value = dist.__dict__[name]
        params[name] = value.to(device) if torch.is_tensor(value) else value
    if isinstance(dist, (D.Categorical, D.OneHotCategorical, D.Bernoulli, D.Binomial, D.Multinomial)):
        # keep only one of probs/logits
        if "logits" in params and "probs" in params:
            params.pop("probs")
    if isinstance(dist, D.MultivariateNormal):
        for redundant in ("covariance_matrix", "precision_matrix"):
            if "scale_tril" in params:
                params.pop(redundant, None)
    if isinstance(dist, D.Binomial) or isinstance(dist, D.Multinomial):
        params["total_count"] = dist.total_count
    try:
        return type(dist)(**params, validate_args=False)
    except TypeError as err:  # pragma: no cover - exotic distribution
        raise TypeError(
            f"cannot move {type(dist).__name__} to {device}: build it on that device directly "
            f"(rebuilding from its parameters {sorted(params)} failed: {err})"
        ) from err


@contextlib.contextmanager
def seeded_global_rng(generator: torch.Generator) -> Iterator[None]:
    """Run a block that uses the global RNG with a seed drawn from ``generator``.

    The global RNG state of the generator's device is saved and restored, so code outside the block
    sees no change. One seed is drawn per use: the block is reproducible from ``generator`` alone.
    """
    device = generator.device
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=device).item())
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        with torch.random.fork_rng(devices=[index]):
            torch.cuda.default_generators[index].manual_seed(seed)
            yield
    else:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            yield
