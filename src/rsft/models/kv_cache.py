"""The key/value cache that sampling keeps per row, attention over it, and the row operations generation
needs.

:class:`StaticKVCache` holds every layer's keys and values in tensors preallocated for the whole context
window and written in place by column (no concatenation per generated token). Its columns are shared by
all rows: column ``c`` holds the ``c``-th token of every row's (left-padded) sequence, and a key mask says
which are real. The first columns can be held once for all rows (:meth:`StaticKVCache.share_prefix`:
a prompt prefix every row has, such as a chat template's system turn); :func:`attend` then reads them
once per layer and step for all rows instead of once per row.

:func:`repeat_rows` and :func:`keep_rows` are what :meth:`rsft.models.causal_lm.CausalLM.generate` does to
a cache between steps: expand a prompt's cache to its k samples (so the prompt is read once, not k times)
and drop the rows that have finished. They accept this cache, a Hugging Face ``Cache`` (its
``batch_repeat_interleave`` / ``batch_select_indices``, which this cache also has), and the legacy
nested tuples of tensors (batch first).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F


class StaticKVCache:
    """Keys and values ``[rows, heads, capacity, head_dim]`` per layer, after the ``shared`` columns held
    once for all rows; ``length`` columns are written in all (the shared ones included)."""

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
        self.shared = 0
        self.shared_keys: list[torch.Tensor] = []  # [heads, shared, head_dim] per layer
        self.shared_values: list[torch.Tensor] = []

    @property
    def rows(self) -> int:
        return self.keys[0].shape[0]

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``keys``/``values`` ``[rows, heads, t, head_dim]`` after the written columns of ``layer`` and
        return that layer's per-row keys and values so far (views, no copy; the shared columns are not in
        them). Call :meth:`advance` once all layers have written the step."""
        t = keys.shape[2]
        start = self.length - self.shared
        if self.length + t > self.capacity:
            raise ValueError(f"the cache holds {self.capacity} columns; {self.length + t} were asked for")
        self.keys[layer][:, :, start : start + t] = keys
        self.values[layer][:, :, start : start + t] = values
        return self.keys[layer][:, :, : start + t], self.values[layer][:, :, : start + t]

    def advance(self, t: int) -> None:
        self.length += int(t)

    def shared_part(self, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return (self.shared_keys[layer], self.shared_values[layer]) if self.shared else None

    def share_prefix(self, rows: int) -> None:
        """Hold the columns written so far by this one-row cache once for ``rows`` rows from now on."""
        if self.rows != 1 or self.shared:
            raise ValueError("only the prefix of a one-row cache can be shared")
        self.shared = self.length
        self.shared_keys = [k[0, :, : self.shared].clone() for k in self.keys]
        self.shared_values = [v[0, :, : self.shared].clone() for v in self.values]
        shape = (rows, self.keys[0].shape[1], self.capacity - self.shared, self.keys[0].shape[3])
        self.keys = [k.new_empty(shape) for k in self.keys]
        self.values = [v.new_empty(shape) for v in self.values]

    # The names Hugging Face's Cache uses for the same operations, so generate() treats both alike.
    def batch_repeat_interleave(self, repeats: int) -> None:
        end = self.length - self.shared  # the columns after them are written later, row by row
        for tensors in (self.keys, self.values):
            for layer, t in enumerate(tensors):
                repeated = t.new_empty((t.shape[0] * repeats, *t.shape[1:]))
                repeated[:, :, :end] = t[:, :, :end].repeat_interleave(repeats, 0)
                tensors[layer] = repeated

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        # In place, written columns only: the kept rows move to the front of the same tensors (a fresh
        # cache of this size would be new pages from the system, slower to touch than the copy itself).
        m, end = len(indices), self.length - self.shared
        for tensors in (self.keys, self.values):
            for layer, t in enumerate(tensors):
                t[:m, :, :end] = t[:, :, :end].index_select(0, indices)
                tensors[layer] = t[:m]


def attend(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    shared: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Softmax attention of ``q`` ``[n, heads, queries, head_dim]`` over each row's ``keys``/``values``
    ``[n, heads, S, head_dim]`` (``mask`` ``[n, 1, queries or 1, S]``, True where a query sees a key) and,
    if given, over ``shared`` keys/values ``[heads, C, head_dim]`` that every row holds and every query
    sees. The shared part is one matrix product per head for all rows: its columns are read once."""
    if shared is None:
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=scale)
    n, heads, queries, dim = q.shape
    shared_keys, shared_values = shared
    flat = q.transpose(0, 1).reshape(heads, n * queries, dim)
    first = torch.bmm(flat, shared_keys.transpose(1, 2)).mul_(scale)  # [heads, n·queries, C]
    first = first.view(heads, n, queries, -1).transpose(0, 1)
    second = torch.matmul(q, keys.transpose(-1, -2)).mul_(scale)  # [n, heads, queries, S]
    if mask is not None:
        second = second.masked_fill_(~mask, float("-inf"))
    top = torch.maximum(first.amax(-1, keepdim=True), second.amax(-1, keepdim=True))
    first, second = (first - top).exp_(), (second - top).exp_()
    total = first.sum(-1, keepdim=True) + second.sum(-1, keepdim=True)
    flat = first.transpose(0, 1).reshape(heads, n * queries, -1)
    out = torch.bmm(flat, shared_values).view(heads, n, queries, dim).transpose(0, 1)
    return out.add_(torch.matmul(second, values)).div_(total)


def _map_rows(cache: Any, on_tensor: Any, method: str, argument: Any) -> Any:
    if isinstance(cache, torch.Tensor):
        return on_tensor(cache)
    if isinstance(cache, (list, tuple)):
        return type(cache)(_map_rows(c, on_tensor, method, argument) for c in cache)
    if hasattr(cache, method):  # in place
        getattr(cache, method)(argument)
        return cache
    raise TypeError(f"cannot change the rows of a {type(cache).__name__} cache (it has no {method})")


def repeat_rows(cache: Any, repeats: int) -> Any:
    """The cache with every row repeated ``repeats`` times in place (row i becomes rows i·r … i·r + r − 1)."""
    if repeats == 1:
        return cache
    return _map_rows(cache, lambda t: t.repeat_interleave(repeats, 0), "batch_repeat_interleave", repeats)


def keep_rows(cache: Any, rows: torch.Tensor) -> Any:
    """The cache of ``rows`` only (indices into its current rows, in that order)."""
    return _map_rows(cache, lambda t: t.index_select(0, rows), "batch_select_indices", rows)


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
