"""``model=tiny_gpt``: a small decoder-only transformer over characters that trains on a CPU in minutes.

Pre-norm blocks, learned positions, tied input/output embeddings, and a KV cache for sampling
(``use_cache=False`` recomputes the prefix every step; the benchmark compares the two).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from rsft.models.causal_lm import CausalLM, ContextWindowError
from rsft.models.tokenizer import DEFAULT_ALPHABET, CharTokenizer

KVCache = list[tuple[torch.Tensor, torch.Tensor]]


class SelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, past: tuple[torch.Tensor, torch.Tensor] | None):
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_head, c // self.n_head).permute(2, 0, 3, 1, 4)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        p = self.dropout if self.training else 0.0
        if mask is None:  # one causal block from position 0 (training)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.proj(y.transpose(1, 2).reshape(b, t, c)), (k, v)


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.attn = SelfAttention(n_embd, n_head, dropout)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd), nn.Dropout(dropout)
        )

    def forward(self, x, mask, past):
        h, kv = self.attn(self.ln1(x), mask, past)
        x = x + h
        return x + self.mlp(self.ln2(x)), kv


class TinyGPT(CausalLM):
    """A character-level GPT (``n_layer`` × ``n_head`` × ``n_embd``) with a ``max_seq_len`` context."""

    def __init__(
        self,
        n_layer: int = 2,
        n_head: int = 4,
        n_embd: int = 64,
        max_seq_len: int = 48,
        dropout: float = 0.0,
        alphabet: str = DEFAULT_ALPHABET,
        **settings: Any,
    ):
        """``settings``: the shared language-model options of :class:`CausalLM` (lr, eval_k, …)."""
        super().__init__(max_seq_len=max_seq_len, **settings)
        if n_layer < 1 or n_head < 1 or n_embd < 1:
            raise ValueError(f"model.net needs n_layer, n_head, n_embd ≥ 1, got {n_layer}, {n_head}, {n_embd}")
        if n_embd % n_head:
            raise ValueError(f"model.net.n_embd={n_embd} must be a multiple of model.net.n_head={n_head}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.net.dropout must be in [0, 1), got {dropout}")
        self.save_hyperparameters(ignore=["task"])  # the task is the run's object, not a setting
        self.tokenizer = CharTokenizer(alphabet)
        self.tok_emb = nn.Embedding(self.tokenizer.vocab_size, n_embd)
        self.pos_emb = nn.Embedding(max_seq_len, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, self.tokenizer.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, 0.02)

    def step_logits(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        key_mask: torch.Tensor | None,
        cache: Any,
        use_cache: bool,
    ) -> tuple[torch.Tensor, KVCache | None]:
        b, t = ids.shape
        if int(positions.max()) >= self.max_seq_len:
            raise ContextWindowError(
                f"position {int(positions.max())} is outside the context window "
                f"model.net.max_seq_len={self.max_seq_len}"
            )
        past = 0 if cache is None else cache[0][0].shape[2]
        mask = None
        if key_mask is not None:
            # Query i (absolute index past + i) sees key j ≤ past + i if j is a real token; it always sees
            # itself, so the rows of left padding stay finite (their outputs are never used).
            q_idx = torch.arange(past, past + t, device=ids.device)[:, None]
            k_idx = torch.arange(past + t, device=ids.device)[None, :]
            mask = ((k_idx <= q_idx)[None] & key_mask[:, None, :]) | (k_idx == q_idx)[None]
            mask = mask[:, None]  # broadcast over heads
        x = self.drop(self.tok_emb(ids) + self.pos_emb(positions))
        new_cache: KVCache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, mask, None if cache is None else cache[i])
            new_cache.append(kv)
        logits = self.head(self.ln_f(x))
        return logits, (new_cache if use_cache else None)
