"""``model=hf_causal_lm``: any Hugging Face ``transformers`` causal LM, optionally with LoRA (``peft``).

Load a model and tokenizer from a local directory (``path``; rsft never downloads: files must be
there), or build one with random weights from a config (``config: {model_type: gpt2, n_layer: 2,
…}``), with rsft's character tokenizer unless ``tokenizer_path`` names a saved tokenizer. ``lora``
wraps the model with ``peft`` adapters so only they train. ``transformers`` and ``peft`` are the
optional extra ``lm`` (``pip install rsft[lm]``) and are imported only when this model is built.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from rsft.models.causal_lm import CausalLM
from rsft.models.tokenizer import DEFAULT_ALPHABET, CharTokenizer


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError as err:
        raise ImportError(
            f"model=hf_causal_lm needs the {module!r} package: pip install 'rsft[lm]' (transformers and peft)"
        ) from err


class HFTokenizer:
    """rsft's tokenizer protocol over a ``transformers`` tokenizer (no special tokens added on encode)."""

    def __init__(self, tokenizer: Any):
        if tokenizer.eos_token_id is None:
            raise ValueError(
                "the Hugging Face tokenizer has no eos token; set one (tokenizer.eos_token) before saving it"
            )
        self.inner = tokenizer
        self.eos_id = int(tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else self.eos_id
        self.bos_id = tokenizer.bos_token_id

    @property
    def vocab_size(self) -> int:
        return len(self.inner)

    def encode(self, text: str) -> list[int]:
        return list(self.inner.encode(text, add_special_tokens=False))

    def decode(self, ids: Any) -> str:
        ids = [int(i) for i in ids]
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self.inner.decode(ids, skip_special_tokens=True)


class HFCausalLM(CausalLM):
    """A ``transformers`` AutoModelForCausalLM fine-tuned on accepted completions."""

    def __init__(
        self,
        path: str | None = None,
        config: dict[str, Any] | None = None,
        tokenizer_path: str | None = None,
        alphabet: str = DEFAULT_ALPHABET,
        lora: dict[str, Any] | None = None,
        **settings: Any,
    ):
        """``settings``: the shared language-model options of :class:`CausalLM` (max_seq_len, lr, eval_k, …)."""
        super().__init__(**settings)
        if (path is None) == (config is None):
            raise ValueError(
                "model=hf_causal_lm needs exactly one of model.net.path (a local directory) and model.net.config"
            )
        self.save_hyperparameters()
        transformers = _require("transformers")
        if tokenizer_path is not None:
            self.tokenizer = HFTokenizer(
                transformers.AutoTokenizer.from_pretrained(
                    self._local(tokenizer_path, "tokenizer_path"), local_files_only=True
                )
            )
        elif path is not None:
            self.tokenizer = HFTokenizer(
                transformers.AutoTokenizer.from_pretrained(self._local(path, "path"), local_files_only=True)
            )
        else:
            self.tokenizer = CharTokenizer(alphabet)
        if path is not None:
            self.hf = transformers.AutoModelForCausalLM.from_pretrained(
                self._local(path, "path"), local_files_only=True
            )
        else:
            config = dict(config)
            model_type = config.pop("model_type", None)
            if model_type is None:
                raise ValueError("model.net.config needs a model_type (e.g. gpt2, llama)")
            config.setdefault("vocab_size", self.tokenizer.vocab_size)
            for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
                value = getattr(self.tokenizer, key.replace("_token", ""), None)
                if value is not None:
                    config.setdefault(key, value)
            self.hf = transformers.AutoModelForCausalLM.from_config(
                transformers.AutoConfig.for_model(model_type, **config)
            )
        if self.hf.get_input_embeddings().num_embeddings < self.tokenizer.vocab_size:
            raise ValueError(
                f"the tokenizer has {self.tokenizer.vocab_size} tokens but the model's embedding only "
                f"{self.hf.get_input_embeddings().num_embeddings}: use the tokenizer saved with the model"
            )
        if lora:
            peft = _require("peft")
            lora = dict(lora)
            settings = peft.LoraConfig(
                task_type="CAUSAL_LM",
                r=int(lora.pop("r", 8)),
                lora_alpha=float(lora.pop("alpha", 16)),
                lora_dropout=float(lora.pop("dropout", 0.0)),
                target_modules=lora.pop("target_modules", None),
            )
            if lora:
                raise ValueError(f"unknown model.net.lora keys {sorted(lora)}; use r, alpha, dropout, target_modules")
            self.hf = peft.get_peft_model(self.hf, settings)

    @staticmethod
    def _local(path: str, key: str) -> str:
        if not Path(path).is_dir():
            raise FileNotFoundError(
                f"model.net.{key}={path!r} does not exist (or is not a directory); give a local directory "
                "holding a saved transformers model/tokenizer — rsft never downloads weights"
            )
        return str(path)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if len(params) == len(list(self.parameters())):
            return super().configure_optimizers()
        # With LoRA most weights are frozen: give Adam only what trains.
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)

    def _cache_keyword(self) -> str:
        # transformers 5 renamed past_key_values to cache; accept both generations of the API.
        if not hasattr(self, "_cache_kw"):
            base = self.hf.get_base_model() if hasattr(self.hf, "get_base_model") else self.hf
            self._cache_kw = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        return self._cache_kw

    def step_logits(self, ids, positions, key_mask, cache, use_cache):
        attention = None if key_mask is None else key_mask.long()
        keyword = self._cache_keyword()
        out = self.hf(
            input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=use_cache, **{keyword: cache}
        )
        return out.logits, (getattr(out, keyword) if use_cache else None)
