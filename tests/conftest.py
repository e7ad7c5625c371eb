"""Shared test helpers: compose configs as rsft-train would and run them into a temporary run dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


def compose_run(overrides: list[str], run_dir: Path):
    """The config ``rsft-train <overrides>`` would run, writing into ``run_dir``."""
    from rsft.run.config import compose

    return compose([*overrides, f"paths.output_dir={run_dir}"])


@pytest.fixture
def run_config(tmp_path):
    def make(*overrides: str, run_dir: Path | None = None):
        return compose_run(list(overrides), run_dir or tmp_path / "run")

    return make


def byte_bpe_tokenizer(texts: list[str], vocab_size: int, eos: str, pad: str, extra_special: tuple[str, ...] = ()):
    """A tiny byte-level BPE tokenizer trained on ``texts`` (byte-level: decoding gives back exactly the
    text), wrapped as a transformers fast tokenizer: what the HF model tests use instead of a download."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    bpe = tokenizers.ByteLevelBPETokenizer()
    specials = list(dict.fromkeys([eos, pad, *extra_special]))
    bpe.train_from_iterator(texts * 20, vocab_size=vocab_size, min_frequency=1, special_tokens=specials)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=eos, pad_token=pad)


def shared_and_expanded(model, prompts: list[str], k: int, tokens: torch.Tensor):
    """Logits of the first two generated positions, (a) from generate()'s prefill (each prompt read once,
    a shared prefix once for all, caches expanded) and (b) from every row read on its own (prompts
    repeat_interleaved k times before one prefill), feeding both the same next ``tokens``."""
    from rsft.models.causal_lm import prefill

    network = model.sampling_network()
    ids, mask = model.encode_prompts(prompts)
    pad = model.tokenizer.pad_id
    first_a, cache_a, mask_a = prefill(network, ids, mask, k, pad)
    rows_ids, rows_mask = ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)
    positions = (rows_mask.long().cumsum(1) - 1).clamp(min=0)
    first_b, cache_b = network.step_logits(rows_ids, positions, rows_mask, None, True)
    first_b = first_b[:, -1].clone()  # a network may reuse its logits buffer at the next call
    first_a = first_a.clone()
    step_positions = rows_mask.sum(1, keepdim=True)
    one = torch.ones((len(tokens), 1), dtype=torch.bool)
    second_a, _ = network.step_logits(tokens[:, None], step_positions, torch.cat([mask_a, one], 1), cache_a, True)
    second_a = second_a[:, -1].clone()
    second_b, _ = network.step_logits(tokens[:, None], step_positions, torch.cat([rows_mask, one], 1), cache_b, True)
    return (first_a, second_a), (first_b, second_b[:, -1])
