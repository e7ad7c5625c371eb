"""An inference-only forward of a ``transformers`` llama model (SmolLM2, Llama, …) for sampling.

:meth:`rsft.models.causal_lm.CausalLM.generate` spends nearly all of a round in the model's forward, one
token at a time. Through ``transformers`` and ``peft`` each step also pays for what sampling does not
need: two extra small matrix products per LoRA-adapted layer, a cache that grows by concatenation,
keys and values copied once per query head (grouped-query attention under a mask), and a 4-D mask
built per step. :class:`LlamaDecoder` computes the same function with

- the LoRA adapters merged into the weights it multiplies by (``W + scale·B·A``, computed once per
  :meth:`~rsft.models.causal_lm.CausalLM.generate` call into new tensors: the model's own weights are
  never touched, so training and checkpoints see exactly what they saw before);
- the query/key/value and the gate/up projections fused into one matrix product each;
- keys and values written in place into a :class:`~rsft.models.kv_cache.StaticKVCache`;
- grouped-query attention without copies: a key/value head's query heads are its queries.

It reads the model's modules (weights, the norms' epsilon, the rotary embedding, so every RoPE variant
``transformers`` implements is used as is) and refuses, returning None from :meth:`LlamaDecoder.of`,
whatever it would not compute exactly the same way: another architecture, biases, an activation other
than SiLU, LoRA variants (DoRA, LoRA biases), dropout that is active. Results equal the
``transformers`` forward's up to float rounding (tests/test_hf_lm.py pins it).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from rsft.models.kv_cache import StaticKVCache, attend, cached_attention_mask


def effective_weight(module: nn.Module, training: bool) -> torch.Tensor | None:
    """The matrix a bias-free linear layer applies, its active LoRA adapters merged; None if it is not one."""
    if type(module) is nn.Linear:
        return module.weight if module.bias is None else None
    base = getattr(module, "base_layer", None)
    if type(base) is not nn.Linear or base.bias is not None or not hasattr(module, "get_delta_weight"):
        return None
    if module.disable_adapters:
        return None if module.merged else base.weight
    if module.merged:  # peft already added the adapters into the base weight
        return base.weight
    weight = base.weight
    for name in module.active_adapters:
        if name not in module.lora_A:
            continue
        if name in getattr(module, "lora_variant", {}) or getattr(module, "use_dora", {}).get(name):
            return None  # DoRA and other variants do not merge into a plain matrix here
        if getattr(module, "lora_bias", {}).get(name):
            return None
        dropout = module.lora_dropout[name]
        if training and isinstance(dropout, nn.Dropout) and dropout.p > 0:
            return None
        weight = weight + module.get_delta_weight(name)
    return weight


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class LlamaDecoder:
    """``step_logits`` of a llama ``transformers`` model (see the module docstring), for sampling only."""

    def __init__(self, base: Any, layers: list[dict[str, Any]], head: torch.Tensor, capacity: int):
        config = base.config
        self.embed = base.model.embed_tokens.weight.detach()
        self.rotary = base.model.rotary_emb
        self.final_norm = (base.model.norm.weight.detach(), base.model.norm.variance_epsilon)
        self.layers = layers
        self.head = head
        self.n_head = int(config.num_attention_heads)
        self.n_kv = int(getattr(config, "num_key_value_heads", None) or self.n_head)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self.n_head)
        self.scale = self.head_dim**-0.5
        self.capacity = int(capacity)
        self._logits: torch.Tensor | None = None  # reused across steps: see step_logits

    @classmethod
    @torch.no_grad()
    def of(cls, hf: Any, capacity: int) -> LlamaDecoder | None:
        """The decoder for ``hf`` (a ``transformers`` model, possibly ``peft``-wrapped), or None when ``hf`` is
        not a llama model it computes exactly (then sample with the ``transformers`` forward)."""
        base = hf.get_base_model() if hasattr(hf, "get_base_model") else hf
        config = getattr(base, "config", None)
        training = bool(hf.training)
        if (
            getattr(config, "model_type", None) != "llama"
            or getattr(config, "hidden_act", None) != "silu"
            or getattr(config, "attention_bias", False)
            or getattr(config, "mlp_bias", False)
            or getattr(config, "pretraining_tp", 1) != 1
            or (training and getattr(config, "attention_dropout", 0.0) > 0)
            or type(getattr(base.model, "embed_tokens", None)) is not nn.Embedding
            or not hasattr(base.model, "rotary_emb")
        ):
            return None
        layers = []
        for layer in base.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            weights = {
                name: effective_weight(module, training)
                for name, module in (
                    ("q", attn.q_proj),
                    ("k", attn.k_proj),
                    ("v", attn.v_proj),
                    ("o", attn.o_proj),
                    ("gate", mlp.gate_proj),
                    ("up", mlp.up_proj),
                    ("down", mlp.down_proj),
                )
            }
            if any(w is None for w in weights.values()):
                return None
            layers.append(
                {
                    "qkv": torch.cat([weights["q"], weights["k"], weights["v"]]),
                    "o": weights["o"].detach(),
                    "gate_up": torch.cat([weights["gate"], weights["up"]]),
                    "down": weights["down"].detach(),
                    "norm1": (layer.input_layernorm.weight.detach(), layer.input_layernorm.variance_epsilon),
                    "norm2": (
                        layer.post_attention_layernorm.weight.detach(),
                        layer.post_attention_layernorm.variance_epsilon,
                    ),
                }
            )
        head = effective_weight(base.lm_head, training)
        return None if head is None else cls(base, layers, head.detach(), capacity)

    @staticmethod
    def _norm(x: torch.Tensor, norm: tuple[torch.Tensor, float]) -> torch.Tensor:
        weight, eps = norm
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def _attend(
        self,
        q: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor,
        shared: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        # q [n, H, t, D] against keys/values [n, KV, S, D]: query head h reads key/value head h // (H / KV),
        # so each key/value head attends for its H / KV query heads × t queries at once, keys not copied.
        n, _, t, d = q.shape
        group = self.n_head // self.n_kv
        q = q.reshape(n, self.n_kv, group * t, d)
        if t > 1:
            mask = mask[:, :, None].expand(n, 1, group, t, mask.shape[-1]).reshape(n, 1, group * t, -1)
        return attend(q, keys, values, mask, self.scale, shared).reshape(n, self.n_head, t, d)

    @torch.no_grad()
    def step_logits(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        key_mask: torch.Tensor | None,
        cache: StaticKVCache | None,
        use_cache: bool,
    ) -> tuple[torch.Tensor, StaticKVCache]:
        """Logits ``[n, 1, V]`` of the last position, as :meth:`rsft.models.causal_lm.CausalLM.step_logits`
        (valid until the next call)."""
        n, t = ids.shape
        if cache is None:
            cache = StaticKVCache(
                len(self.layers), n, self.n_kv, self.capacity, self.head_dim, self.embed.dtype, ids.device
            )
        past = cache.length
        if key_mask is None:  # one causal block of real tokens
            key_mask = torch.ones((n, past + t), dtype=torch.bool, device=ids.device)
        mask = cached_attention_mask(key_mask, past, t)[..., cache.shared :]  # the per-row columns
        x = F.embedding(ids, self.embed)
        cos, sin = self.rotary(x, positions)
        cos, sin = cos[:, None], sin[:, None]
        q_width, kv_width = self.n_head * self.head_dim, self.n_kv * self.head_dim
        for i, layer in enumerate(self.layers):
            qkv = F.linear(self._norm(x, layer["norm1"]), layer["qkv"])
            q, k, v = qkv.split([q_width, kv_width, kv_width], dim=-1)
            q = q.view(n, t, self.n_head, self.head_dim).transpose(1, 2)
            k = k.view(n, t, self.n_kv, self.head_dim).transpose(1, 2)
            v = v.view(n, t, self.n_kv, self.head_dim).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            keys, values = cache.write(i, k, v)
            y = self._attend(q, keys, values, mask, cache.shared_part(i))
            x = x + F.linear(y.transpose(1, 2).reshape(n, t, q_width), layer["o"])
            gate, up = F.linear(self._norm(x, layer["norm2"]), layer["gate_up"]).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, layer["down"])
        cache.advance(t)
        # The logits [n, V] go to one buffer reused by every step (valid until the next call): a fresh
        # tensor of that size would be new pages from the system at every step.
        if self._logits is None or self._logits.shape[0] < n:
            self._logits = torch.empty((n, self.head.shape[0]), dtype=x.dtype, device=x.device)
        logits = torch.mm(self._norm(x[:, -1], self.final_norm), self.head.t(), out=self._logits[:n])
        return logits[:, None], cache
