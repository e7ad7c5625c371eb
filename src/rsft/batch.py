"""The batch: what proposals draw, acceptance rules judge, and models train on.

A batch is a ``dict[str, Tensor]`` whose tensors share their leading size (one row per candidate).
Density proposals put the candidate in ``x`` and its log-density in ``log_q``; other proposals (dataset
rows, language-model completions) carry whatever fields their acceptance rules and models need.
"""

from __future__ import annotations

from typing import Any

import torch

Batch = dict[str, torch.Tensor]

#: The one key of the placeholder batch of a skipped round (``sampler.on_empty=skip`` with nothing to
#: train on). Lightning ends the whole fit when an epoch has no training batch, so a skipped round
#: gets one batch that the models' ``training_step`` recognise and pass over (no loss, no step): the
#: epoch still validates and the next round samples again.
SKIPPED_ROUND = "rsft_skipped_round"


def is_skipped_round(batch: Batch) -> bool:
    return SKIPPED_ROUND in batch


def skipped_round_batch(device: torch.device | str) -> Batch:
    """The placeholder batch of a skipped round (see :data:`SKIPPED_ROUND`)."""
    return {SKIPPED_ROUND: torch.ones(1, device=device)}


def num_rows(batch: Batch) -> int:
    """Rows in ``batch`` (0 for an empty dict)."""
    return next(iter(batch.values())).shape[0] if batch else 0


def training_rows(data: Any) -> Batch:
    """The training rows of ``data``: a dict of tensors, or an object with a ``train`` dict (a split)."""
    rows = getattr(data, "train", data)
    if not isinstance(rows, dict) or not rows or not all(torch.is_tensor(v) for v in rows.values()):
        raise TypeError(f"proposal=dataset needs a dict of tensors (or a split with .train), got {type(data).__name__}")
    sizes = {k: v.shape[0] for k, v in rows.items()}
    if len(set(sizes.values())) != 1 or 0 in sizes.values():
        raise ValueError(f"proposal=dataset needs non-empty fields of one length, got sizes {sizes}")
    return rows


def require_methods(model: Any, methods: tuple[str, ...], *, who: str, fix: str) -> None:
    """The check every ``bind(model)`` makes: ``model`` has ``methods``, or a TypeError saying which config
    (``who``, e.g. ``proposal=model``) needs what and how to fix it."""
    for method in methods:
        if not hasattr(model, method):
            raise TypeError(f"{who} needs a model with {method}(); {type(model).__name__} has none: {fix}")
