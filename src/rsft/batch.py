"""The batch: what proposals draw, acceptance rules judge, and models train on.

A batch is a ``dict[str, Tensor]`` whose tensors share their leading size (one row per candidate).
Density proposals put the candidate in ``x`` and its log-density in ``log_q``; other proposals (dataset
rows, language-model completions) carry whatever fields their acceptance rules and models need. The
fields that cross from one component to another are declared once, in :data:`FIELDS` (what each means,
its dtype and shape, who writes it); :func:`field` reads one with an error that names the reader.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Field:
    """One batch field that proposals, tasks, acceptance rules and models agree on."""

    name: str
    meaning: str
    layout: str  # dtype and shape per batch of n rows
    written_by: str  # the proposals (and tasks) that put it in a batch


#: The batch fields rsft's own components agree on (README, "Concepts"). A component may add fields of its
#: own; these are the ones that cross from one component to another. Read them with :func:`field`.
FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field(
            "x",
            "the candidate itself (a point; a row's features)",
            "float, (n, *event_shape)",
            "density proposals (gaussian, student_t, uniform, model), generator, dataset",
        ),
        Field(
            "log_q",
            "log-density of the candidate under the proposal",
            "float64 or float32, (n,)",
            "density proposals (gaussian, student_t, uniform, model), policy (the sampling distribution)",
        ),
        Field("y", "label of a row, 1 = the favourable outcome", "int64 in {0, 1}, (n,)", "dataset (task=decisions)"),
        Field(
            "s",
            "group of a row: the sensitive attribute (0 = unprivileged, 1 = privileged, or a group id)",
            "int64, (n,)",
            "dataset (task=decisions)",
        ),
        Field("index", "position of the row in the training split", "int64, (n,)", "dataset"),
        Field("prompt_id", "the problem a completion answers", "int64, (n,)", "policy"),
        Field(
            "group",
            "the prompt group of a sample within its round (k consecutive rows; -1: a gold row)",
            "int64, (n,)",
            "policy",
        ),
        Field(
            "tokens", "prompt + completion + eos, right-padded: the training row", "int64, (n, max_seq_len)", "policy"
        ),
        Field("loss_mask", "true on the completion and its eos", "bool, (n, max_seq_len)", "policy"),
        Field("length", "generated tokens (eos included)", "int64, (n,)", "policy"),
        Field("finished", "the completion ended with eos within max_new_tokens", "bool, (n,)", "policy"),
        Field(
            "log_prob", "log-probability of the completion under the model at temperature 1", "float64, (n,)", "policy"
        ),
        Field(
            "reward",
            "the task's score of a completion (0 for an unfinished one): its verifier's, or a reward model's",
            "float32, (n,)",
            "policy, from the task's verifier or reward model (task.reward_model)",
        ),
        Field(
            "correct", "the verifier's verdict on the final answer", "bool, (n,)", "policy, from the task's verifier"
        ),
        Field(
            "equations_ok", "every equation written is a valid step", "bool, (n,)", "policy, from the task's verifier"
        ),
        Field(
            "has_answer",
            "a final answer could be read from the completion",
            "bool, (n,)",
            "policy, from the task's verifier",
        ),
        Field("answer", "the final answer read from the completion", "int64, (n,)", "policy, from the task's verifier"),
        Field(
            "path_hash",
            "hash of the reasoning path (the equations, or the normalised text)",
            "int64, (n,)",
            "policy, from the task's verifier",
        ),
        Field("split", "which evaluation split a prompt belongs to", "int64, (n,)", "LM tasks' validation sets"),
    )
}


def field(batch: Batch, name: str, who: str, fix: str | None = None) -> torch.Tensor:
    """``batch[name]``, or a KeyError saying which component (``who``, e.g. ``acceptance=reweighing``) needs
    which field, what it means, which proposals write it, what the batch has instead, and ``fix``."""
    if name in batch:
        return batch[name]
    known = FIELDS.get(name)
    what = f" ({known.meaning}; {known.layout}; written by {known.written_by})" if known else ""
    hint = f": {fix}" if fix else ""
    raise KeyError(f"{who} needs the batch field {name!r}{what}, but the batch has {sorted(batch)}{hint}")


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
