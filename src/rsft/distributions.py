"""Helpers that let any ``torch.distributions`` object take part in seeded, device-placed sampling.

``torch.distributions`` draws from the global RNG and keeps its parameters on the device they were
built on. rsft's engine owns an explicit ``torch.Generator`` per run and may run on a GPU, so these
helpers (a) rebuild a distribution with its parameters on another device and (b) draw from it with
randomness derived from an explicit generator, leaving the global RNG untouched.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import distributions as D


def move_distribution(dist: D.Distribution, device: torch.device | str) -> D.Distribution:
    """Return a copy of ``dist`` with every tensor it holds on ``device``.

    Works for any ``torch.distributions`` object, including nested ones (``Independent``,
    ``MixtureSameFamily``, ``TransformedDistribution`` and its transforms, ``Beta``'s inner Dirichlet)
    and already-computed lazy parameters, by copying the object graph and moving its tensors.
    Objects that are not torch distributions but have ``to(device)`` are moved with it.
    """
    device = torch.device(device)
    if not isinstance(dist, D.Distribution):
        if hasattr(dist, "to"):
            return dist.to(device)
        raise TypeError(
            f"cannot move {type(dist).__name__} to {device}: it is not a torch distribution and has no to()"
        )
    return _moved(dist, device)


def _moved(obj: object, device: torch.device) -> object:
    if torch.is_tensor(obj):
        return obj.to(device)
    if isinstance(obj, (D.Distribution, D.Transform)):
        clone = copy.copy(obj)
        clone.__dict__ = {key: _moved(value, device) for key, value in obj.__dict__.items()}
        if isinstance(obj, D.Transform):
            clone._inv = None  # a weak reference to the old inverse: let it be rebuilt on the new device
        return clone
    if isinstance(obj, (list, tuple)):
        return type(obj)(_moved(item, device) for item in obj)
    return obj


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
