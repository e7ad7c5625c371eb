"""``model=tiny_gpt``: a small decoder-only transformer over characters that trains on a CPU in minutes.

Pre-norm blocks, learned positions, tied input/output embeddings, and a KV cache for sampling written in
place (:class:`~rsft.models.kv_cache.StaticKVCache`; ``use_cache=False`` recomputes the prefix every
step; the benchmark compares the two).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from rsft.models.causal_lm import CausalLM, ContextWindowError
from rsft.models.kv_cache import StaticKVCache, attend, cached_attention_mask
from rsft.models.tokenizer import DEFAULT_ALPHABET, CharTokenizer


class SelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache: StaticKVCache | None, layer: int):
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_head, c // self.n_head).permute(2, 0, 3, 1, 4)
        shared = None
        if cache is not None:  # attend to the cached columns and this step's, written in place
            k, v = cache.write(layer, k, v)
            shared = cache.shared_part(layer)
        p = self.dropout if self.training else 0.0
        if mask is None:  # one causal block from position 0 (training)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        elif shared is None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        elif p == 0.0:  # a prefix every row shares, held once (mask: its columns first)
            y = attend(q, k, v, mask[..., cache.shared :], 1 / math.sqrt(c // self.n_head), shared)
        else:  # sampling with dropout (a model in training mode): the shared columns repeated per row
            k = torch.cat([shared[0].expand(b, *shared[0].shape), k], 2)
            v = torch.cat([shared[1].expand(b, *shared[1].shape), v], 2)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.attn = SelfAttention(n_embd, n_head, dropout)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd), nn.Dropout(dropout)
        )

    def forward(self, x, mask, cache, layer):
        x = x + self.attn(self.ln1(x), mask, cache, layer)
        return x + self.mlp(self.ln2(x))


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
    ) -> tuple[torch.Tensor, StaticKVCache | None]:
        b, t = ids.shape
        if int(positions.max()) >= self.max_seq_len:
            raise ContextWindowError(
                f"position {int(positions.max())} is outside the context window "
                f"model.net.max_seq_len={self.max_seq_len}"
            )
        if use_cache and cache is None:
            n_head = self.blocks[0].attn.n_head
            cache = StaticKVCache(
                len(self.blocks),
                b,
                n_head,
                self.max_seq_len,
                self.tok_emb.embedding_dim // n_head,
                self.tok_emb.weight.dtype,
                ids.device,
            )
        past = 0 if cache is None else cache.length
        mask = None if key_mask is None else cached_attention_mask(key_mask, past, t)
        x = self.drop(self.tok_emb(ids) + self.pos_emb(positions))
        for i, block in enumerate(self.blocks):
            x = block(x, mask, cache if use_cache else None, i)
        if not use_cache:
            return self.head(self.ln_f(x)), None
        cache.advance(t)
        return self.head(self.ln_f(x)), cache
