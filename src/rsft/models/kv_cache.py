"""The key/value cache that sampling keeps per row, and the two row operations generation needs.

:class:`StaticKVCache` holds every layer's keys and values in tensors preallocated for the whole context
window and written in place by column (no concatenation per generated token). Its columns are shared by
all rows: column ``c`` holds the ``c``-th token of every row's (left-padded) sequence, and a key mask says
which are real.

:func:`repeat_rows` and :func:`keep_rows` are what :meth:`rsft.models.causal_lm.CausalLM.generate` does to
a cache between steps: expand a prompt's cache to its k samples (so the prompt is read once, not k times)
and drop the rows that have finished. They accept this cache, a Hugging Face ``Cache`` (its
``batch_repeat_interleave`` / ``batch_select_indices``, which this cache also has), and the legacy
nested tuples of tensors (batch first).
"""

from __future__ import annotations

from typing import Any

import torch


class StaticKVCache:
    """Keys and values ``[rows, heads, capacity, head_dim]`` per layer; ``length`` columns are written."""

    def __init__(
        self,
        layers: int,
        rows: int,
        heads: int,
        capacity: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ):
        shape = (rows, heads, capacity, head_dim)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.capacity = int(capacity)
        self.length = 0

    @property
    def rows(self) -> int:
        return self.keys[0].shape[0]

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``keys``/``values`` ``[rows, heads, t, head_dim]`` after the written columns of ``layer`` and
        return that layer's keys and values so far (views, no copy). Call :meth:`advance` once all layers
        have written the step."""
        t = keys.shape[2]
        end = self.length + t
        if end > self.capacity:
            raise ValueError(f"the cache holds {self.capacity} columns; {end} were asked for")
        self.keys[layer][:, :, self.length : end] = keys
        self.values[layer][:, :, self.length : end] = values
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, t: int) -> None:
        self.length += int(t)

    # The names Hugging Face's Cache uses for the same operations, so generate() treats both alike.
    def batch_repeat_interleave(self, repeats: int) -> None:
        self.keys = [k.repeat_interleave(repeats, 0) for k in self.keys]
        self.values = [v.repeat_interleave(repeats, 0) for v in self.values]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        # In place, written columns only: the kept rows move to the front of the same tensors (a fresh
        # cache of this size would be new pages from the system, slower to touch than the copy itself).
        m, end = len(indices), self.length
        for tensors in (self.keys, self.values):
            for layer, t in enumerate(tensors):
                t[:m, :, :end] = t[:, :, :end].index_select(0, indices)
                tensors[layer] = t[:m]


def repeat_rows(cache: Any, repeats: int) -> Any:
    """The cache with every row repeated ``repeats`` times in place (row i becomes rows i·r … i·r + r − 1)."""
    if repeats == 1:
        return cache
    if isinstance(cache, torch.Tensor):
        return cache.repeat_interleave(repeats, 0)
    if isinstance(cache, (list, tuple)):
        return type(cache)(repeat_rows(c, repeats) for c in cache)
    if hasattr(cache, "batch_repeat_interleave"):
        cache.batch_repeat_interleave(repeats)
        return cache
    raise TypeError(f"cannot repeat the rows of a {type(cache).__name__} cache")


def keep_rows(cache: Any, rows: torch.Tensor) -> Any:
    """The cache of ``rows`` only (indices into its current rows, in that order)."""
    if isinstance(cache, torch.Tensor):
        return cache.index_select(0, rows)
    if isinstance(cache, (list, tuple)):
        return type(cache)(keep_rows(c, rows) for c in cache)
    if hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(rows)
        return cache
    raise TypeError(f"cannot select rows of a {type(cache).__name__} cache")


def cached_attention_mask(key_mask: torch.Tensor, past: int, t: int) -> torch.Tensor:
    """Boolean attention mask ``[B, 1, t, past + t]`` for ``t`` queries after ``past`` cached columns.

    Query i (column past + i) sees the real keys (``key_mask`` ``[B, past + t]``) at or before its own
    column; it always sees itself, so the rows of left padding stay finite (their outputs are never used).
    """
    if t == 1 and bool(key_mask[:, -1].all()):  # one real new token: every earlier key precedes it
        return key_mask[:, None, None, :]
    q_idx = torch.arange(past, past + t, device=key_mask.device)[:, None]
    k_idx = torch.arange(past + t, device=key_mask.device)[None, :]
    return (((k_idx <= q_idx)[None] & key_mask[:, None, :]) | (k_idx == q_idx)[None])[:, None]
