"""A learned reward (``task.reward_model.path=DIR``): a sequence-classification model scores (question, reply).

Any local ``transformers`` ``AutoModelForSequenceClassification`` directory (model + tokenizer, saved with
``save_pretrained``), or ``package:<module>`` for one saved inside an installed Python package (found
without importing it, as ``model.net.path`` finds the policy). rsft never downloads weights.

How a (question, reply) pair is put to the model (``format``):

- ``chat``: the conversation ``[user: question, assistant: reply]`` rendered with the tokenizer's chat
  template (how TRL's reward models are trained); truncated from the left, so the reply's end is kept;
- ``pair``: the tokenizer's text pair ``(question, reply)`` (with its own separators, as BERT/DeBERTa-style
  reward models such as OpenAssistant's take them);
- ``auto``: ``chat`` when the tokenizer has a chat template, else ``pair``.

The model sees the question alone, not the policy's system prompt or few-shot examples: those instruct the
policy; the reward judges the reply to the question.

What the score is (``output``): ``probability`` (default), the model's probability that the reply is good,
in [0, 1] — sigmoid of the single logit of a one-label model, softmax of label 1 of a two-label model — so
rewards share the verifiers' range (an unfinished reply's reward is 0, the lowest, see ``proposal=policy``);
``logit``: the raw logit (one label) or the logit difference (two labels), unbounded.

Pairs are scored ``batch_size`` at a time, right-padded (the classifier reads the last real token), under
``torch.no_grad``, on the device of the batch being scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rsft.models.hf_causal_lm import PACKAGE_PREFIX, packaged_model_dir

FORMATS = ("auto", "chat", "pair")
OUTPUTS = ("probability", "logit")
KEY = "task.reward_model"


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as err:
        raise ImportError(f"{KEY}.path needs the 'transformers' package: pip install 'rsft[lm]'") from err
    return transformers


def reward_model_dir(path: str) -> Path:
    """The local directory of ``path`` (a directory, or ``package:<module>``) holding a saved model."""
    if path.startswith(PACKAGE_PREFIX):
        try:
            directory = packaged_model_dir(path[len(PACKAGE_PREFIX) :])
        except (ValueError, ImportError) as err:
            raise type(err)(str(err).replace("model.net.path", f"{KEY}.path")) from err
    else:
        directory = Path(path).expanduser()
        if not directory.is_dir():
            raise FileNotFoundError(
                f"{KEY}.path={path!r} does not exist (or is not a directory); give a local directory holding a "
                "saved AutoModelForSequenceClassification and its tokenizer — rsft never downloads weights"
            )
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(
            f"{KEY}.path={path!r}: {str(directory)!r} holds no saved transformers model (config.json); save the "
            "reward model and its tokenizer there with save_pretrained"
        )
    return directory


class RewardModel:
    """Scores (question, reply) pairs with a sequence-classification model (see the module docstring)."""

    def __init__(
        self,
        path: str,
        batch_size: int = 16,
        max_length: int = 512,
        format: str = "auto",
        output: str = "probability",
    ):
        for key, value in (("batch_size", batch_size), ("max_length", max_length)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{KEY}.{key} must be a positive integer, got {value!r}")
        if format not in FORMATS:
            raise ValueError(f"{KEY}.format must be one of {FORMATS}, got {format!r}")
        if output not in OUTPUTS:
            raise ValueError(f"{KEY}.output must be one of {OUTPUTS}, got {output!r}")
        transformers = _transformers()
        directory = reward_model_dir(path)
        self.path = path
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        self.model = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(directory), local_files_only=True
        ).eval()
        self.model.requires_grad_(False)
        self.num_labels = int(self.model.config.num_labels)
        if self.num_labels not in (1, 2):
            raise ValueError(
                f"{KEY}.path={path!r} has {self.num_labels} labels; a reward model has 1 (a score) or 2 "
                "(bad / good: label 1 is good)"
            )
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if format == "chat" and not has_template:
            raise ValueError(
                f"{KEY}.format=chat but the tokenizer at {KEY}.path={path!r} has no chat template; use "
                f"{KEY}.format=pair (or auto)"
            )
        self.format = format if format != "auto" else ("chat" if has_template else "pair")
        self.output = output
        self.batch_size, self.max_length = batch_size, max_length
        self._set_padding()

    def _set_padding(self) -> None:
        """Right padding with a pad token the model knows, so its classifier finds each row's last real token."""
        tokenizer, config = self.tokenizer, self.model.config
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token_id is None:
                raise ValueError(
                    f"the tokenizer at {KEY}.path={self.path!r} has neither a pad nor an eos token, so batches cannot "
                    "be padded; set tokenizer.pad_token before saving it"
                )
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        if getattr(config, "pad_token_id", None) is None:
            config.pad_token_id = tokenizer.pad_token_id

    def describe(self) -> dict[str, Any]:
        """What the run records about the reward model."""
        return {
            "path": self.path,
            "architecture": type(self.model).__name__,
            "num_labels": self.num_labels,
            "format": self.format,
            "output": self.output,
            "max_length": self.max_length,
        }

    def encode(self, questions: Sequence[str], replies: Sequence[str]) -> dict[str, torch.Tensor]:
        """The padded model inputs of (question, reply) pairs, formatted as :attr:`format` says."""
        tokenizer = self.tokenizer
        if self.format == "chat":
            texts = [
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": q}, {"role": "assistant", "content": r}], tokenize=False
                )
                for q, r in zip(questions, replies)
            ]
            tokenizer.truncation_side = "left"  # keep the end of the reply
            # The template already wrote any special tokens it wants.
            return tokenizer(
                texts,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                add_special_tokens=False,
                return_tensors="pt",
            )
        tokenizer.truncation_side = "right"
        return tokenizer(
            list(questions),
            list(replies),
            padding=True,
            truncation="longest_first",
            max_length=self.max_length,
            return_tensors="pt",
        )

    @torch.no_grad()
    def score(self, questions: Sequence[str], replies: Sequence[str], device: torch.device) -> torch.Tensor:
        """One float32 score per pair, on ``device``."""
        if len(questions) != len(replies):
            raise ValueError(f"the reward model got {len(questions)} questions but {len(replies)} replies")
        if next(self.model.parameters()).device != torch.device(device):
            self.model.to(device)
        out = []
        for start in range(0, len(replies), self.batch_size):
            stop = start + self.batch_size
            inputs = {k: v.to(device) for k, v in self.encode(questions[start:stop], replies[start:stop]).items()}
            logits = self.model(**inputs).logits.float()
            score = logits[:, 0] if self.num_labels == 1 else logits[:, 1] - logits[:, 0]
            out.append(torch.sigmoid(score) if self.output == "probability" else score)
        if not out:
            return torch.zeros(0, dtype=torch.float32, device=device)
        return torch.cat(out).to(torch.float32)
